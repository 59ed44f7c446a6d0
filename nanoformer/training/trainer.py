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
import math
import shutil
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nanoformer.errors import UserError
from nanoformer.training.checkpoint import numbered_checkpoints, recover_interrupted_write, save_checkpoint
from nanoformer.training.config import TrainConfig
from nanoformer.training.contracts import Batch, BatchSource, ConfigLike, FitResult, LossFn, check_batch_source
from nanoformer.training.device import autocast_dtype, select_device
from nanoformer.training.distributed import (
    DistInfo,
    agree_across_ranks,
    dist_info_from_env,
    gather_rank_states,
    setup_distributed,
)
from nanoformer.training.metrics import MetricsWindow, append_metrics, progress_text, truncate_metrics
from nanoformer.training.optim import build_optimizer
from nanoformer.training.resume import COUNTERS, load_resumable, resumable_state
from nanoformer.training.rng import capture_rng_state, restore_rng_state, seed_everything
from nanoformer.training.schedules import budget_progress, budget_spent, lr_at, set_lr
from nanoformer.training.signals import catch_stop_signals


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

        # Validation metrics beyond the loss (e.g. a classifier's accuracy): computed at each
        # evaluation, logged as val_<name>, and what picks `best` when train.best_metric names one.
        self.eval_metrics = eval_metrics
        if cfg.best_metric != "val_loss" and eval_metrics is None:
            raise UserError(f"train.best_metric = {cfg.best_metric!r}: this recipe computes no validation metrics "
                            "besides the loss; use best_metric = \"val_loss\"")
        self.count_tokens = check_batch_source(batches, tokens_per_batch)
        extra = dict(extra_config or {})
        for key in ("model", "train", "checkpoint"):
            if key in extra:
                raise UserError(f"extra_config: section {key!r} is reserved for the trainer; rename it")
        model_dict = model_config.to_dict()
        if model_dict.get("quantization"):
            raise UserError(f"this model holds {model_dict['quantization']} weights for inference only; train the float model")
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
        window = MetricsWindow(self.step, self._t0)
        phase, snapshot = "idle", None
        stopped_by = budget_spent(self.step, self._elapsed_before, cfg, pause_after_s, steps_first=True)
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
                loss, tokens, interrupt, elapsed = agree_across_ranks(self.dist, self.device, loss, tokens, self._stop_requested, elapsed)
                if max_time is not None:
                    time_fraction = elapsed / max_time
                self.tokens_seen += tokens
                phase = "idle"  # the step is complete: an interrupt from here on saves the current state
                window.add(loss, tokens)
                bar.update(1)
                stopped_by = "interrupt" if interrupt else budget_spent(self.step, elapsed, cfg, pause_after_s)

                do_eval = self.step % cfg.eval_interval == 0 or stopped_by in ("max_steps", "max_time", "pause")
                do_save = do_eval or stopped_by is not None or (
                    cfg.checkpoint_interval is not None and self.step % cfg.checkpoint_interval == 0
                )
                do_log = do_eval or stopped_by is not None or self.step % cfg.log_interval == 0
                rank_states = gather_rank_states(self.dist, {"rng": capture_rng_state(), "data": self.batches.state_dict()}) if do_save else None
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
                    append_metrics(self.metrics_path, record)
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

    def _save(self, name: str, with_state: bool = True, rank_states: list[dict[str, Any]] | None = None) -> Path:
        val = self.best_val_loss if name == "best" else self.last_val_loss
        config = dict(self.run_config)
        config["checkpoint"] = {"step": self.step, "tokens_seen": self.tokens_seen, "val_loss": val}
        state = None
        if with_state:
            counters = {name: getattr(self, name) for name in COUNTERS}
            state = resumable_state(counters, self.config.best_metric, self.elapsed_s, self.dist.world_size,
                                    self.optimizer, self.scaler, rank_states or [])
        return save_checkpoint(self.checkpoint_dir / name, self.model, config, self.tokenizer, state)

    def _restore(self, path: Path) -> None:
        """Continue from a resumable checkpoint: weights, optimiser, counters, RNG and data position."""
        path, state = load_resumable(path, self.model, self.optimizer, self.scaler)
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
            truncate_metrics(self.metrics_path, self.step)

    def _has_checkpoint(self) -> bool:
        for name in ("last", "best"):
            recover_interrupted_write(self.checkpoint_dir / name)
        return (self.checkpoint_dir / "last").exists() or (self.checkpoint_dir / "best").exists()

    # ------------------------------------------------------------------ small helpers

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _catch_sigint(self) -> Callable[[], None]:
        """The first Ctrl-C or SIGTERM asks to stop after this step (a second stops at once); returns an undo function."""

        def on_signal(name: str) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            self._say(f"{name}: stopping after this step and saving a resumable checkpoint (again to stop at once).")

        return catch_stop_signals(on_signal)

    def _postfix(self, record: dict[str, Any], start_step: int, max_time: float | None) -> str:
        """The progress bar's text; the ETA from the step rate, or the time budget if that ends first."""
        eta = (self.config.max_steps - self.step) * (time.perf_counter() - self._t0) / max(1, self.step - start_step)
        if max_time is not None:
            eta = min(eta, max(0.0, max_time - self.elapsed_s))
        return progress_text(record, self.config.best_metric, eta)

    def _say(self, message: str) -> None:
        if self.dist.is_main:
            tqdm.write(message, file=sys.stderr)
