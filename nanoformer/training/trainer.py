"""The training loop, shared by the encoder-decoder, encoder and decoder families.

The trainer knows nothing about model families. The caller supplies
    model        any `nn.Module`;
    loss_fn      `loss_fn(model, batch) -> scalar mean loss`; it must call the model only as
                 `model(...)`, because under DDP it receives the DDP wrapper. A loss that changes
                 during the run (R-Drop from mid-run) has `set_progress(fraction)`, which the
                 trainer calls before each step with the fraction of the budget used so far;
    batches      a `BatchSource` (below): training batches on demand, a fixed validation set, and
                 its sampling position as a state dict, so that resume is exact;
    model_config anything with `to_dict()`, stored in each checkpoint's config.json.

One step = `grad_accum_steps` micro-batches, forward and backward under autocast, then gradient
clipping and one AdamW update at the learning rate `lr_at(step)`. Every `eval_interval` steps the
model is evaluated and `checkpoints/last` (resumable) is written, `checkpoints/best` when the
validation loss improved. Metrics go to `metrics.jsonl`, one JSON object per line.

Resume is exact: model, optimiser, RNGs, data position, token count and elapsed time are all
restored, so a resumed run computes the same losses as one that never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from nanoformer.errors import UserError
from nanoformer.training.checkpoint import (
    _recover,
    load_model_state,
    numbered_checkpoints,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
)
from nanoformer.training.config import TrainConfig
from nanoformer.training.distributed import DistInfo, dist_info_from_env, setup_distributed
from nanoformer.training.optim import build_optimizer
from nanoformer.training.rng import capture_rng_state, restore_rng_state, seed_everything
from nanoformer.training.schedules import budget_progress, lr_at, set_lr

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


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" picks CUDA, then Apple's MPS, then the CPU; under torchrun, GPU number LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("train config 'device': 'cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
        return torch.device("cuda", local_rank)
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("train config 'device': 'mps' was asked for but this machine has no MPS; use 'auto' or 'cpu'")
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the config's `dtype` on `device` (None = plain fp32)."""
    if dtype == "fp32":
        return None
    if dtype == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("train config 'dtype': this GPU has no bf16; use 'fp16' or 'fp32'")
        return torch.bfloat16
    if device.type != "cuda":
        raise UserError(
            f"train config 'dtype': 'fp16' needs a CUDA GPU (for its loss scaling) but training runs "
            f"on {device.type}; use 'bf16' or 'fp32'"
        )
    return torch.float16


