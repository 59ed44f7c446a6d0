"""The scaling study behind `size = "auto"`: validation loss against parameters and tokens, and its fit.

Each point trains one rung of the family's ladder for a number of
tokens, its cosine annealed over exactly those steps, from the shipped config with the shape
replaced (nanoformer/recipes/ladders.py); it then scores the whole validation split (every token once). Points are runs of a
fixed number of steps, not of a time, so their losses do not depend on how busy the machine was;
each also records its wall time and the speed probe's step time, which calibrate the probe.

    python benchmarks/scaling_study.py --out benchmarks/results/scaling_study.jsonl        # run missing points
    python benchmarks/scaling_study.py --out benchmarks/results/scaling_study.jsonl --fit  # fit L(N, D), print it
    python benchmarks/scaling_study.py --out ... --fit --write    # and store it where `size = "auto"` reads it

Interrupted, it resumes: points already in --out are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402
from shakespeare import full_validation_loss  # noqa: E402

from nanoformer.recipes import train  # noqa: E402
from nanoformer.recipes.budget import find_rung  # noqa: E402
from nanoformer.recipes.ladders import LADDERS  # noqa: E402
from nanoformer.recipes.scaling_law import LossPoint, fit_scaling_law  # noqa: E402
from nanoformer.recipes.speed_probe import probe_step_times  # noqa: E402
from nanoformer.run_config import build_run_config, drop_sized_keys, tomllib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"decoder": ROOT / "configs" / "shakespeare_char.toml",
           "encoder-decoder": ROOT / "configs" / "multi30k_de_en.toml",
           "encoder": ROOT / "configs" / "bert_mlm_ko.toml"}
CORPORA = {"decoder": "Tiny Shakespeare, characters; mean cross-entropy (nats) over the whole validation split",
           "encoder-decoder": "Multi30k de-en, 8k joint BPE; mean target-token cross-entropy (nats, no smoothing) "
                              "over the whole val split; D counts padded batch tokens (4,096 a step)",
           "encoder": "Korean text (NSMC reviews, KorQuAD paragraphs, StyleKQC), 16k WordPiece, whole-word masking; "
                      "masked-token cross-entropy (nats) over the whole val split with fixed masks; D counts "
                      "every token of a batch (4,096 a step)"}
# Millions of training tokens per rung: three each, a factor of 3 apart, sized so that one point
# takes one to eight minutes on a 2-core CPU.
GRID = {
    "decoder": {
        "2x64-c64": (1.0, 3.0, 9.0),
        "4x128-c64": (1.0, 3.0, 6.0),
        "4x192-c128": (0.5, 1.5, 4.5),
        "4x256-c128": (0.5, 1.5, 4.0),
        "6x384-c256": (0.3, 1.0),
    },
    # 400, 1,200 and 2,400 steps of 4,096 tokens: a 2-core CPU's 10 to 60 minutes.
    "encoder-decoder": {
        "3x128": (1.6384, 4.9152, 9.8304),
        "3x192": (1.6384, 4.9152, 9.8304),
        "3x256": (1.6384, 4.9152),
    },
    # 1,000, 3,000 and 6,000 steps of 32 x 128 tokens: long enough to leave the masked-LM plateau.
    "encoder": {
        "2x128": (4.096, 12.288, 24.576),
        "4x128": (4.096, 12.288),
        "4x256": (4.096, 12.288),
    },
}


def point_config(family: str, rung_name: str, tokens: float, eval_interval: int | None = None):
    """The shipped config with the rung as its shape, for `tokens` training tokens and no time limit;
    evaluated at the end, or also every `eval_interval` steps to see the curve (the loss is the last)."""
    path = CONFIGS[family]
    sections = tomllib.loads(path.read_text(encoding="utf-8"))
    drop_sized_keys(sections)
    sections["train"].pop("max_time", None)
    rung = find_rung(sections["model"].get("arch", family), rung_name)
    steps = max(1, round(tokens / rung.tokens_per_step))
    sections["model"]["size"] = rung_name
    sections["train"].update(max_steps=steps, eval_interval=min(steps, eval_interval or steps),
                             log_interval=max(1, steps // 20))
    if family == "encoder-decoder":  # plain tokens: R-Drop's second pass would make a step count twice
        sections["train"].update(rdrop=0.0, rdrop_from=0.0, keep_last=1)
    return build_run_config(sections, source=path), rung, steps


def run_point(family: str, rung_name: str, millions: float, workdir: Path, out: str | None,
              eval_interval: int | None = None) -> None:
    run, rung, steps = point_config(family, rung_name, millions * 1e6, eval_interval)
    run_dir = workdir / f"{rung_name}-{millions:g}M"
    probe = probe_step_times(run, [rung], vocab_size=65 if family == "decoder" else run.data.vocab_size)[rung.name]
    start = time.perf_counter()
    result = train(run, run_dir, progress=False)
    wall = time.perf_counter() - start
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_s = max(m.get("elapsed_s", 0.0) for m in metrics)
    write_result("scaling_study", {
        "family": family, "rung": rung_name, "n_params": rung.n_params, "tokens": steps * rung.tokens_per_step,
        "steps": result.step, "full_val_loss": final_val_loss(family, run_dir, metrics),
        "wall_s": round(wall, 1), "train_s": round(train_s, 1), "step_s": round(train_s / max(1, result.step), 5),
        "probe_step_s": round(probe, 5), "batch_size": run.train.batch_size, "lr": run.train.lr,
        "val_curve": [[m["step"], round(m["val_loss"], 4)] for m in metrics if m.get("val_loss") is not None],
    }, out)


def final_val_loss(family: str, run_dir: Path, metrics: list[dict]) -> float:
    """The whole validation split's loss at the end: a translator's or encoder's trainer already
    scores every val batch (eval_batches exceeds them; an encoder's masks are fixed, and alike for
    every rung, which all batch 64 sequences), so its last val_loss is that; a language model's is
    scored again over every token."""
    if family in ("encoder-decoder", "encoder"):
        return round([m["val_loss"] for m in metrics if m.get("val_loss") is not None][-1], 4)
    return full_validation_loss(run_dir)["full_val_loss"]


def study_rows(out: str | Path, family: str | None = None) -> list[dict]:
    """The study's points in `out`, without those a later recipe superseded (they keep a
    "superseded" note saying why, and stay as the record of what was measured)."""
    lines = [json.loads(line) for line in Path(out).read_text().splitlines() if line.strip()]
    return [r for r in lines if r.get("benchmark") == "scaling_study" and not r.get("superseded")
            and (family is None or r["family"] == family)]


def done_points(out: str | None) -> set[tuple[str, str, int]]:
    if not out or not Path(out).is_file():
        return set()
    return {(r["family"], r["rung"], r["tokens"]) for r in study_rows(out)}


def fit(family: str, out: str, write: bool = False) -> None:
    rows = study_rows(out, family)
    law = fit_scaling_law([LossPoint(r["n_params"], r["tokens"], r["full_val_loss"]) for r in rows])
    print(f"{family}: L(N, D) = {law.E:.4f} + {law.A:.4g} / N^{law.alpha:.4f} + {law.B:.4g} / D^{law.beta:.4f}")
    print(json.dumps(law.to_dict()))
    if write:
        from nanoformer.recipes.budget import LAWS_FILE

        laws = json.loads(LAWS_FILE.read_text(encoding="utf-8")) if LAWS_FILE.is_file() else {}
        first = rows[0]
        laws[family] = {**law.to_dict(), "corpus": CORPORA[family], "runs": len(rows),
                        "fitted": time.strftime("%Y-%m-%d"), "command": f"python benchmarks/scaling_study.py --family {family} --fit --out {out}",
                        "cpu": first.get("cpu"), "cpu_family_model": first.get("cpu_family_model")}
        LAWS_FILE.write_text(json.dumps(laws, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {LAWS_FILE}")
    print("| rung | N | tokens | measured | fitted | step (run) | step (probe) |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["n_params"], r["tokens"])):
        print(f"| {r['rung']} | {r['n_params']:,} | {r['tokens'] / 1e6:.2f}M | {r['full_val_loss']:.4f} | "
              f"{law.predict(r['n_params'], r['tokens']):.4f} | {r['step_s'] * 1000:.0f} ms | {r['probe_step_s'] * 1000:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(GRID), default="decoder")
    parser.add_argument("--only", default=None, help="one rung, e.g. 4x256-c128")
    parser.add_argument("--millions", type=float, default=None, help="one point of the rung's grid (millions of tokens)")
    parser.add_argument("--fit", action="store_true", help="fit the law to the points in --out and print it")
    parser.add_argument("--write", action="store_true", help="with --fit: store it in nanoformer/recipes/scaling_laws.json")
    parser.add_argument("--workdir", default=None, help="where runs go (default: a temporary folder)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--eval-interval", type=int, default=None,
                        help="also score the val split every N steps, to see the curve (default: at the end only)")
    args = parser.parse_args()
    if args.fit:
        fit(args.family, args.out, write=args.write)
        return
    assert set(GRID[args.family]) <= {r.name for r in LADDERS[args.family]}
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="scaling-study-"))
    done = done_points(args.out)
    for rung_name, grid in GRID[args.family].items():
        if args.only and rung_name != args.only:
            continue
        for millions in grid:
            if args.millions is not None and millions != args.millions:
                continue
            run, rung, steps = point_config(args.family, rung_name, millions * 1e6)
            if (args.family, rung_name, steps * rung.tokens_per_step) in done:
                continue
            run_point(args.family, rung_name, millions, workdir, args.out, args.eval_interval)


if __name__ == "__main__":
    main()
