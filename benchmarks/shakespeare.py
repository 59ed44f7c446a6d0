"""Character-level GPT on Tiny Shakespeare: nanoGPT's CPU recipe, and our config on a time budget.

1. `nanogpt-cpu`: nanoGPT's CPU recipe (4 layers, 4 heads, 128 wide, context 64, batch 12,
   2000 iterations, lr 1e-3 with warm-up 100 and cosine to 1e-4, betas (0.9, 0.99), weight decay
   0.1, dropout 0), for which nanoGPT reports a validation loss of about 1.88, run by our trainer.
2. `race`: the recipe, then configs/shakespeare_char.toml (size = "auto") with max_time set to the
   recipe's training time measured in the same run.
3. `config`: configs/shakespeare_char.toml for its wall-clock budget (10 minutes), reporting the
   best validation loss.
4. `budgets` (--minutes 1 2 5 10 30): at each budget the auto run, and the rungs on either side of
   the one it chose trained as fixed shapes for the same time: is the choice the best of them?
5. `gpu` (only when asked for, on a CUDA GPU): configs/shakespeare_char_gpu.toml, nanoGPT's 6 × 384
   model (nanoGPT: val loss 1.4697), with its wall time, the training time at which the validation
   loss first reached 1.47, and MFU against a bf16 matmul peak measured in the same process.
Each run's final model is also scored on the *whole* validation split (every token once), which
is less noisy than the 20-batch estimate nanoGPT prints; that is the loss the comparisons use.

    python benchmarks/shakespeare.py --out benchmarks/results.jsonl [--only nanogpt-cpu|race|config|budgets]
    python benchmarks/shakespeare.py --only budgets --minutes 1 2 5 --out ...
    # one budget's three runs side by side, one thread each (`nanoformer plan` names the choice first)
    python benchmarks/shakespeare.py --only budgets --minutes 30 --auto-only --out ... &
    python benchmarks/shakespeare.py --only budgets --minutes 30 --fixed 4x256-c128 --out ...
    python benchmarks/shakespeare.py --only gpu --out ...      # on a GPU (benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import flops_per_token, matmul_peak_gflops, write_result  # noqa: E402

import nanoformer  # noqa: E402
from nanoformer.data.lm import LMData, build_token_cache, open_token_cache  # noqa: E402
from nanoformer.data.text import resolve_text_files  # noqa: E402
from nanoformer.evaluation.perplexity import evaluate_stream  # noqa: E402
from nanoformer.recipes import train  # noqa: E402
from nanoformer.run_config import build_run_config, load_run_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GPU_TARGET = 1.47  # nanoGPT's 6 x 384 model reaches 1.4697

NANOGPT_CPU = {
    "model": dict(arch="decoder", d_model=128, n_heads=4, n_layers=4, d_ff=512, max_positions=64, dropout=0.0,
                  activation="gelu", norm_position="pre", positional="learned", init="gpt2"),
    "data": dict(name="tinyshakespeare", tokenizer="char", block_size=64),
    "train": dict(max_steps=2000, batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100, schedule="cosine",
                  weight_decay=0.1, betas=[0.9, 0.99], grad_clip=1.0, eval_interval=250, eval_batches=20,
                  log_interval=50, device="cpu"),
}


def full_validation_loss(run_dir: Path) -> dict:
    model, tokenizer = nanoformer.load(run_dir)
    config = json.loads((run_dir / "checkpoints" / "best" / "config.json").read_text())
    files = resolve_text_files(config["data"]["files"])
    tokens = open_token_cache(build_token_cache(files, tokenizer, run_dir / "data"))
    val = np.asarray(LMData(tokens, val_fraction=config["data"]["val_fraction"]).splits["val"])
    result = evaluate_stream(model, val, config["data"]["block_size"], batch_size=32)
    return {"full_val_loss": round(result.loss, 4), "full_val_tokens": result.tokens}


def run(name: str, run_config, workdir: Path, out: str | None, peak_gflops: float | None = None,
        note: dict | None = None) -> dict:
    run_dir = workdir / name
    start = time.perf_counter()
    result = train(run_config, run_dir, progress=True)
    wall = time.perf_counter() - start
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [m["tokens_per_s"] for m in metrics if "tokens_per_s" in m]
    extra = {}
    if peak_gflops:  # the GPU run: MFU, and when the validation loss first reached nanoGPT's
        model, _ = nanoformer.load(run_dir)
        fpt = flops_per_token(model, run_config.data.block_size)
        reached = [m for m in metrics if m.get("val_loss", float("inf")) <= GPU_TARGET]
        extra = {
            "matmul_peak_gflops_bf16": round(peak_gflops, 1),
            "mfu": round(float(np.median(speeds)) * fpt / 1e9 / peak_gflops, 3) if speeds else None,
            "target": GPU_TARGET,
            "reached_target_at": {"step": reached[0]["step"], "train_elapsed_s": round(reached[0]["elapsed_s"], 1)}
            if reached else None,
        }
    saved = json.loads((run_dir / "checkpoints" / "last" / "config.json").read_text())
    model = saved["model"]
    record = {
        "run": name,
        **(note or {}),
        "shape": f"{model['n_layers']}x{model['d_model']}-c{saved['data']['block_size']}",
        "size": saved.get("size"),
        "train_s": round(max(m.get("elapsed_s", 0.0) for m in metrics), 1),
        "steps": result.step,
        "stopped_by": result.stopped_by,
        "best_val_loss_estimate": round(result.best_val_loss, 4),
        "wall_s": round(wall, 1),
        "median_tokens_per_s": round(float(np.median(speeds)), 1) if speeds else None,
        "val_curve": [(m["step"], round(m["val_loss"], 4)) for m in metrics if "val_loss" in m],
        **full_validation_loss(run_dir),
        **extra,
    }
    write_result("shakespeare", record, out)
    return record


def shipped(args, minutes: float | None = None, size: str | None = None):
    """configs/shakespeare_char.toml (or --config), with a budget and a named rung if given."""
    overrides = list(args.set)
    if minutes is not None:
        overrides.append(f"train.max_time={minutes * 60:g}s")
    if size is not None:
        overrides.append(f"model.size={size}")
    return load_run_config(args.config or ROOT / "configs" / "shakespeare_char.toml", overrides)


def budgets(args, workdir: Path) -> None:
    """At each budget: the auto run, and the rungs beside its choice as fixed shapes for the same time."""
    from nanoformer.recipes.ladders import LADDERS

    names = [rung.name for rung in LADDERS["decoder"]]
    for minutes in args.minutes:
        if args.fixed:  # only these rungs (an earlier auto run at this budget chose their neighbour)
            for name in args.fixed:
                run(f"budget-{minutes:g}m-{name}", shipped(args, minutes, name), workdir, args.out,
                    note={"minutes": minutes, "auto": False})
            continue
        auto = run(f"budget-{minutes:g}m-auto", shipped(args, minutes), workdir, args.out,
                   note={"minutes": minutes, "auto": True})
        if args.auto_only:
            continue
        chosen = names.index(auto["size"]["chosen"])
        for index in (chosen - 1, chosen + 1):
            if 0 <= index < len(names):
                run(f"budget-{minutes:g}m-{names[index]}", shipped(args, minutes, names[index]), workdir, args.out,
                    note={"minutes": minutes, "auto": False})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["nanogpt-cpu", "race", "config", "budgets", "gpu"])
    parser.add_argument("--config", default=None, help="the config of the `config` or `gpu` run "
                        "(default: configs/shakespeare_char.toml, configs/shakespeare_char_gpu.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10, 30], help="budgets of `budgets`")
    parser.add_argument("--fixed", nargs="+", default=None, help="`budgets`: train only these rungs, no auto run")
    parser.add_argument("--auto-only", action="store_true",
                        help="`budgets`: the auto run alone (its neighbours side by side in other processes, --fixed)")
    parser.add_argument("--workdir", default=None, help="where runs go (default: a temporary folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="shakespeare-bench-"))
    if args.only in (None, "nanogpt-cpu", "race"):
        recipe = run("nanogpt-cpu", build_run_config(NANOGPT_CPU), workdir, args.out)
        if args.only != "nanogpt-cpu":
            run("race", shipped(args, recipe["train_s"] / 60), workdir, args.out,
                note={"anchor": "nanogpt-cpu", "anchor_train_s": recipe["train_s"], "anchor_wall_s": recipe["wall_s"],
                      "anchor_full_val_loss": recipe["full_val_loss"]})
    if args.only in (None, "config"):
        run("config", shipped(args), workdir, args.out)
    if args.only in (None, "budgets"):
        budgets(args, workdir)
    if args.only == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--only gpu needs a CUDA GPU")
        peak = matmul_peak_gflops(n=8192, device="cuda", dtype=torch.bfloat16)
        config = load_run_config(args.config or ROOT / "configs" / "shakespeare_char_gpu.toml", args.set)
        run("gpu", config, workdir, args.out, peak_gflops=peak)


if __name__ == "__main__":
    main()
