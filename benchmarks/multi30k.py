"""Multi30k de→en on the CPU: sacreBLEU and chrF after 20, 40, 60 ... minutes of training.

Trains configs/multi30k_de_en.toml for a wall-clock budget and, at each minute mark, stops,
keeps the checkpoint of that moment (RUN_DIR/marks/020min/ ...), translates test_2016_flickr and
test_2017_flickr with beam search (beam 4) and writes one JSON line per mark and test set: BLEU
with its sacreBLEU signature, chrF, the step, tokens seen and the validation loss. Training then
resumes exactly where it stopped (same batches, same schedule), so the marks are points on one
run; evaluation time is not counted as training time. The config says size = "auto", so the
shape is chosen for the whole --minutes; `--size fixed` trains the shape it fixed before (FIXED),
`--size 3x128` a named rung.

    # the full benchmark, in the background (about 2 h of training plus evaluations)
    export NANOFORMER_DATA=/work/shared/data     # else Multi30k is downloaded from GitHub
    nohup python benchmarks/multi30k.py --minutes 120 --out benchmarks/results/multi30k.jsonl \
        > runs/bench-multi30k.log 2>&1 &
    # a smoke test
    python benchmarks/multi30k.py --minutes 1 --marks 0.5,1 --beam-size 1 --run-dir /tmp/m30k

Threads: on a machine shared with other jobs, torch's default of one thread per core can be many
times slower than fewer threads (OpenMP threads wait for each other on busy cores); pass
`--threads 1` there (measured here: a 2.5k-token training step of this model took 2.3 s on one
thread and 9.9 s on two while other jobs ran). On an idle machine the default should be faster.

If it is interrupted (Ctrl-C or SIGTERM let the current step finish and save a checkpoint),
`--resume` continues the run from there, counting only training time, and skips the marks
already scored. `--average N` also scores the mean of the last N numbered checkpoints at each
mark (the paper's checkpoint averaging).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import write_result

ROOT = Path(__file__).resolve().parent.parent


def mark_name(minutes: float) -> str:
    return f"{minutes:05.1f}min".replace(".0min", "min").replace(".", "_")


def copy_model_only(src: Path, dst: Path) -> None:
    """Keep the checkpoint of this moment (weights, config, tokenizer; no optimiser state)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("trainer_state*"))


