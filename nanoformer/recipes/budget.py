"""Sizing a model for the minutes a user has: `[model] size = "auto"` with `[train] max_time`.

A time budget buys steps, and the best model for it is neither the largest nor the smallest: a big
model learns more per token but sees few tokens, a small one sees many but saturates. The rule:

1. measure how long one training step of each rung of the family's ladder takes on this machine
   (`speed_probe.py`, a few seconds: CPUs differ by 3x and more);
2. the steps each rung fits into the budget give its tokens D; its parameters are N;
3. predict each rung's validation loss from the family's scaling law L(N, D) (`scaling_law.py`,
   fitted to a study on the shipped corpora: `benchmarks/scaling_study.py`), and take the lowest.

The choice is recorded in RUN/size.json and the checkpoints' config, so `--resume` and re-runs
into the same folder train the same shape; `size = "4x256-c128"` names a rung directly.
Language models (the decoder ladder), translators (the encoder-decoder ladder) and masked-LM
encoders (the encoder ladder) are sized so far.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nanoformer.data.text import write_bytes_atomic
from nanoformer.errors import UserError
from nanoformer.recipes import speed_probe
from nanoformer.recipes.ladders import LADDERS, Rung, TranslationRung
from nanoformer.recipes.scaling_law import ScalingLaw
from nanoformer.run_config import RunConfig
from nanoformer.training.config import TrainConfig
from nanoformer.training.distributed import dist_info_from_env

MIN_STEPS = 100  # fewer updates than this is warm-up and noise, whatever the shape
SIZABLE_KINDS = ("lm", "translation", "mlm")  # the [data] kinds with a ladder (decoder, encoder-decoder, encoder)
SIZE_FILE = "size.json"


# L(N, D) per family, written by `python benchmarks/scaling_study.py --fit` (docs/benchmarks.md,
# "Budget-aware training"), with the corpus, the runs and the machine it was fitted on.
LAWS_FILE = Path(__file__).with_name("scaling_laws.json")


def _read_laws() -> dict[str, dict[str, Any]]:
    return json.loads(LAWS_FILE.read_text(encoding="utf-8")) if LAWS_FILE.is_file() else {}


FITTED = _read_laws()  # each family's constants, and the corpus, runs and machine they come from
LAWS: dict[str, ScalingLaw] = {arch: ScalingLaw(**{key: entry[key] for key in ("E", "A", "alpha", "B", "beta")})
                               for arch, entry in FITTED.items()}


def check_sizable(run: RunConfig) -> None:
    """`size` is fitted for language models, translators and masked-LM encoders so far: elsewhere
    (a classifier's fine-tuning) it is refused, never ignored."""
    if run.size is not None and run.data_kind not in SIZABLE_KINDS:
        raise UserError(f"[model] size = {run.size!r}: budget sizing is fitted for GPT-style language models, "
                        f"translators and BERT-style pre-training ([data] kind {', '.join(map(repr, SIZABLE_KINDS))}) so far, not "
                        f"{run.data_kind!r}; remove `size` and give the shape")


def ladder_for(arch: str, where: str = "config") -> tuple[Rung, ...]:
    if arch not in LADDERS:
        raise UserError(f"{where}: [model] size = 'auto' has no fitted rule for arch {arch!r} yet (only "
                        f"{', '.join(LADDERS)}); remove `size` and give the shape")
    return LADDERS[arch]


def find_rung(arch: str, name: str, where: str = "config") -> Rung:
    ladder = ladder_for(arch, where)
    for rung in ladder:
        if rung.name == name:
            return rung
    raise UserError(f"{where}: [model] size = {name!r}; expected 'auto' or one of {', '.join(r.name for r in ladder)}")


def warmup_for(steps: int) -> int:
    """5% of the run, as nanoGPT's 100 of 2,000, at most 100 updates and at least 10."""
    return max(10, min(100, steps // 20))


def translation_warmup_for(steps: int) -> int:
    """A sixth of the run, between 100 and the shipped config's 500 updates: the Noam schedule's
    rate rises through its warm-up, and a translator's first few hundred updates need it low."""
    return min(500, max(100, steps // 6))


def encoder_warmup_for(steps: int) -> int:
    """A tenth of the run, between 100 and the shipped config's 1,000 updates: post-LN BERT diverges
    without a warm-up, and the shipped 1,000 would take up a short budget whole."""
    return min(1000, max(100, steps // 10))


def eval_overhead(train: TrainConfig, val_batches: int | None = None) -> float:
    """The fraction a step's time grows by through evaluation: eval_batches forward passes (a third
    of a training step each) every eval_interval steps, or fewer when the split has fewer batches."""
    batches = train.eval_batches if val_batches is None else min(train.eval_batches, val_batches)
    return batches / (3.0 * train.eval_interval)


def doubled_fraction(train: TrainConfig) -> float:
    """The part of the budget whose steps cost twice as much: R-Drop runs each batch twice from
    rdrop_from on."""
    return 1.0 - train.rdrop_from if train.rdrop else 0.0


def steps_in(budget_s: float, step_s: float, overhead: float = 0.0, doubled: float = 0.0) -> int:
    """Updates a budget buys: its first (1 - doubled) at one step each step_s, the rest at half that rate."""
    per_s = 1.0 / (step_s * (1.0 + overhead))
    return int(budget_s * (1.0 - doubled) * per_s + budget_s * doubled * per_s / 2.0)


@dataclass(frozen=True)
class Candidate:
    rung: Rung
    step_s: float  # one training step, measured
    steps: int  # what the budget buys
    predicted_loss: float | None  # None: too few steps to count

    @property
    def tokens(self) -> int:
        return self.steps * self.rung.tokens_per_step


def rank_rungs(ladder: tuple[Rung, ...], law: ScalingLaw, budget_s: float, step_s: dict[str, float],
               overhead: float = 0.0, doubled: float = 0.0) -> list[Candidate]:
    """Every measured rung with the steps `budget_s` buys it and the loss the law expects.

    A pure function of its arguments: the same measurements and budget give the same choice.
    """
    candidates = []
    for rung in ladder:
        if rung.name not in step_s:
            continue
        steps = steps_in(budget_s, step_s[rung.name], overhead, doubled)
        loss = law.predict(rung.n_params, steps * rung.tokens_per_step) if steps >= MIN_STEPS else None
        candidates.append(Candidate(rung, step_s[rung.name], steps, loss))
    return candidates


def choose(candidates: list[Candidate], budget_s: float) -> Candidate:
    """The candidate with the lowest expected loss (the smaller rung on a tie); none fits: a one-line error."""
    fitting = [c for c in candidates if c.predicted_loss is not None]
    if not fitting:
        smallest = candidates[0]
        need = MIN_STEPS * smallest.step_s
        raise UserError(f"[train] max_time = {budget_s:g}s is too short for any model: the smallest ({smallest.rung.describe()}) "
                        f"needs {need:.0f}s for {MIN_STEPS} steps on this machine; give at least {need:.0f}s")
    return min(fitting, key=lambda c: c.predicted_loss)


def apply_rung(run: RunConfig, rung: Rung | TranslationRung, steps: int | None) -> RunConfig:
    """`run` with the rung's shape, batch and rates; `steps`: the updates expected (sets the warm-up)."""
    expected = steps if steps is not None else (run.train.max_steps if run.train.max_time is None else 2000)
    shape = dict(d_model=rung.d_model, n_layers=rung.n_layers, n_heads=rung.n_heads, d_ff=rung.d_ff)
    if isinstance(rung, TranslationRung):
        model = run.model.replace(**shape)
        data = dataclasses.replace(run.data, max_tokens=rung.max_tokens)
        warmup = translation_warmup_for(expected)
        # Noam's lr is a multiplier: its peak, at the end of the warm-up, is lr / sqrt(d * warmup).
        lr = rung.lr * (rung.d_model * warmup) ** 0.5 if run.train.schedule == "noam" else rung.lr
        train = {**run.train.to_dict(), "lr": lr, "warmup_steps": warmup}
    else:
        masked_lm = run.data_kind == "mlm"
        model = run.model.replace(**shape, max_positions=rung.context)
        data = dataclasses.replace(run.data, **{"max_length" if masked_lm else "block_size": rung.context})
        warmup = encoder_warmup_for(expected) if masked_lm else warmup_for(expected)
        train = {**run.train.to_dict(), "batch_size": rung.batch_size, "lr": rung.lr, "min_lr": rung.lr / 10,
                 "warmup_steps": warmup}
    if run.train.max_time is not None:
        train["max_steps"] = 10 * expected + 1000  # the clock ends the run; steps only bound it
    return dataclasses.replace(run, model=model, data=data, train=TrainConfig.from_dict(train))


def read_size_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SIZE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not the JSON that `size = 'auto'` writes; delete it to measure the machine again") from None


def write_size_record(run_dir: Path, record: dict[str, Any]) -> None:
    write_bytes_atomic(Path(run_dir) / SIZE_FILE, (json.dumps(record, indent=2) + "\n").encode("utf-8"))


def plan_budget(run: RunConfig, vocab_size: int, val_batches: int | None = None) -> tuple[list[Candidate], Candidate]:
    """Measure this machine, rank the family's rungs for run.train.max_time, and pick one."""
    where = str(run.source) if run.source else "config"
    arch, budget_s = run.model.arch, run.train.max_time_s
    ladder = ladder_for(arch, where)
    law = LAWS.get(arch)
    if law is None:
        raise UserError(f"{where}: [model] size = 'auto' has no fitted scaling law for arch {arch!r}; name a rung "
                        f"({', '.join(r.name for r in ladder)}) or remove `size`")
    if budget_s is None:
        raise UserError(f"{where}: [model] size = 'auto' sizes the model for [train] max_time; give one")
    step_s = speed_probe.probe_step_times(run, ladder, vocab_size, stop_after_s=budget_s / MIN_STEPS)
    candidates = rank_rungs(ladder, law, budget_s, step_s, eval_overhead(run.train, val_batches),
                            doubled_fraction(run.train))
    return candidates, choose(candidates, budget_s)


def size_for_budget(run: RunConfig, run_dir: Path, vocab_size: int, resume: bool = False,
                    val_batches: int | None = None) -> RunConfig:
    """The run with its shape chosen (size = "auto"), or named (size = a rung); unchanged without `size`.

    A recorded choice (RUN/size.json) is reused when resuming, and by a fresh run into the same
    folder with the same budget, so neither depends on how fast the machine is today. Only rank 0
    of a torchrun job says what it chose.
    """
    if run.size is None:
        return run
    log = print if dist_info_from_env().rank == 0 else _quiet
    where = str(run.source) if run.source else "config"
    arch, budget_s = run.model.arch, run.train.max_time_s
    if run.size != "auto":
        rung = find_rung(arch, run.size, where)
        steps = None
        if budget_s is not None and not dist_info_from_env().enabled:  # ranks must agree: no probe under torchrun
            step_s = speed_probe.probe_step_times(run, [rung], vocab_size)[rung.name]
            steps = steps_in(budget_s, step_s, eval_overhead(run.train, val_batches), doubled_fraction(run.train))
        log(f"size {rung.name}: {rung.describe()}")
        return _recorded(apply_rung(run, rung, steps), {"size": run.size, "chosen": rung.name, "expected_steps": steps})

    record = read_size_record(run_dir)
    if record is not None and (resume or record.get("budget_s") == budget_s):
        rung = find_rung(arch, record["chosen"], f"{run_dir / SIZE_FILE}")
        log(f"size auto: {rung.describe()} (recorded in {run_dir / SIZE_FILE}, not measured again)")
        return _recorded(apply_rung(run, rung, record["expected_steps"]), record)
    if dist_info_from_env().enabled:
        raise UserError(f"{where}: [model] size = 'auto' measures one process; under torchrun name the rung that "
                        "`nanoformer plan` prints (--set model.size=...)")
    if resume:
        raise UserError(f"{run_dir}: resuming a size = 'auto' run needs the choice it recorded in {SIZE_FILE}, "
                        "which is missing; resume with the shape fixed, or start a new run")
    started = time.perf_counter()
    candidates, best = plan_budget(run, vocab_size, val_batches)
    probe_s = time.perf_counter() - started
    log(f"size auto for {budget_s:g}s: {best.rung.name} ({best.rung.describe()}); {best.step_s * 1000:.0f} ms a "
        f"step (measured in {probe_s:.0f}s), ~{best.steps} steps, expected val loss {best.predicted_loss:.3f}; "
        f"recorded in {run_dir / SIZE_FILE} (the same shape elsewhere: --set model.size={best.rung.name})")
    record = {"size": "auto", "budget_s": budget_s, "chosen": best.rung.name, "expected_steps": best.steps,
              "predicted_val_loss": round(best.predicted_loss, 4), "law": LAWS[arch].to_dict(),
              "step_s": {c.rung.name: round(c.step_s, 5) for c in candidates}, "probe_s": round(probe_s, 1),
              "machine": machine_summary()}
    write_size_record(run_dir, record)
    return _recorded(apply_rung(run, best.rung, best.steps), record)


def _quiet(*_: object) -> None:
    pass


def _recorded(run: RunConfig, record: dict[str, Any]) -> RunConfig:
    """The run, carrying the choice into its checkpoints' config (the "size" section)."""
    return dataclasses.replace(run, extra={**run.extra, "size": record})


def machine_summary() -> dict[str, Any]:
    import torch

    from nanoformer.kernels.cpu import cpu_field
    from nanoformer.kernels.gemm import gemm_backend

    return {"cpu": cpu_field("model name"), "family_model": f"{cpu_field('cpu family')}/{cpu_field('model')}",
            "threads": torch.get_num_threads(), "gemm": gemm_backend()}
