"""What every generation loop runs inside: the model's weights frozen for the loop's duration.

Decoding calls every weight at every step, with a handful of rows each. Two things are then
done once per loop instead of once per step: each linear layer's weight is reordered into the
GEMM's packed layout (kernels/gemm.py, `frozen_weights`), and the decoder's parameters are looked
up for the one-token steps (`Decoder.decoding`, kernels/decode_step.py). The weights must not
change inside the loop. A caller that runs many loops on one model (a translator's batches)
holds `generating(model)` around them all, so the packing happens once, not once per batch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

from torch import nn

from nanoformer.kernels.gemm import frozen_weights

Loop = TypeVar("Loop", bound=Callable)


@contextlib.contextmanager
def generating(model: nn.Module) -> Iterator[None]:
    """The model's weights frozen for every generation loop inside the block (see above). Nests."""
    with frozen_weights(), model.decoding():
        yield


def generation_loop(loop: Loop) -> Loop:
    """Decorate `loop(model, ...)` to run with the model's weights frozen (see above)."""

    @functools.wraps(loop)
    def run(model: nn.Module, *args, **kwargs):
        with generating(model):
            return loop(model, *args, **kwargs)

    return run  # type: ignore[return-value]
