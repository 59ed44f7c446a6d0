"""nanoformer's BERT encoder versus Hugging Face BertForMaskedLM, same shape and same weights.

Side by side in one process, interleaved (see common.py), fp32:
- training: one masked-LM step (forward, loss on the 15% masked positions, backward, AdamW) on a
  batch of 16 × 256 tokens. Hugging Face computes the vocabulary logits at every position and
  ignores the unmasked ones; our recipe's loss (`recipes.mlm.mlm_loss`) runs the MLM head on the
  masked positions only. Both are measured for us: `nanoformer` (the recipe's step) and
  `nanoformer_full_logits` (the same work as Hugging Face), so the two effects can be told apart.
- inference, under inference_mode: the MLM logits of every position; ours at the 15% masked
  positions only (`masked_positions`, what `fill-mask` and `evaluate` do; Hugging Face's fill-mask
  pipeline computes them all and picks the masks); and the token states alone (`encode`, what
  embeddings and classifiers use).
Tokens/s counts all tokens of the batch (16 × 256 = 4096 per step).

    python benchmarks/bert_vs_hf.py --out benchmarks/results.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak_gflops, median, time_interleaved, write_result  # noqa: E402

from nanoformer.interop import from_hf  # noqa: E402
from nanoformer.recipes.mlm import mlm_loss  # noqa: E402


def build_models(args: argparse.Namespace):
    from transformers import BertConfig, BertForMaskedLM

    hf_config = BertConfig(
        vocab_size=args.vocab, hidden_size=args.d_model, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=args.d_ff, max_position_embeddings=512, type_vocab_size=2,
        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout,
    )
    hf = BertForMaskedLM._from_config(hf_config, attn_implementation=args.hf_attention)
    ours = from_hf(hf)  # the same weights
    return hf, ours


def make_batch(args: argparse.Namespace, generator: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(7, args.vocab, (args.batch, args.context), generator=generator)
    selected = torch.rand(ids.shape, generator=generator) < 0.15
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    inputs = torch.where(selected, torch.full_like(ids, 4), ids)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    types[:, args.context // 2:] = 1
    return {"input_ids": inputs, "attention_mask": mask, "token_type_ids": types, "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--d-model", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--d-ff", type=int, default=1536)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--dropout", type=float, default=0.1, help="BERT's 0.1 on both sides while training")
    parser.add_argument("--hf-attention", default="sdpa", choices=["sdpa", "eager"], help="Hugging Face's attention")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_peak_gflops() if args.device == "cpu" else None
    hf, ours = build_models(args)
    device = torch.device(args.device)
    hf, ours = hf.to(device), ours.to(device)
    batch = {k: v.to(device) for k, v in make_batch(args, torch.Generator().manual_seed(0)).items()}
    tokens = args.batch * args.context
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    shape = {k: getattr(args, k) for k in ("layers", "d_model", "heads", "d_ff", "vocab", "batch", "context", "dropout")}

    if not args.skip_train:
        hf.train()
        ours.train()
        hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-5, foreach=True)
        our_opt = torch.optim.AdamW(ours.parameters(), lr=1e-5, foreach=True)

        def hf_step() -> None:
            hf(**batch).loss.backward()
            hf_opt.step()
            hf_opt.zero_grad(set_to_none=True)
            sync()

        def our_step() -> None:
            mlm_loss(ours, batch).backward()
            our_opt.step()
            our_opt.zero_grad(set_to_none=True)
            sync()

        def our_full_step() -> None:
            logits = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            torch.nn.functional.cross_entropy(logits.reshape(-1, args.vocab), batch["labels"].reshape(-1)).backward()
            our_opt.step()
            our_opt.zero_grad(set_to_none=True)
            sync()

        times = time_interleaved({"hf": hf_step, "nanoformer": our_step, "nanoformer_full_logits": our_full_step},
                                 rounds=args.rounds)
        result = {"phase": "train_mlm_step", "shape": shape, "hf_attention": args.hf_attention, "device": args.device,
                  "threads": torch.get_num_threads(), "rounds": args.rounds}
        if peak:
            result["matmul_peak_gflops"] = round(peak, 1)
        for name, values in times.items():
            result[f"{name}_tokens_per_s"] = round(tokens / median(values), 1)
        for name in ("nanoformer", "nanoformer_full_logits"):
            result[f"ratio_{name}"] = round(result[f"{name}_tokens_per_s"] / result["hf_tokens_per_s"], 3)
        write_result("bert_vs_hf", result, args.out)

    if not args.skip_inference:
        ours = from_hf(hf).to(device)  # training moved the two apart: the same weights again
        hf.eval()
        ours.eval()
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        selected = batch["labels"] != -100

        def run(fn):
            def call() -> None:
                with torch.inference_mode():
                    fn()
                sync()
            return call

        runners = {
            "hf_logits": run(lambda: hf(**inputs).logits),
            "nanoformer_logits": run(lambda: ours(**inputs)),
            "nanoformer_masked_logits": run(lambda: ours(**inputs, masked_positions=selected)),
            "hf_hidden": run(lambda: hf.bert(**inputs).last_hidden_state),
            "nanoformer_hidden": run(lambda: ours.encode(**inputs)),
        }
        with torch.inference_mode():  # the two agree before they race
            diff = (hf(**inputs).logits - ours(**inputs)).abs().max().item()
        times = time_interleaved(runners, rounds=args.rounds)
        result = {"phase": "inference", "shape": shape, "hf_attention": args.hf_attention, "device": args.device,
                  "threads": torch.get_num_threads(), "rounds": args.rounds, "max_abs_logit_diff": diff}
        for name, values in times.items():
            result[f"{name}_tokens_per_s"] = round(tokens / median(values), 1)
        result["ratio_logits"] = round(result["nanoformer_logits_tokens_per_s"] / result["hf_logits_tokens_per_s"], 3)
        result["ratio_masked_logits"] = round(
            result["nanoformer_masked_logits_tokens_per_s"] / result["hf_logits_tokens_per_s"], 3)
        result["ratio_hidden"] = round(result["nanoformer_hidden_tokens_per_s"] / result["hf_hidden_tokens_per_s"], 3)
        write_result("bert_vs_hf", result, args.out)


if __name__ == "__main__":
    main()
