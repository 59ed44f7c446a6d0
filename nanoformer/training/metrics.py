"""What a run logs: metrics.jsonl, one JSON object per line, and the window each line sums up."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from torch import Tensor
from tqdm.auto import tqdm


def progress_text(record: dict[str, Any], best_metric: str, eta_s: float) -> str:
    """The progress bar's postfix: loss, validation figures, throughput and the ETA."""
    text = f"loss {record['train_loss']:.4f}"
    if "val_loss" in record:
        text += f", val {record['val_loss']:.4f}"
    if f"val_{best_metric}" in record:
        text += f", val {best_metric} {record[f'val_{best_metric}']:.4f}"
    return f"{text}, {record['tokens_per_s']:,.0f} tok/s, eta {tqdm.format_interval(eta_s)}"


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    """Add one line to the run's metrics file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after `step` (a resumed run), so the curve has no duplicated steps."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)


class MetricsWindow:
    """Running sums between two metric lines: mean training loss and throughput of the window."""

    def __init__(self, step: int, t0: float) -> None:
        self.loss_sum: Any = 0.0
        self.steps = 0
        self.tokens = 0
        self.t0 = t0

    def add(self, loss: Any, tokens: int) -> None:
        self.loss_sum = self.loss_sum + loss
        self.steps += 1
        self.tokens += tokens

    def flush(self, step: int, lr: float, grad_norm: Tensor | None, val_loss: float | None,
              elapsed: float, tokens_seen: int) -> dict[str, Any]:
        now = time.perf_counter()
        record: dict[str, Any] = {
            "step": step,
            "train_loss": float(self.loss_sum) / max(1, self.steps),
            "lr": lr,
            "tokens_per_s": self.tokens / max(1e-9, now - self.t0),
            "tokens_seen": tokens_seen,
            "elapsed_s": elapsed,
        }
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        if val_loss is not None:
            record["val_loss"] = val_loss
        self.loss_sum, self.steps, self.tokens, self.t0 = 0.0, 0, 0, now
        return record
