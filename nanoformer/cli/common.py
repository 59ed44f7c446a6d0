"""Helpers shared by the command modules."""

from __future__ import annotations

from nanoformer.errors import UserError


def load_checkpoint(path: str, device: str = "cpu"):
    """(model, tokenizer) of a checkpoint or run folder; text commands need the tokenizer."""
    import nanoformer

    model, tokenizer = nanoformer.load(path, device=resolve_device(device))
    if tokenizer is None:
        raise UserError(f"{path}: the checkpoint has no tokenizer.json; text commands need one")
    return model, tokenizer


def resolve_device(name: str) -> str:
    from nanoformer.training.device import select_device

    return str(select_device(name))


def require_arch(model, arch: str, command: str, path: str) -> None:
    if model.config.arch != arch:
        raise UserError(f"{path}: `{command}` needs a model with arch {arch!r}, this checkpoint is {model.config.arch!r}")


DEVICES = ["auto", "cpu", "cuda", "mps"]
