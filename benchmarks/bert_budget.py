"""Korean BERT for a time budget: `size = "auto"` against the fixed bert-mini shape, same minutes.

Trains configs/bert_mlm_ko.toml for --minutes of training time, either sized for them (`--size
auto`) or with the fixed shape the config shipped before it was sized (`--size fixed`: bert-mini,
4 x 256, post-LN, batches of 64 x 128 tokens, lr 5e-4 after a 1,000-step warm-up). Then it scores the last
checkpoint on the whole validation split with fixed masks, the same for both sides (the same
sequences, batches of 64): masked-token loss (nats) and accuracy. One JSON line per run.

Run the two sides side by side at one thread each, so the machine's load hits both alike:

    python benchmarks/bert_budget.py --minutes 10 --size auto --threads 1 --run-dir /tmp/bert-auto10 \
        --out benchmarks/results/bert_budget.jsonl &
    python benchmarks/bert_budget.py --minutes 10 --size fixed --threads 1 --run-dir /tmp/bert-fixed10 \
        --out benchmarks/results/bert_budget.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import sized_config, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "bert_mlm_ko.toml"
# The shape and schedule configs/bert_mlm_ko.toml gave before `size = "auto"` (bert-mini as BERT: post-LN).
FIXED = {
    "model": {"d_model": 256, "n_layers": 4, "n_heads": 4, "d_ff": 1024, "max_positions": 128, "norm_position": "post"},
    "data": {"max_length": 128},
    "train": {"batch_size": 64, "lr": 5e-4, "min_lr": 5e-5, "warmup_steps": 1000, "max_steps": 10_000_000},
}
EVAL_BATCH = 64


def budget_config(config: Path, size: str, minutes: float):
    """The config for `minutes` of training, sized (`size` = auto or a rung) or with the FIXED shape."""
    return sized_config(config, size, FIXED, [f'train.max_time="{minutes * 60:.0f}s"'])


def masked_lm_scores(run, run_dir: Path) -> dict:
    """Masked-token loss and accuracy of RUN/checkpoints/last over the whole validation split."""
    import nanoformer
    from nanoformer.data.masking import Masker
    from nanoformer.data.mlm import MLMBatches, build_sequences, label_first_files, sequences_from_config
    from nanoformer.evaluation.mlm import evaluate_mlm

    model, tokenizer = nanoformer.load(run_dir / "checkpoints" / "last")
    saved = json.loads((run_dir / "checkpoints" / "last" / "config.json").read_text())
    data = dataclasses.replace(run.data, max_length=saved["data"]["max_length"])
    base_dir = run.source.parent if run.source else None
    splits = build_sequences(sequences_from_config(data, base_dir), tokenizer, data, run_dir / "data",
                             seed=run.train.seed, label_first=label_first_files(data, base_dir))
    masker = Masker(tokenizer, data.mask_prob, data.mask_token_prob, data.random_token_prob, data.whole_word_mask)
    val = MLMBatches({"val": splits["val"]}, tokenizer, masker, EVAL_BATCH, seed=run.train.seed,
                     token_types=model.config.type_vocab_size > 0)
    result = evaluate_mlm(model, val.eval_batches("val", None))
    return {"val_masked_loss": round(result.loss, 4), "val_masked_accuracy": round(result.accuracy, 4),
            "val_masked_tokens": result.masked_tokens, "val_sequences": len(splits["val"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--minutes", type=float, required=True, help="training budget (minutes of training time)")
    parser.add_argument("--size", default="auto", help="'auto', a rung of the encoder ladder, or 'fixed'")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--out", default=None, help="append the JSON line here too")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    import torch

    from nanoformer.recipes import train
    from nanoformer.training.checkpoint import read_trainer_state

    if args.threads:
        torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists; choose another --run-dir")
    run = budget_config(Path(args.config), args.size, args.minutes)
    started = time.perf_counter()
    result = train(run, run_dir, progress=args.progress)
    state = read_trainer_state(run_dir / "checkpoints" / "last")
    size_file = run_dir / "size.json"
    write_result("bert_budget", {
        "config": Path(args.config).name, "size": args.size,
        "size_record": json.loads(size_file.read_text()) if size_file.is_file() else None,
        "minutes": args.minutes, "step": result.step, "tokens_seen": result.tokens_seen,
        "train_elapsed_s": round(state["elapsed_s"], 1), "trainer_val_loss": state.get("last_val_loss"),
        "stopped_by": result.stopped_by, "wall_s": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(), **masked_lm_scores(run, run_dir),
    }, args.out)


if __name__ == "__main__":
    main()
