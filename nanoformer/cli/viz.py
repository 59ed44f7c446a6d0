"""Look-inside commands: attention maps, positional-encoding plots, training curves."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """No commands yet."""
