"""nanoformer: the Transformer from first principles.

    import nanoformer as nf
    model, tok = nf.load("runs/my-model")
"""

from nanoformer.api import load
from nanoformer.interop import from_hf, to_hf
from nanoformer.config import PRESETS, ModelConfig
from nanoformer.models import DecoderModel, EncoderModel, Seq2SeqTransformer, build_model

__version__ = "0.1.0"

__all__ = [
    "load", "from_hf", "to_hf", "ModelConfig", "PRESETS",
    "DecoderModel", "EncoderModel", "Seq2SeqTransformer", "build_model",
]
