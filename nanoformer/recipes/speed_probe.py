"""How long one training step of each rung takes on this machine, measured in a few seconds.

A step here is what the trainer does: forward with the loss, backward, gradient clipping, AdamW
and zeroing the gradients, on random tokens of the rung's batch shape (the time of a step does
not depend on which tokens it sees). The first step is a warm-up (allocations, oneDNN's plans)
and is not counted; the median of the next ones is. The whole probe takes about 10 s on a
2-core CPU, most of it in the largest rung the budget could afford.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from nanoformer.models import DecoderModel
from nanoformer.recipes.ladders import Rung
from nanoformer.run_config import RunConfig
from nanoformer.training.device import select_device
from nanoformer.training.optim import build_optimizer


def probe_step_times(run: RunConfig, rungs: list[Rung] | tuple[Rung, ...], vocab_size: int, steps: int = 2,
                     stop_after_s: float | None = None) -> dict[str, float]:
    """Seconds per training step of each rung, smallest first.

    stop_after_s: stop measuring once a rung's step takes longer (every larger rung is slower
    still, and a budget of `stop_after_s` x MIN_STEPS cannot afford it); a rung whose warm-up
    step alone takes longer is not timed further (its warm-up time stands for its step time).
    """
    device = select_device(run.train.device)
    times: dict[str, float] = {}
    generator = torch.Generator().manual_seed(0)
    state = torch.random.get_rng_state()
    try:
        for rung in rungs:
            config = run.model.replace(vocab_size=vocab_size, d_model=rung.d_model, n_layers=rung.n_layers,
                                       n_heads=rung.n_heads, d_ff=rung.d_ff, max_positions=rung.context)
            model = DecoderModel(config).to(device)
            optimizer = build_optimizer(model, run.train)
            ids = torch.randint(vocab_size, (rung.batch_size, rung.context + 1), generator=generator).to(device)
            if not times:  # the process's first steps also pay one-time costs (thread pools, oneDNN's set-up)
                _timed_step(model, optimizer, ids, run.train.grad_clip)
            warmup = _timed_step(model, optimizer, ids, run.train.grad_clip)
            if stop_after_s is not None and warmup > stop_after_s:  # too slow already: no need to time it closely
                times[rung.name] = warmup
                break
            seconds = [_timed_step(model, optimizer, ids, run.train.grad_clip) for _ in range(steps)]
            times[rung.name] = statistics.median(seconds)
            del model, optimizer
            if stop_after_s is not None and times[rung.name] > stop_after_s:
                break
    finally:
        torch.random.set_rng_state(state)  # the run's initial weights do not depend on the probe
    return times


def _timed_step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor, grad_clip: float | None) -> float:
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = model(ids[:, :-1], targets=ids[:, 1:])
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if ids.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start
