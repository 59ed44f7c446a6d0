"""SST-2 test accuracy with and without pre-training, over several fine-tuning seeds.

One fine-tuned run moves by a point or more with the seed alone (docs/benchmarks.md), so the
figure we report is the mean over seeds, for both arms of the comparison:
- pre-trained: `configs/sst2_finetune.toml` from `--init-from` (the task-adaptive round,
  `runs/sst2_mlm`, by default);
- no pre-training: the same config and recipe on a fresh encoder of the same shape
  (`--init-from none`, bert-mini, pre-LN) with its own WordPiece from SST-2's training sentences.

Each run is `nanoformer finetune`, so `RUN_DIR/eval.json` holds its dev and test scores (the
checkpoint chosen by dev accuracy, as the config says). A run whose eval.json exists is read,
not repeated: the command resumes a comparison that was cut short.

    python benchmarks/sst2.py --seeds 1337,7,42,123 --jobs 2 --out benchmarks/results/sst2.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ["--init-from", "none", "--set", "model.preset=bert-mini", "--set", "model.max_positions=128",
           "--set", "model.norm_position=pre"]


def finetune(run_dir: Path, arm_args: list[str], seed: int, extra: list[str], threads: int) -> dict:
    """The eval.json of one fine-tuning run, training it first unless it has finished before."""
    report = run_dir / "eval.json"
    if not report.is_file():
        command = [sys.executable, "-m", "nanoformer.cli", "finetune", str(ROOT / "configs" / "sst2_finetune.toml"),
                   *arm_args, "--set", f"train.seed={seed}", *extra, "--out", str(run_dir), "--quiet"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        with open(run_dir.parent / f"{run_dir.name}.log", "w", encoding="utf-8") as log:
            subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return json.loads(report.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1337,7,42,123")
    parser.add_argument("--init-from", default="runs/sst2_mlm", help="the pre-trained run to fine-tune")
    parser.add_argument("--runs", default="runs/sst2-bench", help="folder for the run folders")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="passed to every run (e.g. train.rdrop=0 for the recipe without R-Drop)")
    parser.add_argument("--out", default=None, help="append the result as a JSON line to this file")
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    extra = [item for value in args.set for item in ("--set", value)]
    tag = "".join(f"-{v.split('.')[-1].replace('=', '')}" for v in args.set)  # train.rdrop=0 -> -rdrop0
    runs = ROOT / args.runs
    runs.mkdir(parents=True, exist_ok=True)
    arms = {"pretrained": ["--init-from", args.init_from], "scratch": SCRATCH}
    jobs = {(arm, seed): runs / f"{arm}{tag}-{seed}" for arm in arms for seed in seeds}
    threads = max(1, (os.cpu_count() or 2) // max(1, args.jobs))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {key: pool.submit(finetune, folder, arms[key[0]], key[1], extra, threads)
                   for key, folder in jobs.items()}
        reports = {key: future.result() for key, future in futures.items()}

    result: dict = {"seeds": seeds, "init_from": args.init_from, "set": args.set}
    for arm in arms:
        test = [reports[arm, s]["test"]["accuracy"] for s in seeds]
        dev = [reports[arm, s]["dev"]["accuracy"] for s in seeds]
        result[arm] = {"test_accuracy": test, "dev_accuracy": dev,
                       "test_mean": round(statistics.mean(test), 4), "dev_mean": round(statistics.mean(dev), 4)}
        print(f"{arm:>10}: test {', '.join(f'{a:.2%}' for a in test)}; mean {statistics.mean(test):.2%} "
              f"(dev mean {statistics.mean(dev):.2%})", file=sys.stderr)
    write_result("sst2", result, args.out)


if __name__ == "__main__":
    main()
