"""What every generation loop runs inside: the model's weights frozen for the loop's duration.

Decoding calls every weight at every step, with a handful of rows each. Two things are then
done once per loop instead of once per step: each linear layer's weight is reordered into the
GEMM's packed layout (kernels/gemm.py, `frozen_weights`), and the decoder's parameters are looked
up for the one-token steps (`Decoder.decoding`, kernels/decode_step.py). The weights must not
change inside the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from nanoformer.kernels.gemm import frozen_weights

Loop = TypeVar("Loop", bound=Callable)


def generation_loop(loop: Loop) -> Loop:
    """Decorate `loop(model, ...)` to run with the model's weights frozen (see above)."""

    @functools.wraps(loop)
    def run(model: nn.Module, *args, **kwargs):
        with frozen_weights(), model.decoding():
            return loop(model, *args, **kwargs)

    return run  # type: ignore[return-value]
