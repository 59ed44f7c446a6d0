"""`nanoformer.load`: any checkpoint folder back as a ready model and its tokenizer.

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
from nanoformer.quantize import quantize as int8
from nanoformer.quantize import quantized_structure
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.checkpoint import TOKENIZER_FILE, load_model_state, read_config, resolve_checkpoint
from nanoformer.training.checksums import verify_files


def load_config(path: str | Path) -> ModelConfig:
    """The model config of a checkpoint (a run folder gives its best checkpoint's)."""
    data = read_config(path)
    try:
        return ModelConfig.from_dict(data["model"] if "model" in data else data)
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: config.json does not describe a nanoformer model ({error})") from None


def load(path: str | Path, device: str | torch.device = "cpu",
         quantize: str | None = None, verify: bool = True) -> tuple[nn.Module, Tokenizer | None]:
    """(model in eval mode, tokenizer or None) from a checkpoint folder or a run folder (its best).

    quantize="int8" gives the model int8 weights for inference (nanoformer/quantize.py); an int8
    checkpoint (`nanoformer quantize`) loads as one either way. verify=False skips the check of
    the files against the checksums saved with them.
    """
    if quantize not in (None, "int8"):
        raise UserError(f"quantize = {quantize!r}: use None or 'int8'")
    folder = resolve_checkpoint(path)
    config = load_config(folder)
    model = build_model(config)
    if config.quantization:
        quantized_structure(model)
    load_model_state(folder, model, verify=verify)
    if quantize == "int8":
        int8(model)
    tokenizer = None
    if (folder / TOKENIZER_FILE).is_file():
        if verify:
            verify_files(folder, [TOKENIZER_FILE])
        tokenizer = Tokenizer.load(folder / TOKENIZER_FILE)
    return model.to(device).eval(), tokenizer


__all__ = ["load", "load_config", "resolve_checkpoint"]
