"""Recipes: how each model family is trained end to end from a `RunConfig`.

A recipe turns the config into a tokenizer, a model, a batch source and a loss, and hands them
to the family-agnostic `Trainer`. One module per family.
"""

from __future__ import annotations

from pathlib import Path

from nanoformer.errors import UserError
from nanoformer.run_config import RunConfig
from nanoformer.training.contracts import FitResult

# Which model family each kind of data trains.
DATA_KIND_ARCH = {"lm": "decoder", "translation": "encoder-decoder", "mlm": "encoder", "classification": "encoder"}


def train(run: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          pause_after_s: float | None = None) -> FitResult:
    """Train what the config describes (its [data] kind); returns the trainer's result."""
    expected = DATA_KIND_ARCH[run.data_kind]
    if run.model.arch != expected:
        raise UserError(
            f"[data] kind {run.data_kind!r} trains arch {expected!r}, but [model] arch = {run.model.arch!r}; "
            "change one of them"
        )
    if run.train.rdrop and run.data_kind not in ("classification", "translation"):
        raise UserError(f"[train] rdrop = {run.train.rdrop}: R-Drop is for classifiers and translation "
                        f"([data] kind = 'classification' or 'translation'), not {run.data_kind!r}; remove it")
    if run.train.rdrop_from and run.data_kind != "translation":
        raise UserError(f"[train] rdrop_from = {run.train.rdrop_from}: a late start of R-Drop is for translation "
                        f"([data] kind = 'translation'), not {run.data_kind!r}; remove it")
    if run.size is not None:
        from nanoformer.recipes.budget import check_sizable

        check_sizable(run)
    if run.data_kind == "lm":
        from nanoformer.recipes.lm import train_lm

        return train_lm(run, run_dir, resume=resume, progress=progress, pause_after_s=pause_after_s)
    if run.data_kind == "translation":
        from nanoformer.recipes.translation import train_translation

        return train_translation(run, run_dir, resume=resume, progress=progress, pause_after_s=pause_after_s)
    if run.data_kind == "mlm":
        from nanoformer.recipes.mlm import train_mlm

        return train_mlm(run, run_dir, resume=resume, progress=progress, pause_after_s=pause_after_s)
    from nanoformer.recipes.classification import train_classifier

    return train_classifier(run, run_dir, resume=resume, progress=progress, pause_after_s=pause_after_s)
