"""Does warm-starting help a Korean -> English translator? A reduced-scale ablation, measured.

The full recipe (benchmarks/ko_en.py) takes two hours, so each of its questions costs a session.
This asks the first one cheaply: with the translator's own training time held equal, does a
translator whose encoder and decoder start from pre-trained runs (encoder_ko.toml, decoder_en.toml)
beat the same shape with random weights (translator_random.toml) and today's from-scratch
configs/ko_en.toml? Each arm is scored with sacreBLEU and chrF, beam 4, on JHE eval and the Park
news test set, and its translations of the note's two sentences are recorded.

    python benchmarks/ko_en_warm_start.py --run-dir runs/ko-en-warm-start \
        --out benchmarks/results/ko_en_warm_start.jsonl
    python benchmarks/ko_en_warm_start.py --run-dir runs/ko-en-warm-start --no-train --out ...  # score only

The pre-trained parts are the recipe's configs with shorter budgets and the encoder changes the
recipe's first run pointed to (a lossless 8k unigram vocabulary instead of 16k WordPiece, so no
whole-word masking; a higher peak rate and a shorter warm-up for a short run). The translators
use dropout 0.3, as ko_en.toml does on these 7k pairs. Pre-training time is not charged to the
warm arm here: this measures what the pre-trained weights are worth per minute of translator
training, not the recipe at equal total time (that is benchmarks/ko_en.py --variant).
Run it on an otherwise idle machine: every stage trains for a fixed time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peaks, write_result  # noqa: E402
from ko_en import note_translations  # noqa: E402

from nanoformer.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def arms(run_dir: Path, translator_minutes: float, encoder_minutes: float,
         decoder_minutes: float) -> dict[str, tuple[Path, list[str]]]:
    """name -> (config, --set overrides), in training order (the warm arm needs enc and dec first)."""
    minutes = f"train.max_time='{translator_minutes:g}m'"
    return {
        "scratch": (CONFIGS / "ko_en.toml", [minutes, "train.max_steps=100000"]),
        "enc": (CONFIGS / "ko_en" / "encoder_ko.toml",
                [f"train.max_time='{encoder_minutes:g}m'", "data.tokenizer='unigram'", "data.vocab_size=8000",
                 "data.whole_word_mask=false", "train.lr=1e-3", "train.warmup_steps=200"]),
        "dec": (CONFIGS / "ko_en" / "decoder_en.toml",
                [f"train.max_time='{decoder_minutes:g}m'", "train.warmup_steps=200"]),
        "warm": (CONFIGS / "ko_en" / "translator.toml",
                 [minutes, "model.dropout=0.3", f"model.init_encoder='{run_dir / 'enc'}'",
                  f"model.init_decoder='{run_dir / 'dec'}'"]),
        "random": (CONFIGS / "ko_en" / "translator_random.toml", [minutes]),
    }


def train(run_dir: Path, plan: dict[str, tuple[Path, list[str]]]) -> None:
    """Train each arm not yet done (a `done` marker), resuming one that was interrupted."""
    for name, (config, sets) in plan.items():
        folder = run_dir / name
        if (folder / "done").is_file():
            continue
        command = ["train", str(config), "--out", str(folder), "--quiet"]
        command += [flag for value in sets for flag in ("--set", value)]
        if (folder / "checkpoints").is_dir():
            command.append("--resume")
        if main(command) != 0:
            raise SystemExit(f"training {name} failed")
        (folder / "done").write_text("", encoding="utf-8")


def training_record(folder: Path) -> dict:
    """Steps, minutes and the last training loss, from the run's metrics.jsonl."""
    from nanoformer.viz.metrics import read_metrics

    rows = read_metrics(folder)
    trained = [row for row in rows if "train_loss" in row]
    evals = [row["val_loss"] for row in rows if "val_loss" in row]
    return {"steps": trained[-1]["step"], "minutes": round(trained[-1]["elapsed_s"] / 60, 2),
            "last_train_loss": round(trained[-1]["train_loss"], 3),
            "best_val_loss": round(min(evals), 3) if evals else None}


def scores(folder: Path) -> dict:
    """sacreBLEU and chrF with signatures, beam 4, on the run's validation and test splits (its best
    checkpoint), scored as the recipe's `evaluate` stage scores them."""
    from nanoformer.recipes.translation import translation_scores
    from nanoformer.training.checkpoint import resolve_checkpoint

    results = translation_scores(folder, ["val", "test"], beam_size=4)
    return {"checkpoint": resolve_checkpoint(folder).name} | {split: {key: result[key] for key in ("bleu", "chrf", "signature", "chrf_signature") if key in result}
            for split, result in results.items()}


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "ko-en-warm-start"))
    parser.add_argument("--translator-minutes", type=float, default=10.0)
    parser.add_argument("--encoder-minutes", type=float, default=12.0)
    parser.add_argument("--decoder-minutes", type=float, default=8.0)
    parser.add_argument("--no-train", action="store_true", help="score the arms already trained in --run-dir")
    parser.add_argument("--out", help="append the result line here (JSON lines)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir).resolve()
    plan = arms(run_dir, args.translator_minutes, args.encoder_minutes, args.decoder_minutes)
    if not args.no_train:
        train(run_dir, plan)
    translators = ("scratch", "warm", "random")
    result = {
        "peaks_gflops": {name: round(value, 1) for name, value in matmul_peaks().items()},
        "minutes": {"translator": args.translator_minutes, "encoder": args.encoder_minutes,
                    "decoder": args.decoder_minutes},
        "commands": {name: [str(config.relative_to(ROOT)), *sets] for name, (config, sets) in plan.items()},
        "training": {name: training_record(run_dir / name) for name in plan},
        "scores": {name: scores(run_dir / name) for name in translators},
        "note_sentences": {name: note_translations(run_dir / name) for name in translators},
    }
    write_result("ko_en_warm_start", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main_())
