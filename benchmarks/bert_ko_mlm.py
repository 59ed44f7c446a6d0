"""Masked-token accuracy after equal training time: our BERT versus Hugging Face's, on Korean.

Both models start from the same weights (HF's is `to_hf(ours)`) and train in one process on the
same Korean corpus, data pipeline and masking draws as `configs/bert_mlm_ko.toml` (in the fixed
post-LN bert-mini shape it shipped before `size = "auto"`: benchmarks/bert_budget.py's FIXED), with the
same optimiser (AdamW with weight decay on matrices), learning rate and schedule (linear warm-up,
then a cosine that follows the fraction of the time budget spent). Steps alternate between the two
(so machine noise hits both alike), and each side has its own clock: it stops when its own
training time reaches the budget. Each side trains as its library does:
- Hugging Face: `BertForMaskedLM(**batch).loss` (vocabulary logits at every position, SDPA attention);
- nanoformer: `recipes.mlm.mlm_loss` (the MLM head on the masked positions only).
Both then score the same held-out batches with fixed masks: masked-token accuracy and loss.

    python benchmarks/bert_ko_mlm.py --minutes 10 --out benchmarks/results/bert_ko_mlm.jsonl
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bert_budget import FIXED  # noqa: E402
from common import sized_config, write_result  # noqa: E402

from nanoformer.data.masking import Masker  # noqa: E402
from nanoformer.data.mlm import MLMBatches, build_sequences, sequences_from_config  # noqa: E402
from nanoformer.evaluation.mlm import evaluate_mlm  # noqa: E402
from nanoformer.interop import to_hf  # noqa: E402
from nanoformer.models import EncoderModel  # noqa: E402
from nanoformer.recipes.mlm import encoder_config, mlm_loss, train_tokenizer  # noqa: E402
from nanoformer.training.optim import param_groups  # noqa: E402
from nanoformer.training.schedules import set_lr, warmup_cosine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


class Side:
    """One model in training: its optimiser, its clock and its own copy of the batch stream."""

    def __init__(self, name: str, model: torch.nn.Module, loss_fn, batches: MLMBatches, args) -> None:
        self.name, self.model, self.loss_fn, self.batches, self.args = name, model, loss_fn, batches, args
        self.optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.999),
                                           foreach=True)
        self.elapsed, self.steps, self.last_loss = 0.0, 0, float("nan")

    def step(self, budget: float) -> None:
        batch = self.batches.next_batch()  # data preparation is not timed: it is the same code for both
        start = time.perf_counter()
        lr = warmup_cosine(self.steps, self.args.lr, self.args.min_lr, self.args.warmup_steps, 10**9,
                           time_fraction=self.elapsed / budget)
        set_lr(self.optimizer, lr)
        self.model.train()
        loss = self.loss_fn(self.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.steps > 0:  # the first step warms the allocator up; it is not timed (on both sides)
            self.elapsed += time.perf_counter() - start
        self.steps += 1
        self.last_loss = loss.item()


def hf_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


class MaskedLogits(torch.nn.Module):
    """HF's `BertForMaskedLM` behind our `masked_positions` interface, so one evaluation serves both."""

    def __init__(self, hf: torch.nn.Module) -> None:
        super().__init__()
        self.hf = hf

    def forward(self, masked_positions: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self.hf(**inputs).logits[masked_positions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "bert_mlm_ko.toml"))
    parser.add_argument("--minutes", type=float, default=10.0, help="training time per side")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--min-lr", type=float, default=5e-5)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--eval-batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-bert-ko"), help="tokenizer and token cache")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "NANOFORMER_DATA" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
        os.environ["NANOFORMER_DATA"] = str(ROOT.parent / "shared" / "data")

    run = sized_config(Path(args.config), "fixed", FIXED)  # bert-mini as BERT (post-LN), which HF's BertForMaskedLM holds
    data = run.data
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    files = sequences_from_config(data, run.source.parent)
    tokenizer = train_tokenizer(data, files, progress=False)
    splits = build_sequences(files, tokenizer, data, work / "data", seed=run.train.seed)
    config = encoder_config(run.model, tokenizer)

    def batches() -> MLMBatches:
        masker = Masker(tokenizer, data.mask_prob, data.mask_token_prob, data.random_token_prob, data.whole_word_mask)
        return MLMBatches(splits, tokenizer, masker, run.train.batch_size, args.eval_batches, seed=run.train.seed)

    torch.manual_seed(run.train.seed)
    ours = EncoderModel(config)
    hf = to_hf(ours)  # the same initial weights
    hf.config._attn_implementation = "sdpa"
    sides = [Side("hf", hf, hf_loss, batches(), args), Side("nanoformer", ours, mlm_loss, batches(), args)]
    budget = args.minutes * 60
    last_report = time.perf_counter()
    while any(side.elapsed < budget for side in sides):
        for side in sides:
            if side.elapsed < budget:
                side.step(budget)
        if time.perf_counter() - last_report > 60:
            last_report = time.perf_counter()
            print("  ".join(f"{s.name}: {s.steps} steps, {s.elapsed / 60:.1f} min, loss {s.last_loss:.3f}"
                            for s in sides), flush=True)

    result = {"phase": "mlm_equal_time", "config": Path(args.config).name, "minutes_per_side": args.minutes,
              "batch_size": run.train.batch_size, "max_length": data.max_length, "vocab": tokenizer.vocab_size,
              "whole_word_mask": data.whole_word_mask, "lr": args.lr, "threads": torch.get_num_threads(),
              "train_sequences": len(splits["train"]), "val_sequences": len(splits["val"])}
    for side in sides:
        result[f"{side.name}_steps"] = side.steps
        result[f"{side.name}_train_loss_last"] = round(side.last_loss, 4)
        model = MaskedLogits(side.model) if side.name == "hf" else side.model
        scores = evaluate_mlm(model, batches().eval_batches("val", args.eval_batches))
        result[f"{side.name}_masked_accuracy"] = round(scores.accuracy, 4)
        result[f"{side.name}_masked_loss"] = round(scores.loss, 4)
        result[f"{side.name}_masked_tokens"] = scores.masked_tokens
    write_result("bert_ko_mlm", result, args.out)


if __name__ == "__main__":
    main()
