"""What a resumable checkpoint holds besides the weights, and reading it back.

The optimiser's moments, the grad scaler, the run's counters and time, and each rank's RNG and
data position: with all of them restored, a resumed run computes the losses that one which never
stopped would have computed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanoformer.errors import UserError
from nanoformer.training.checkpoint import (
    load_model_state,
    read_trainer_state,
    recover_interrupted_write,
    resolve_checkpoint,
)

COUNTERS = ("step", "tokens_seen", "best_val_loss", "best_score", "last_val_loss")


def resumable_state(counters: dict[str, Any], best_metric: str, elapsed_s: float, world_size: int,
                    optimizer: torch.optim.Optimizer, scaler: Any, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The trainer state saved beside the weights (infinite bests are stored as None)."""
    def finite(value: Any) -> Any:
        return None if isinstance(value, float) and math.isinf(value) else value

    return {
        **{name: finite(value) for name, value in counters.items()},
        "schedule_step": counters["step"],  # schedules are functions of the step alone
        "best_metric": best_metric,
        "elapsed_s": elapsed_s,
        "world_size": world_size,
        "optimizer": optimizer.state_dict(),
        "grad_scaler": scaler.state_dict() if scaler else None,
        "ranks": ranks,
    }


def load_resumable(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any) -> tuple[Path, dict[str, Any]]:
    """Load weights, optimiser and scaler from the resumable checkpoint at `path`; returns (its folder, its state)."""
    recover_interrupted_write(path)
    if not path.is_dir():
        raise UserError(f"nothing to resume at {str(path)!r}; start the run without resume, or pass a checkpoint folder")
    path = resolve_checkpoint(path, prefer="last")  # weights and state from the same folder
    state = read_trainer_state(path)
    load_model_state(path, model)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as e:
        raise UserError(f"checkpoint {str(path)!r}: its optimiser state does not fit this model ({e}); "
                        "resume with the same model config") from None
    if scaler and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    return path, state
