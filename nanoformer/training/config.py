"""`TrainConfig`: every knob of a training run, in one validated dataclass.

The config arrives from TOML files and the command line, so it is checked on construction: an
unknown key, a wrong type or an impossible value raises `UserError` naming the key and the fix,
before any time is spent building models or reading data.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from nanoformer.errors import UserError

SCHEDULES = ("cosine", "noam", "inverse_sqrt", "constant")
DTYPES = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")

_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?")


def parse_duration(text: str, key: str = "max_time") -> float:
    """Seconds in a duration such as "90s", "10m", "1h30m" or "0.5h".

    Units are required: a bare "90" could mean seconds or minutes, and guessing wrong wastes a run.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None:
        raise UserError(
            f"train config '{key}': cannot read {text!r} as a duration; "
            "write it like '90s', '10m' or '1h30m'"
        )
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UserError(f"train config '{key}': {text!r} is not a positive duration; use e.g. '10m'")
    return total


@dataclass
class TrainConfig:
    """How to train, independent of which model family is being trained.

    Steps count optimiser updates; one update consumes `grad_accum_steps` micro-batches of
    `batch_size` sequences on each of the world's processes.
    """

    max_steps: int = 1000
    max_time: str | None = None  # wall-clock budget such as "10m" or "1h30m"; the run stops at whichever limit comes first
    batch_size: int = 32  # sequences per micro-batch and process; read by whoever builds the batch source
    grad_accum_steps: int = 1
    lr: float = 3e-4  # peak learning rate; for "noam" a multiplier of the paper's formula (1.0 = the paper)
    min_lr: float = 3e-5  # floor of the cosine decay (other schedules ignore it)
    warmup_steps: int = 100
    schedule: str = "cosine"
    # Warmup-stable-decay: over the last `cooldown` fraction of the budget (max_steps or max_time,
    # whichever runs out first) the rate falls linearly to 0. Schedules that never anneal (noam,
    # inverse_sqrt, constant) then end on a converged model instead of a noisy one.
    cooldown: float = 0.0
    weight_decay: float = 0.1
    layer_lr_decay: float = 1.0  # < 1: layer-wise lr decay for fine-tuning (layer i of L at lr·decay^(L-i))
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # max global gradient norm; None or 0 disables clipping
    label_smoothing: float = 0.0  # read by the caller's loss function (see `layers.losses`)
    # R-Drop (Liang et al., 2021), classifiers and translation: each batch runs twice under different dropout
    # masks, and `rdrop` x the mean of the two KL divergences between the predictions joins the loss.
    # A regulariser for small labelled sets; it doubles the cost of a step.
    rdrop: float = 0.0
    # Translation: R-Drop only after this fraction of the budget (max_steps, or max_time if that
    # ends first). It doubles a step's cost, which early training, still far from over-fitting,
    # spends better on more steps.
    rdrop_from: float = 0.0
    eval_interval: int = 250
    eval_batches: int = 20
    log_interval: int = 10
    checkpoint_interval: int | None = None  # steps between `last` saves; None = at each evaluation
    keep_last: int = 0  # numbered model-only copies (`step-000500/`) to keep, for checkpoint averaging
    # What picks checkpoints/best: "val_loss" (lowest), or a validation metric that the recipe
    # computes, highest best ("accuracy", "macro_f1" for classifiers), as HF's metric_for_best_model.
    best_metric: str = "val_loss"
    dtype: str = "fp32"
    compile: bool = False
    device: str = "auto"
    seed: int = 1337

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = _coerce(field.name, getattr(self, field.name), hints[field.name])
            object.__setattr__(self, field.name, value)
        self._check_values()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (TOML/JSON); unknown keys are errors, not silently ignored."""
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in valid:
                raise UserError(
                    f"train config: unknown key {key!r}; valid keys are: {', '.join(sorted(valid))}"
                )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that `from_dict` turns back into an equal config."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @property
    def max_time_s(self) -> float | None:
        """The wall-clock budget in seconds, or None for no budget."""
        return None if self.max_time is None else parse_duration(self.max_time)

    def _check_values(self) -> None:
        def need(ok: bool, key: str, what: str) -> None:
            if not ok:
                raise UserError(f"train config {key!r}: {what} (got {getattr(self, key)!r})")

        for key in ("max_steps", "batch_size", "grad_accum_steps", "eval_interval", "eval_batches", "log_interval"):
            need(getattr(self, key) >= 1, key, "must be at least 1")
        for key in ("warmup_steps", "keep_last", "weight_decay", "seed"):
            need(getattr(self, key) >= 0, key, "must not be negative")
        need(self.lr > 0, "lr", "must be positive")
        need(0 <= self.min_lr <= self.lr, "min_lr", "must lie between 0 and lr")
        need(self.eps > 0, "eps", "must be positive")
        need(all(0 <= b < 1 for b in self.betas), "betas", "both must lie in [0, 1)")
        need(self.grad_clip is None or self.grad_clip >= 0, "grad_clip", "must be positive, or 0/None to disable")
        need(0 <= self.label_smoothing < 1, "label_smoothing", "must lie in [0, 1)")
        need(self.rdrop >= 0, "rdrop", "must be >= 0 (0 turns R-Drop off)")
        need(0 <= self.rdrop_from < 1, "rdrop_from", "must lie in [0, 1): the fraction of the budget before R-Drop starts")
        need(0 <= self.cooldown < 1, "cooldown", "must lie in [0, 1): the fraction of the budget to anneal over")
        need(0 < self.layer_lr_decay <= 1, "layer_lr_decay", "must lie in (0, 1]; 1 = no decay")
        need(self.checkpoint_interval is None or self.checkpoint_interval >= 1, "checkpoint_interval",
             "must be at least 1, or None to save at each evaluation")
        need(self.schedule in SCHEDULES, "schedule", f"must be one of {', '.join(SCHEDULES)}")
        need(self.schedule != "noam" or self.warmup_steps > 0, "warmup_steps", "the noam schedule needs warmup_steps > 0")
        need(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
        need(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        if self.max_time is not None:
            parse_duration(self.max_time)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the field's type hint; widen int to float and list to tuple."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if value is None and optional:
        return None
    if typing.get_origin(hint) is tuple:
        n = len(typing.get_args(hint))
        if isinstance(value, (list, tuple)) and len(value) == n and all(_is_number(v) for v in value):
            return tuple(float(v) for v in value)
        _type_error(key, f"a list of {n} numbers", value)
    if hint is float:
        if _is_number(value):
            return float(value)
        _type_error(key, "a number", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        _type_error(key, "an integer", value)
    if not isinstance(value, hint):
        _type_error(key, f"a {hint.__name__}", value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_error(key: str, expected: str, value: Any) -> typing.NoReturn:
    raise UserError(
        f"train config {key!r}: expected {expected}, got {type(value).__name__} {value!r}; "
        f"fix the value of {key!r}"
    )
