"""The trainer's interface: what it takes (a loss function, a batch source, a config) and what `fit` returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from torch import Tensor, nn

from nanoformer.errors import UserError

Batch = dict[str, Tensor]
LossFn = Callable[[nn.Module, Batch], Tensor]


class BatchSource(Protocol):
    """What the trainer needs from the data side.

    `state_dict` must return a snapshot (tensors and JSON values) of everything that decides the
    next training batches, e.g. a generator state and a position; `eval_batches` must yield the
    same batches every time it is called. Under DDP, give each rank its own sampling stream,
    e.g. by seeding with `seed + rank` (see `distributed.setup_distributed`).
    """

    def next_batch(self, split: str) -> Batch: ...

    def eval_batches(self, split: str) -> Iterable[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def tokens_per_batch(self, batch: Batch) -> int: ...  # optional if `tokens_per_batch=` is given


class ConfigLike(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class FitResult:
    """How `fit` ended. `stopped_by` is "max_steps", "max_time", "pause" (`fit(pause_after_s=)`)
    or "interrupt" (Ctrl-C)."""

    step: int
    tokens_seen: int
    best_val_loss: float | None
    stopped_by: str
    checkpoint: Path | None  # the resumable `last` checkpoint written at the end (rank 0 only)

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupt"


def check_batch_source(batches: Any, tokens_per_batch: Callable[[Batch], int] | None) -> Callable[[Batch], int]:
    """Refuse a source that lacks a method the trainer calls; returns the token counter to use."""
    for method in ("next_batch", "eval_batches", "state_dict", "load_state_dict"):
        if not callable(getattr(batches, method, None)):
            raise UserError(f"batch source {type(batches).__name__} has no {method}(); see training.contracts.BatchSource")
    count = tokens_per_batch or getattr(batches, "tokens_per_batch", None)
    if count is None:
        raise UserError(
            f"batch source {type(batches).__name__} has no tokens_per_batch(batch); add one or "
            "pass Trainer(..., tokens_per_batch=fn)"
        )
    return count
