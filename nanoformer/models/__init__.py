"""The three model families of the study note, all built from `nanoformer.layers`."""

from torch import nn

from nanoformer.config import ModelConfig
from nanoformer.models.decoder import DecoderModel
from nanoformer.models.encoder import EncoderModel
from nanoformer.models.seq2seq import Seq2SeqTransformer

MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "encoder-decoder": Seq2SeqTransformer,
    "encoder": EncoderModel,
    "decoder": DecoderModel,
}


def build_model(config: ModelConfig) -> nn.Module:
    """The model family that `config.arch` names, freshly initialised."""
    return MODEL_CLASSES[config.arch](config)


__all__ = ["DecoderModel", "EncoderModel", "Seq2SeqTransformer", "build_model", "MODEL_CLASSES"]
