"""Data-parallel training under `torchrun`: who am I, and joining the process group.

`torchrun --nproc_per_node N` starts N copies of the program with RANK, WORLD_SIZE and
LOCAL_RANK in the environment. Each copy holds the whole model, trains on its own batches, and
DDP averages the gradients, so one update sees world_size × batch_size × grad_accum_steps
sequences. Without those variables everything here is a no-op and the world has size 1.

Call `setup_distributed` before building the batch source when you want each rank to draw
different batches: seed the source with `seed + info.rank`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from nanoformer.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the world (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics and the progress bar."""
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """Read RANK / WORLD_SIZE / LOCAL_RANK as set by torchrun (or ask a group joined by the caller)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    values = {}
    for key, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        raw = os.environ.get(key, str(default))
        try:
            values[key] = int(raw)
        except ValueError:
            raise UserError(f"environment variable {key}={raw!r} is not an integer; launch with torchrun or unset it") from None
    return DistInfo(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"])


def setup_distributed(device_type: str | None = None) -> DistInfo:
    """Join the process group if launched by torchrun (idempotent); returns this process's place.

    The backend is NCCL for CUDA training and gloo otherwise; `device_type` defaults to "cuda"
    when a GPU is visible.
    """
    info = dist_info_from_env()
    if not info.enabled or dist.is_initialized():
        return info
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return info


def agree_across_ranks(info: DistInfo, device: torch.device, loss: torch.Tensor, tokens: int, interrupt: bool,
                       elapsed: float) -> tuple[Any, int, bool, float]:
    """Under DDP, average the loss and the elapsed time, sum the tokens, and let any rank's
    interrupt stop all ranks.

    Ranks must stop at the same step (and share one learning rate) or they would diverge, or
    wait for ever in the next all-reduce. Single-process training keeps the loss on the
    device, avoiding a sync every step.
    """
    if not info.enabled:
        return loss, tokens, interrupt, elapsed
    t = torch.tensor([0.0, tokens, interrupt, elapsed], dtype=torch.float64, device=device)
    t[0] = loss
    dist.all_reduce(t)
    total, tokens_f, n_interrupt, elapsed_sum = t.tolist()
    return total / info.world_size, int(tokens_f), n_interrupt > 0, elapsed_sum / info.world_size


def gather_rank_states(info: DistInfo, mine: dict[str, Any]) -> list[dict[str, Any]]:
    """Each rank's RNG and data position (they differ between ranks), collected on every rank."""
    if not info.enabled:
        return [mine]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, mine)  # pickles in memory between our own processes only
    return states


def cleanup_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
