"""The Python entry points of DESIGN.md: `load`, `from_hf`, `to_hf`.

`load` rebuilds any family from a checkpoint folder (config.json + model.safetensors +
tokenizer.json). Nothing is unpickled, so loading a checkpoint from elsewhere runs no code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nanoformer.config import ModelConfig
from nanoformer.errors import UserError
from nanoformer.models import build_model
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.checkpoint import load_model_state, read_config, resolve_checkpoint


def load_config(path: str | Path) -> ModelConfig:
    """The model config of a checkpoint (a run folder gives its best checkpoint's)."""
    data = read_config(path)
    try:
        return ModelConfig.from_dict(data["model"] if "model" in data else data)
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: config.json does not describe a nanoformer model ({error})") from None


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Tokenizer | None]:
    """(model in eval mode, tokenizer or None) from a checkpoint folder or a run folder (its best)."""
    folder = resolve_checkpoint(path)
    model = build_model(load_config(folder))
    load_model_state(folder, model)
    tokenizer = Tokenizer.load(folder / "tokenizer.json") if (folder / "tokenizer.json").is_file() else None
    return model.to(device).eval(), tokenizer


def from_hf(hf_model: nn.Module, **overrides) -> nn.Module:
    """Our model with the weights of a Hugging Face GPT-2, BERT (incl. sequence classification) or Marian model.

    overrides: config fields that do not change the weights, e.g. attention_impl="math".
    """
    from nanoformer.interop import from_hf as convert

    return convert(hf_model, **overrides)


def to_hf(model: nn.Module) -> nn.Module:
    """A Hugging Face model (GPT2LMHeadModel, BertForMaskedLM or BertForSequenceClassification,
    MarianMTModel) with our weights."""
    from nanoformer.interop import to_hf as convert

    return convert(model)


__all__ = ["load", "load_config", "from_hf", "to_hf", "resolve_checkpoint"]
