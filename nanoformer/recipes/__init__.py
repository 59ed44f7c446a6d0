"""Recipes: how each model family is trained end to end from a `RunConfig`.

A recipe turns the config into a tokenizer, a model, a batch source and a loss, and hands them
to the family-agnostic `Trainer`. One module per family.
"""

from __future__ import annotations

from pathlib import Path

from nanoformer.errors import UserError
from nanoformer.run_config import RunConfig
from nanoformer.training.trainer import FitResult


def train(run: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> FitResult:
    """Train the family that `run.model.arch` names; returns the trainer's result."""
    if run.model.arch == "decoder":
        from nanoformer.recipes.lm import train_lm

        return train_lm(run, run_dir, resume=resume, progress=progress)
    raise UserError(
        f"[model] arch = {run.model.arch!r}: training this family from a config is not available yet; "
        "use arch = 'decoder' (GPT-style language model)"
    )
