"""Training curves from a run's `metrics.jsonl` (one JSON object per logged step, written by the
trainer): loss (train, and validation on evaluation steps), learning rate, and throughput."""

from __future__ import annotations

import json
from pathlib import Path

from nanoformer.errors import UserError
from nanoformer.viz.plotting import pyplot, save

METRICS_FILE = "metrics.jsonl"


def metrics_path(run: str | Path) -> Path:
    """The metrics file of a run folder (or the file itself)."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise UserError(f"{run}: no {METRICS_FILE} found; pass the folder a training run wrote "
                        "(nanoformer train ... --out RUN_DIR)")
    return path


def read_metrics(run: str | Path) -> list[dict]:
    """The records of a run, in order; a line that is not a JSON object is an error with its number."""
    path = metrics_path(run)
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{number}: not a JSON line ({error.msg}); fix or remove the line") from None
            if not isinstance(record, dict) or "step" not in record:
                raise UserError(f"{path}:{number}: expected an object with a \"step\"; fix or remove the line")
            records.append(record)
    if not records:
        raise UserError(f"{path}: no metrics yet; train for at least one logging interval first")
    return records


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_metrics(run: str | Path, path: str | Path, title: str | None = None) -> Path:
    records = read_metrics(run)
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    steps, train = _series(records, "train_loss")
    axes[0].plot(steps, train, label="train", lw=1.2)
    val_steps, val = _series(records, "val_loss")
    if val:
        axes[0].plot(val_steps, val, "o-", label="validation", lw=1.5, ms=4)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("loss (cross-entropy, nats/token)")
    axes[0].set_title("loss")
    axes[0].legend()
    steps, lr = _series(records, "lr")
    axes[1].plot(steps, lr, color="tab:green")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("learning rate")
    axes[1].set_title("learning rate schedule")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    steps, speed = _series(records, "tokens_per_s")
    axes[2].plot(steps, speed, color="tab:purple")
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("tokens / s")
    axes[2].set_title("throughput")
    axes[2].set_ylim(bottom=0)
    last = records[-1]
    summary = f"step {last['step']}"
    if train:
        summary += f", train loss {train[-1]:.3f}"
    if val:
        summary += f", best val loss {min(val):.3f}"
    if isinstance(last.get("elapsed_s"), (int, float)):
        summary += f", {last['elapsed_s'] / 60:.1f} min"
    fig.suptitle(f"{title or Path(run).name}: {summary}", fontsize=11)
    fig.tight_layout()
    return save(fig, path)
