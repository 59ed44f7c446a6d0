"""Translation commands (translate, average) and the translation branch of evaluate."""

from __future__ import annotations

import argparse

from nanoformer.errors import UserError


def evaluate_translation(args: argparse.Namespace, model, tokenizer) -> None:
    raise UserError(f"{args.checkpoint}: evaluating encoder-decoder models is not available yet")


def register(commands: argparse._SubParsersAction) -> None:
    """No commands yet."""