class Trainer:
    """Trains `model` by minimising `loss_fn` over `batches`; writes everything under `run_dir`.

    `resume=True` continues the run in `run_dir` from `checkpoints/last`; a path resumes from that
    checkpoint. Without it, a `run_dir` that already holds checkpoints is refused, so a finished
    run is never overwritten by accident. `extra_config` adds sections (e.g. "data") to each
    checkpoint's config.json. `tokens_per_batch(batch)` counts tokens for throughput; it defaults
    to `batches.tokens_per_batch`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: BatchSource,
        train_config: TrainConfig | dict[str, Any],
        model_config: ConfigLike,
        run_dir: str | Path,
        tokenizer: Any = None,
        extra_config: dict[str, Any] | None = None,
        *,
        resume: bool | str | Path = False,
        tokens_per_batch: Callable[[Batch], int] | None = None,
        progress: bool = True,
        eval_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
    ) -> None:
        cfg = train_config if isinstance(train_config, TrainConfig) else TrainConfig.from_dict(train_config)
        self.config = cfg
        self.loss_fn = loss_fn
        self.batches = batches
        self.tokenizer = tokenizer
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.checkpoint_dir = self.run_dir / "checkpoints"

        for method in ("next_batch", "eval_batches", "state_dict", "load_state_dict"):
            if not callable(getattr(batches, method, None)):
                raise UserError(f"batch source {type(batches).__name__} has no {method}(); see trainer.BatchSource")
        # Validation metrics beyond the loss (e.g. a classifier's accuracy): computed at each
        # evaluation, logged as val_<name>, and what picks `best` when train.best_metric names one.
        self.eval_metrics = eval_metrics
        if cfg.best_metric != "val_loss" and eval_metrics is None:
            raise UserError(f"train.best_metric = {cfg.best_metric!r}: this recipe computes no validation metrics "
                            "besides the loss; use best_metric = \"val_loss\"")
        self.count_tokens = tokens_per_batch or getattr(batches, "tokens_per_batch", None)
        if self.count_tokens is None:
            raise UserError(
                f"batch source {type(batches).__name__} has no tokens_per_batch(batch); add one or "
                "pass Trainer(..., tokens_per_batch=fn)"
            )
        extra = dict(extra_config or {})
        for key in ("model", "train", "checkpoint"):
            if key in extra:
                raise UserError(f"extra_config: section {key!r} is reserved for the trainer; rename it")
        model_dict = model_config.to_dict()
        self.d_model = model_dict.get("d_model")
        self.run_config = {"model": model_dict, "train": cfg.to_dict(), **extra}
        lr_at(1, cfg, self.d_model)  # a noam schedule without d_model fails now, not at step 1

        self.dist: DistInfo = dist_info_from_env()
        self.device = select_device(cfg.device, self.dist.local_rank)
        if self.dist.enabled and self.device.type not in ("cpu", "cuda"):
            raise UserError(f"distributed training runs on 'cpu' or 'cuda', not {self.device.type!r}; set device accordingly")
        setup_distributed(self.device.type)
        self.amp_dtype = autocast_dtype(cfg.dtype, self.device)

        self.model = model.to(self.device)  # the bare model: what checkpoints store
        self.optimizer = build_optimizer(self.model, cfg)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None

        self.step = 0
        self.tokens_seen = 0
        self.best_val_loss = math.inf  # the validation loss of checkpoints/best
        self.best_score = -math.inf  # what picked it: -val_loss, or the best_metric (higher is better)
        self.last_val_loss: float | None = None
        self.last_metrics: dict[str, float] = {}
        self._elapsed_before = 0.0  # seconds spent in earlier sessions of this run
        self._t0 = time.perf_counter()
        self._stop_requested = False
        seed_everything(cfg.seed + self.dist.rank)
        if resume:
            self._restore(self.checkpoint_dir / "last" if resume is True else Path(resume))
        elif self._has_checkpoint():
            raise UserError(
                f"run folder {str(self.run_dir)!r} already holds checkpoints; continue it with "
                "resume=True (CLI: --resume) or choose a new run folder"
            )

        self.eval_model: nn.Module = torch.compile(self.model) if cfg.compile else self.model
        self.train_model: nn.Module = self.eval_model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.eval_model, device_ids=ids)

    # ------------------------------------------------------------------ the loop

    def fit(self, pause_after_s: float | None = None) -> FitResult:
        """Train until max_steps or max_time, whichever comes first; Ctrl-C saves and returns.

        The first Ctrl-C lets the current step finish, then writes a resumable `last` checkpoint
        and returns with `stopped_by="interrupt"`; a second one stops at once.

        `pause_after_s` stops earlier, once the run's training time reaches it, evaluating and
        saving as at the end (`stopped_by="pause"`), without changing the budget that the schedule
        anneals over: a benchmark scores the model at minute marks of one run this way.
        """
        cfg = self.config
        max_time = cfg.max_time_s
        self._t0 = time.perf_counter()
        start_step = self.step
        self._stop_requested = False
        restore_handler = self._catch_sigint()
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, disable=not (self.progress and self.dist.is_main),
            dynamic_ncols=True, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )
        window = _Window(self.step, self._t0)
        phase, snapshot, stopped_by = "idle", None, None
        if self.step >= cfg.max_steps:
            stopped_by = "max_steps"
        elif max_time is not None and self._elapsed_before >= max_time:
            stopped_by = "max_time"
        elif pause_after_s is not None and self._elapsed_before >= pause_after_s:
            stopped_by = "pause"
        last_path = None
        # The cosine decays over whichever budget ends first; elapsed time is agreed across ranks
        # (it travels with the loss all-reduce) so every rank uses the same learning rate.
        time_fraction = None if max_time is None else self._elapsed_before / max_time
        try:
            while stopped_by is None:
                snapshot = {"rng": capture_rng_state(), "data": self.batches.state_dict()}
                phase = "forward"  # an interrupt here restores `snapshot`: the step never happened
                lr = lr_at(self.step + 1, cfg, self.d_model, time_fraction)
                set_lr(self.optimizer, lr)
                if hasattr(self.loss_fn, "set_progress"):
                    self.loss_fn.set_progress(budget_progress(self.step, cfg, time_fraction))  # used so far
                loss, tokens = self._forward_backward()
                phase = "update"  # until the step is booked, an interrupt may leave a half-updated optimiser: not saved
                grad_norm = self._update()
                self.step += 1
                elapsed = self.elapsed_s
                loss, tokens, interrupt, elapsed = self._agree(loss, tokens, self._stop_requested, elapsed)
                over_time = max_time is not None and elapsed >= max_time
                if max_time is not None:
                    time_fraction = elapsed / max_time
                self.tokens_seen += tokens
                phase = "idle"  # the step is complete: an interrupt from here on saves the current state
                window.add(loss, tokens)
                bar.update(1)
                if interrupt:
                    stopped_by = "interrupt"
                elif over_time:
                    stopped_by = "max_time"
                elif self.step >= cfg.max_steps:
                    stopped_by = "max_steps"
                elif pause_after_s is not None and elapsed >= pause_after_s:
                    stopped_by = "pause"

                do_eval = self.step % cfg.eval_interval == 0 or stopped_by in ("max_steps", "max_time", "pause")
                do_save = do_eval or stopped_by is not None or (
                    cfg.checkpoint_interval is not None and self.step % cfg.checkpoint_interval == 0
                )
                do_log = do_eval or stopped_by is not None or self.step % cfg.log_interval == 0
                rank_states = self._gather_rank_states() if do_save else None
                if not self.dist.is_main:
                    continue
                val_loss = self.evaluate() if do_eval else None
                if val_loss is not None and self._score() > self.best_score:
                    self.best_score, self.best_val_loss = self._score(), val_loss
                    self._save("best", with_state=False)
                if do_log:
                    record = window.flush(self.step, lr, grad_norm, val_loss, self.elapsed_s, self.tokens_seen)
                    if val_loss is not None:
                        record.update({f"val_{name}": value for name, value in self.last_metrics.items()})
                    self._append_metrics(record)
                    bar.set_postfix_str(self._postfix(record, start_step, max_time), refresh=False)
                if do_save:
                    last_path = self._save("last", rank_states=rank_states)
                    if cfg.keep_last > 0:
                        self._save(f"step-{self.step:06d}", with_state=False)
                        for old in numbered_checkpoints(self.run_dir)[: -cfg.keep_last]:
                            shutil.rmtree(old, ignore_errors=True)
        except KeyboardInterrupt:
            if phase == "update":
                self._say("Interrupted during the optimiser update; the last saved checkpoint is unchanged.")
                raise
            state = snapshot if phase == "forward" else {"rng": capture_rng_state(), "data": self.batches.state_dict()}
            self.optimizer.zero_grad(set_to_none=True)
            stopped_by = "interrupt"
            if self.dist.is_main:  # no collectives here: other ranks may be anywhere
                last_path = self._save("last", rank_states=[state])
        finally:
            restore_handler()
            bar.close()
        if stopped_by == "interrupt" and last_path is not None:
            self._say(
                f"Interrupted at step {self.step}; resumable checkpoint saved to {last_path} "
                "(continue with resume=True, CLI: --resume)."
            )
        best = None if math.isinf(self.best_val_loss) else self.best_val_loss
        return FitResult(self.step, self.tokens_seen, best, stopped_by, last_path)

    def _forward_backward(self) -> tuple[Tensor, int]:
        """Accumulate gradients over the micro-batches; returns (mean loss, tokens) of this rank."""
        accum = self.config.grad_accum_steps
        self.train_model.train()
        total = torch.zeros((), device=self.device)
        tokens = 0
        for micro in range(accum):
            batch = self.batches.next_batch("train")
            tokens += int(self.count_tokens(batch))
            batch = self._to_device(batch)
            # DDP all-reduces gradients in backward; only the last micro-batch needs to.
            sync = not self.dist.enabled or micro == accum - 1
            with contextlib.nullcontext() if sync else self.train_model.no_sync():
                with self._autocast():
                    loss = self.loss_fn(self.train_model, batch)
                scaled = loss / accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            total += loss.detach().float()
        return total / accum, tokens

    def _update(self) -> Tensor | None:
        """Clip, step, zero the gradients; returns the gradient norm before clipping (if clipping)."""
        grad_norm = None
        if self.config.grad_clip:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _agree(self, loss: Tensor, tokens: int, interrupt: bool, elapsed: float) -> tuple[Any, int, bool, float]:
        """Under DDP, average the loss and the elapsed time, sum the tokens, and let any rank's
        interrupt stop all ranks.

        Ranks must stop at the same step (and share one learning rate) or they would diverge, or
        wait for ever in the next all-reduce. Single-process training keeps the loss on the
        device, avoiding a sync every step.
        """
        if not self.dist.enabled:
            return loss, tokens, interrupt, elapsed
        t = torch.tensor([0.0, tokens, interrupt, elapsed], dtype=torch.float64, device=self.device)
        t[0] = loss
        dist.all_reduce(t)
        total, tokens_f, n_interrupt, elapsed_sum = t.tolist()
        world = self.dist.world_size
        return total / world, int(tokens_f), n_interrupt > 0, elapsed_sum / world

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> float:
        """Mean loss over the first `eval_batches` batches of `split`, weighted by tokens.

        Dropout is off, and the random generators are put back afterwards, so evaluating (or not)
        never changes the training that follows.
        """
        model = self.eval_model
        rng = capture_rng_state()
        model.eval()
        total, weight = torch.zeros((), device=self.device), 0
        try:
            for batch in islice(self.batches.eval_batches(split), self.config.eval_batches):
                n = max(1, int(self.count_tokens(batch)))
                with self._autocast():
                    loss = self.loss_fn(model, self._to_device(batch))
                total += loss.float() * n
                weight += n
            if self.eval_metrics is not None and split == "val":
                self.last_metrics = {name: float(v) for name, v in self.eval_metrics(model).items()
                                     if isinstance(v, (int, float))}
        finally:
            restore_rng_state(rng)
            model.train()
        if weight == 0:
            raise UserError(f"batch source {type(self.batches).__name__} yielded no {split!r} batches; give it validation data")
        self.last_val_loss = float(total) / weight
        known = ("val_loss", *self.last_metrics)
        if self.eval_metrics is not None and split == "val" and self.config.best_metric not in known:
            raise UserError(f"train.best_metric = {self.config.best_metric!r} is not a validation metric of this "
                            f"recipe; choose one of: {', '.join(known)}")
        return self.last_val_loss

    def _score(self) -> float:
        """The last evaluation as `best` ranks it: higher is better."""
        if self.config.best_metric == "val_loss":
            return -self.last_val_loss
        return self.last_metrics[self.config.best_metric]

    # ------------------------------------------------------------------ state, checkpoints, metrics

    @property
    def elapsed_s(self) -> float:
        """Training wall-clock time of the whole run, earlier sessions included."""
        return self._elapsed_before + time.perf_counter() - self._t0

    def _gather_rank_states(self) -> list[dict[str, Any]]:
        """Each rank's RNG and data position (they differ between ranks), collected on every rank."""
        mine = {"rng": capture_rng_state(), "data": self.batches.state_dict()}
        if not self.dist.enabled:
            return [mine]
        states: list[Any] = [None] * self.dist.world_size
        dist.all_gather_object(states, mine)  # pickles in memory between our own processes only
        return states

    def _save(self, name: str, with_state: bool = True, rank_states: list[dict[str, Any]] | None = None) -> Path:
        val = self.best_val_loss if name == "best" else self.last_val_loss
        config = dict(self.run_config)
        config["checkpoint"] = {"step": self.step, "tokens_seen": self.tokens_seen, "val_loss": val}
        state = None
        if with_state:
            state = {
                "step": self.step,
                "schedule_step": self.step,  # schedules are functions of the step alone
                "tokens_seen": self.tokens_seen,
                "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
                "best_score": None if math.isinf(self.best_score) else self.best_score,
                "best_metric": self.config.best_metric,
                "last_val_loss": self.last_val_loss,
                "elapsed_s": self.elapsed_s,
                "world_size": self.dist.world_size,
                "optimizer": self.optimizer.state_dict(),
                "grad_scaler": self.scaler.state_dict() if self.scaler else None,
                "ranks": rank_states or [],
            }
        return save_checkpoint(self.checkpoint_dir / name, self.model, config, self.tokenizer, state)

    def _restore(self, path: Path) -> None:
        """Continue from a resumable checkpoint: weights, optimiser, counters, RNG and data position."""
        _recover(path)
        if not path.is_dir():
            raise UserError(
                f"nothing to resume at {str(path)!r}; start the run without resume, or pass a checkpoint folder"
            )
        path = resolve_checkpoint(path, prefer="last")  # weights and state from the same folder
        state = read_trainer_state(path)
        load_model_state(path, self.model)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as e:
            raise UserError(f"checkpoint {str(path)!r}: its optimiser state does not fit this model ({e}); resume with the same model config") from None
        if self.scaler and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = state["step"]
        self.tokens_seen = state["tokens_seen"]
        self.best_val_loss = math.inf if state["best_val_loss"] is None else state["best_val_loss"]
        score = state.get("best_score", -self.best_val_loss)  # checkpoints before best_metric ranked by loss
        self.best_score = -math.inf if score is None else score
        saved_metric = state.get("best_metric", "val_loss")
        if saved_metric != self.config.best_metric:
            # Scores of two metrics do not compare: the next evaluation starts a new best.
            self.best_score = -math.inf
            self._say(f"Note: checkpoints/best was chosen by {saved_metric}; from now on by "
                      f"{self.config.best_metric}, starting at the next evaluation.")
        self.last_val_loss = state.get("last_val_loss")
        self._elapsed_before = state["elapsed_s"]
        ranks = state["ranks"]
        if state["world_size"] != self.dist.world_size or len(ranks) <= self.dist.rank:
            self._say(
                f"Warning: {path} was saved by {state['world_size']} process(es) and holds "
                f"{len(ranks)} sampler state(s); this run has {self.dist.world_size}, so resume is not exact."
            )
        if self.dist.rank < len(ranks):
            restore_rng_state(ranks[self.dist.rank]["rng"])
            self.batches.load_state_dict(ranks[self.dist.rank]["data"])
        if self.dist.is_main:
            self._truncate_metrics()

    def _has_checkpoint(self) -> bool:
        for name in ("last", "best"):
            _recover(self.checkpoint_dir / name)
        return (self.checkpoint_dir / "last").exists() or (self.checkpoint_dir / "best").exists()

    def _append_metrics(self, record: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_metrics(self) -> None:
        """Drop metrics logged after the resumed step, so the curve has no duplicated steps."""
        if not self.metrics_path.exists():
            return
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= self.step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    # ------------------------------------------------------------------ small helpers

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _catch_sigint(self) -> Callable[[], None]:
        """Turn the first Ctrl-C or SIGTERM into a request to stop after this step; returns an undo function.

        SIGTERM is what `kill`, `timeout` and cluster schedulers send before they pull the plug:
        it gets the same graceful stop, so a pre-empted run leaves a resumable checkpoint.
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            self._say(f"{what}: stopping after this step and saving a resumable checkpoint (again to stop at once).")

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(sig, handler) for sig, handler in previous.items()]

    def _postfix(self, record: dict[str, Any], start_step: int, max_time: float | None) -> str:
        """Loss, throughput and the ETA: from the step rate, or the time budget if that ends first."""
        done = self.step - start_step
        spent = time.perf_counter() - self._t0
        eta = (self.config.max_steps - self.step) * spent / max(1, done)
        if max_time is not None:
            eta = min(eta, max(0.0, max_time - self.elapsed_s))
        text = f"loss {record['train_loss']:.4f}"
        if "val_loss" in record:
            text += f", val {record['val_loss']:.4f}"
        metric = self.config.best_metric
        if f"val_{metric}" in record:
            text += f", val {metric} {record[f'val_{metric}']:.4f}"
        return f"{text}, {record['tokens_per_s']:,.0f} tok/s, eta {tqdm.format_interval(eta)}"

    def _say(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message, file=sys.stderr)


class _Window:
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
