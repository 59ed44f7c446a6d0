"""kill -9 during training, 20 times, some kills inside checkpoint writes: every time the run
resumes from its last complete checkpoint, no checkpoint is ever half-written, and every logged
loss equals an uninterrupted run's at the same step.

A small character GPT trains on the start of Tiny Shakespeare for --steps steps, writing
`checkpoints/last` every --every steps (so kills often land inside a write). One run goes
uninterrupted; the other is started, killed with SIGKILL, checked and resumed (`--resume`), --kills
times: odd kills at a random moment of training, even kills the moment a checkpoint write has
begun (its `.last.tmp` folder appears). After each kill, `checkpoints/last` and `checkpoints/best`
must pass their checksums and load. Bounded: at most --kills + 2 processes, each with a time limit.

    python benchmarks/kill9_resume.py --out benchmarks/results/kill9_resume.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from nanoformer.data.text import find_data_file  # noqa: E402
from nanoformer.training.checkpoint import read_trainer_state, resolve_checkpoint  # noqa: E402
from nanoformer.training.checksums import CHECKSUMS_FILE, verify_files  # noqa: E402

CONFIG = """
[model]
arch = "decoder"
d_model = 64
n_heads = 4
n_layers = 2
d_ff = 256
max_positions = 64
dropout = 0.1

[data]
path = "corpus.txt"
tokenizer = "char"
block_size = 64

[train]
max_steps = {steps}
batch_size = 8
lr = 2e-3
schedule = "inverse_sqrt"
warmup_steps = 10
eval_interval = 40
eval_batches = 2
log_interval = 1
checkpoint_interval = {every}
device = "cpu"
"""
TRAIN = [sys.executable, "-c", "import sys; from nanoformer.cli import main; sys.exit(main())", "train"]


def losses(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]


def check_checkpoints(run_dir: Path) -> int:
    """Both checkpoints complete (every file matches its checksum, the weights load); the last one's step."""
    for name in ("last", "best"):
        folder = run_dir / "checkpoints" / name
        if not (folder.exists() or (run_dir / "checkpoints" / f".{name}.old").exists()):
            continue
        folder = resolve_checkpoint(folder)  # also finishes a swap interrupted between its two renames
        files = json.loads((folder / CHECKSUMS_FILE).read_text())["files"]
        verify_files(folder, sorted(files))
        assert sorted(files) == sorted(p.name for p in folder.iterdir() if p.name != CHECKSUMS_FILE), folder
    if not (run_dir / "checkpoints" / "last").exists():
        return 0
    return int(read_trainer_state(run_dir / "checkpoints" / "last")["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--every", type=int, default=3, help="checkpoint interval in steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        text = find_data_file("tinyshakespeare/input.txt").read_text(encoding="utf-8")[:200_000]
        (root / "corpus.txt").write_text(text, encoding="utf-8")
        config = root / "kill.toml"
        config.write_text(CONFIG.format(steps=args.steps, every=args.every), encoding="utf-8")
        started = time.perf_counter()
        subprocess.run([*TRAIN, str(config), "--out", str(root / "whole"), "--quiet"], check=True, env=env, timeout=900)
        reference = dict(losses(root / "whole"))
        whole_seconds = time.perf_counter() - started

        run_dir, kills, in_write, resumed_from = root / "killed", [], 0, []
        for number in range(1, args.kills + 1):
            command = [*TRAIN, str(config), "--out", str(run_dir), "--quiet"]
            if (run_dir / "checkpoints").exists():
                command.append("--resume")
            before = len(losses(run_dir))
            process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 120
            while len(losses(run_dir)) <= before and process.poll() is None and time.time() < deadline:
                time.sleep(0.01)  # wait for this process's first training step
            mode = "in-write" if number % 2 == 0 else "random"
            if mode == "random":
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                tmp_folder = run_dir / "checkpoints" / ".last.tmp"
                while not tmp_folder.exists() and process.poll() is None and time.time() < deadline:
                    time.sleep(0.0005)
            finished = process.poll() is not None
            if not finished:
                process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            if finished:
                raise SystemExit(f"the run ended before kill {number}: use more --steps "
                                 f"({process.stderr.read()[-500:]})")
            in_write += mode == "in-write" and (run_dir / "checkpoints" / ".last.tmp").exists()
            step = check_checkpoints(run_dir)
            kills.append({"kill": number, "mode": mode, "last_checkpoint_step": step,
                          "steps_logged": len(losses(run_dir))})
            resumed_from.append(step)
        final = subprocess.run([*TRAIN, str(config), "--out", str(run_dir), "--quiet", "--resume"], env=env,
                               capture_output=True, text=True, timeout=900)
        assert final.returncode == 0, final.stderr[-2000:]
        check_checkpoints(run_dir)
        logged = losses(run_dir)
        mismatched = [(step, loss, reference.get(step)) for step, loss in logged if reference.get(step) != loss]
        steps_seen = {step for step, _ in logged}
        write_result("kill9_resume", {
            "kills": args.kills, "kills_inside_a_write": int(in_write), "steps": args.steps,
            "checkpoint_every": args.every, "resumed_from_steps": resumed_from,
            "losses_logged": len(logged), "losses_equal_to_uninterrupted": len(logged) - len(mismatched),
            "mismatched": mismatched[:5], "every_step_logged": steps_seen == set(reference),
            "uninterrupted_seconds": round(whole_seconds, 1), "details": kills,
        }, args.out)
        if mismatched or steps_seen != set(reference):
            raise SystemExit("FAILED: resumed losses differ from the uninterrupted run")
        print(f"{args.kills} kills ({in_write} inside a checkpoint write): every resume exact, "
              f"{len(logged)} logged losses equal the uninterrupted run's", file=sys.stderr)


if __name__ == "__main__":
    main()