def score(checkpoint: Path, splits: list[str], args, extra: dict) -> None:
    import torch

    import nanoformer
    from nanoformer.data.parallel import SplitFiles, read_split
    from nanoformer.evaluation.bleu import evaluate_translations
    from nanoformer.recipes.translation import load_source_tokenizer
    from nanoformer.training.checkpoint import read_config

    model, tokenizer = nanoformer.load(checkpoint, device=args.eval_device)
    config = read_config(checkpoint)
    files = config["data"]["files"]
    source_tokenizer = load_source_tokenizer(checkpoint, tokenizer)
    results = {}
    for split in splits:
        text = read_split(SplitFiles.from_json(split, files[split]))
        with torch.inference_mode():
            scores, hypotheses = evaluate_translations(
                model, tokenizer, text.src, text.tgt, source_tokenizer=source_tokenizer, beam_size=args.beam_size,
                length_penalty=args.length_penalty, batch_size=args.batch_size, progress=args.progress,
            )
        (checkpoint / f"{split}.hyp.{config['data']['tgt_lang']}").write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
        detail = scores.pop("bleu_detail")
        record = {**extra, "test_set": split, **scores, "detail": detail, "checkpoint": str(checkpoint)}
        write_result("multi30k", record, args.out)
        results[split] = {"bleu": scores["bleu"], "chrf": scores["chrf"]}
    (checkpoint / "scores.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def size_record(run_dir: Path) -> dict | None:
    """What size = "auto" chose and measured (RUN/size.json), if the run was sized."""
    path = run_dir / "size.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# The shape and rates configs/multi30k_de_en.toml fixed before it said size = "auto" (`--size fixed`).
FIXED = {
    "model": {"d_model": 256, "n_layers": 3, "n_heads": 4, "d_ff": 1024},
    "data": {"max_tokens": 4096},
    "train": {"lr": 0.7, "warmup_steps": 500, "max_steps": 10_000_000},
}


def sized_config(path: str, size: str, overrides: list[str]):
    """The config sized by `size` (auto, a rung), or with the FIXED shape (size "fixed")."""
    return common.sized_config(Path(path), size, FIXED, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "multi30k_de_en.toml"))
    parser.add_argument("--minutes", type=float, default=120.0, help="training budget (wall clock, minutes)")
    parser.add_argument("--marks", default="20,40,60,120", help="minute marks to score at (those <= --minutes, and --minutes)")
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "bench-multi30k"))
    parser.add_argument("--out", default=None, help="append the JSON lines here too")
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch")
    parser.add_argument("--average", type=int, default=0, help="also score the mean of the last N numbered checkpoints")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--eval-device", default="cpu")
    parser.add_argument("--size", default=None,
                        help="'auto' or a rung: the config's shape, batch and rate keys are dropped and [model] "
                             "size set; 'fixed': the shape the config fixed before it was sized (FIXED)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted benchmark in --run-dir")
    parser.add_argument("--progress", action="store_true", help="progress bars (off by default: meant for a log file)")
    args = parser.parse_args()

    import torch

    from nanoformer.recipes import train
    from nanoformer.recipes.translation import SOURCE_TOKENIZER_FILE
    from nanoformer.run_config import load_run_config
    from nanoformer.training.checkpoint import average_checkpoints, numbered_checkpoints, read_trainer_state

    if args.threads:
        torch.set_num_threads(args.threads)
    marks = sorted({float(m) for m in args.marks.split(",") if float(m) <= args.minutes} | {args.minutes})
    run_dir = Path(args.run_dir)
    if run_dir.exists() and not args.resume:
        raise SystemExit(f"{run_dir} exists; pass --resume to continue it, or choose another --run-dir")
    resume = args.resume and (run_dir / "checkpoints" / "last").is_dir()
    for minutes in marks:
        mark_dir = run_dir / "marks" / mark_name(minutes)
        if args.resume and (mark_dir / "scores.json").is_file():
            continue
        # The budget is the whole --minutes (a cooldown in the config anneals towards its end);
        # each mark pauses the run there.
        overrides = list(args.set) + [f'train.max_time="{args.minutes * 60:.0f}s"']
        run = sized_config(args.config, args.size, overrides) if args.size else load_run_config(args.config, overrides)
        started = time.perf_counter()
        result = train(run, run_dir, resume=resume, progress=args.progress, pause_after_s=minutes * 60)
        resume = True
        if result.stopped_by == "interrupt":  # Ctrl-C or SIGTERM: not a mark; the checkpoint is resumable
            print(f"interrupted before the {minutes:g}-minute mark at step {result.step}; continue with --resume",
                  file=sys.stderr)
            return
        last = run_dir / "checkpoints" / "last"
        state = read_trainer_state(last)
        copy_model_only(last, mark_dir)
        splits = run.data.test_splits or ["test_2016_flickr", "test_2017_flickr"]
        extra = {
            "config": Path(args.config).name, "overrides": list(args.set), "size": size_record(run_dir), "minutes": minutes, "step": result.step, "tokens_seen": result.tokens_seen,
            "train_elapsed_s": round(state["elapsed_s"], 1), "val_loss": state.get("last_val_loss"),
            "stopped_by": result.stopped_by, "segment_wall_s": round(time.perf_counter() - started, 1),
            "threads": torch.get_num_threads(),
        }
        score(mark_dir, splits, args, {**extra, "averaged": 1})
        if args.average > 1 and len(numbered_checkpoints(run_dir)) > 1:
            paths = numbered_checkpoints(run_dir)[-args.average:]
            avg_dir = average_checkpoints(paths, run_dir / "marks" / f"{mark_name(minutes)}-avg{len(paths)}")
            if (paths[-1] / SOURCE_TOKENIZER_FILE).is_file():
                shutil.copy2(paths[-1] / SOURCE_TOKENIZER_FILE, avg_dir / SOURCE_TOKENIZER_FILE)
            score(avg_dir, splits, args, {**extra, "averaged": len(paths)})
        if result.stopped_by not in ("max_time", "pause"):
            print(f"training stopped by {result.stopped_by} before {minutes} minutes; no further marks", file=sys.stderr)
            break


if __name__ == "__main__":
    main()
