"""Exchange weights with Hugging Face `transformers`: GPT-2, BERT and Marian.

    model = from_hf(hf_model)    # GPT2LMHeadModel -> DecoderModel, BertModel / BertForMaskedLM ->
                                 # EncoderModel, MarianMTModel -> Seq2SeqTransformer
    hf_model = to_hf(model)      # and back (an EncoderModel exports as BertForMaskedLM)

The converted model reproduces the original's outputs to float rounding (the tests check 1e-4),
and keeps its dtype, device and train/eval mode. Each family's module (`gpt2`, `bert`, `marian`)
also offers `config_from_hf` / `config_to_hf` and the renaming `rules` on their own.
`transformers` is imported only when a conversion runs.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nanoformer.errors import UserError
from nanoformer.interop import bert, gpt2, marian
from nanoformer.models import DecoderModel, EncoderModel, Seq2SeqTransformer

_FROM_HF = {name: module for module in (gpt2, bert, marian) for name in module.HF_CLASSES}
_TO_HF = {DecoderModel: gpt2, EncoderModel: bert, Seq2SeqTransformer: marian}


def from_hf(hf_model: nn.Module, **overrides: Any) -> nn.Module:
    """Our model with the weights of a Hugging Face GPT2LMHeadModel, BertModel, BertForMaskedLM or MarianMTModel.

    overrides: ModelConfig fields that do not change the weights, e.g. attention_impl="math".
    """
    for cls in type(hf_model).__mro__:
        if cls.__name__ in _FROM_HF:
            return _FROM_HF[cls.__name__].from_hf(hf_model, **overrides)
    raise UserError(
        f"from_hf does not convert {type(hf_model).__name__}; supported: {', '.join(_FROM_HF)}"
    )


def to_hf(model: nn.Module) -> nn.Module:
    """The Hugging Face model with our model's weights: GPT2LMHeadModel, BertForMaskedLM or MarianMTModel."""
    for cls, module in _TO_HF.items():
        if isinstance(model, cls):
            return module.to_hf(model)
    raise UserError(
        f"to_hf converts DecoderModel, EncoderModel and Seq2SeqTransformer, got {type(model).__name__}"
    )


__all__ = ["from_hf", "to_hf", "gpt2", "bert", "marian"]
