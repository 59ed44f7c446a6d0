"""Learning-rate schedules as pure functions of the step.

`step` is the 1-based number of the optimiser update about to be taken. Because the rate depends
on nothing but the step and the config, a resumed run needs no scheduler state to continue
exactly: the trainer calls `lr_at(step)` and writes the value into each parameter group
(`set_lr`), instead of keeping a stateful `LambdaLR`.

All schedules ramp up linearly over `warmup_steps` (reaching the peak at step `warmup_steps`):
large early updates from Adam's still-uncalibrated second moments otherwise destabilise
post-LN Transformers in particular.
"""

from __future__ import annotations

import math

import torch

from nanoformer.errors import UserError
from nanoformer.training.config import TrainConfig


def warmup_cosine(
    step: int, lr: float, min_lr: float, warmup_steps: int, max_steps: int, time_fraction: float | None = None
) -> float:
    """Linear warm-up to `lr`, then half a cosine down to `min_lr` at `max_steps` (flat after).

    With a wall-clock budget, `time_fraction` (elapsed / max_time) can end the decay first: the
    cosine follows whichever budget runs out sooner, so a time-limited run still anneals.
    """
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if time_fraction is not None:
        progress = min(1.0, max(progress, time_fraction))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def noam(step: int, lr: float, warmup_steps: int, d_model: int) -> float:
    """The original Transformer's rate, `lr` × d_model^-0.5 × min(step^-0.5, step × warmup^-1.5).

    `lr` is a multiplier: 1.0 reproduces the paper (peak ≈ 7e-4 for d_model 512, warm-up 4000).
    The peak, reached at `warmup_steps`, is lr / sqrt(d_model × warmup_steps); afterwards the rate
    decays as 1/sqrt(step).
    """
    if step <= 0:
        return 0.0
    return lr * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


def inverse_sqrt(step: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up to `lr`, then lr × sqrt(warmup_steps / step): the noam shape with an explicit peak."""
    if step < warmup_steps:
        return lr * step / warmup_steps
    return lr * math.sqrt(max(1, warmup_steps) / max(1, step))


def constant(step: int, lr: float, warmup_steps: int) -> float:
    """Linear warm-up to `lr`, then `lr` for ever."""
    if step < warmup_steps:
        return lr * step / warmup_steps
    return lr


def lr_at(step: int, config: TrainConfig, d_model: int | None = None, time_fraction: float | None = None) -> float:
    """The learning rate of update number `step` under `config.schedule`.

    `time_fraction` (elapsed / max_time, for runs with a time budget) lets the cosine (and a
    `cooldown`) finish its decay when the time runs out; a step-limited run depends on the step alone.
    """
    rate = _base_rate(step, config, d_model, time_fraction)
    if config.cooldown > 0:
        rate *= cooldown_factor(budget_progress(step, config, time_fraction), config.cooldown)
    return rate


def budget_progress(step: int, config: TrainConfig, time_fraction: float | None = None) -> float:
    """The fraction of the run's budget used after `step` updates: of max_steps, or of max_time if more."""
    progress = step / config.max_steps
    return progress if time_fraction is None else max(progress, time_fraction)


def cooldown_factor(progress: float, cooldown: float) -> float:
    """1 until the last `cooldown` fraction of the run, then linearly down to 0 at its end.

    The "decay" of warmup-stable-decay schedules (Hägele et al., 2024: a short linear cool-down
    matches a cosine over the whole run, while the run's length can be chosen late).
    """
    if progress <= 1.0 - cooldown:
        return 1.0
    return max(0.0, (1.0 - progress) / cooldown)


def _base_rate(step: int, config: TrainConfig, d_model: int | None, time_fraction: float | None) -> float:
    c = config
    if c.schedule == "cosine":
        return warmup_cosine(step, c.lr, c.min_lr, c.warmup_steps, c.max_steps, time_fraction)
    if c.schedule == "noam":
        if d_model is None:
            raise UserError(
                "train config 'schedule': 'noam' scales by d_model, but the model config has no "
                "'d_model'; use schedule 'inverse_sqrt' or give the model config a d_model"
            )
        return noam(step, c.lr, c.warmup_steps, d_model)
    if c.schedule == "inverse_sqrt":
        return inverse_sqrt(step, c.lr, c.warmup_steps)
    if c.schedule == "constant":
        return constant(step, c.lr, c.warmup_steps)
    raise UserError(f"train config 'schedule': unknown schedule {c.schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Write `lr` into every parameter group (all groups share one schedule), times the group's
    `lr_scale` where it has one (layer-wise decay, see `optim.param_groups`)."""
    for group in optimizer.param_groups:
        value = lr * group.get("lr_scale", 1.0)
        if isinstance(group["lr"], torch.Tensor):  # capturable/fused optimisers may hold a tensor
            group["lr"].fill_(value)
        else:
            group["lr"] = value


def budget_spent(step: int, elapsed_s: float, config: TrainConfig, pause_after_s: float | None = None,
                 steps_first: bool = False) -> str | None:
    """Which budget ends the run now: "max_time", "max_steps" or "pause" (`Trainer.fit(pause_after_s=)`), or None.

    After a step the clock is asked first; before the first step of a resumed run, the step count.
    """
    over_time = config.max_time_s is not None and elapsed_s >= config.max_time_s
    if step >= config.max_steps and (steps_first or not over_time):
        return "max_steps"
    if over_time:
        return "max_time"
    if pause_after_s is not None and elapsed_s >= pause_after_s:
        return "pause"
    return None
