"""BERT-family commands (fill-mask, finetune, classify, embed) and the MLM branch of evaluate."""

from __future__ import annotations

import argparse

from nanoformer.errors import UserError


def evaluate_mlm(args: argparse.Namespace, model, tokenizer) -> None:
    raise UserError(f"{args.checkpoint}: evaluating encoder models is not available yet")


def register(commands: argparse._SubParsersAction) -> None:
    """No commands yet."""
