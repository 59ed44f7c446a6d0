"""nanoformer's Seq2SeqTransformer versus Hugging Face's MarianMTModel of the same shape, side by side.

Shape: HF Marian's small translation shape, d_model 256, 3 + 3 layers, 4 heads, FFN 1024, a joint
byte-level BPE vocabulary of 8,000 tokens trained here on Multi30k de+en, fp32 on the CPU. Both
models hold the same weights: ours is built, HF's is its export (`to_hf`), so generation outputs
can be compared token for token.

Three measurements, each interleaved in one process (see common.py):
- training pairs/s: forward + label-smoothed (0.1) cross-entropy + backward + AdamW step, dropout
  0.1, AdamW fused (--optimizer; the default of both trainers), each side's loss as its library computes it in training (HF: logits, then
  F.cross_entropy; ours: `model(..., targets=)`, which never materialises the logits), on real
  Multi30k de->en pairs tokenised with that BPE, batched by length (a sorted pool cut at
  --max-tokens target tokens per batch, as fairseq's max_tokens; --sort longest batches as
  nanoformer's own sampler does, with far less source padding); one round runs the same
  --train-batches batches on each model;
- greedy and beam-4 sentences/s at batch 16 on the first sentences of test_2016_flickr.de, with
  opus-mt's generation settings on both sides (pad banned, eos forced at the limit, length_penalty
  1, HF's default early stopping) and the same max_new_tokens. With random weights (the default)
  no sentence ever chooses eos: every sentence runs to the limit on both sides, which measures
  the cost per step. --pretrain-steps 200 first trains the model briefly so that its outputs end
  like translations (about 5 to 30 tokens), which also measures what dropping finished sentences
  saves. Each line says whether both sides produced identical outputs, and their lengths.

    python benchmarks/translate_vs_hf.py --out benchmarks/results.jsonl
    python benchmarks/translate_vs_hf.py --skip-train --pretrain-steps 200
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peak_gflops, median, time_interleaved, write_result  # noqa: E402

from nanoformer.config import ModelConfig  # noqa: E402
from nanoformer.interop import to_hf  # noqa: E402
from nanoformer.kernels.gemm import set_gemm_backend  # noqa: E402
from nanoformer.models import Seq2SeqTransformer  # noqa: E402
from nanoformer.tokenizer import Tokenizer  # noqa: E402


def load_pairs(data: Path, tokenizer: Tokenizer, eos: int) -> list[tuple[list[int], list[int]]]:
    de = (data / "train.de").read_text(encoding="utf-8").splitlines()
    en = (data / "train.en").read_text(encoding="utf-8").splitlines()
    return [(s + [eos], t + [eos]) for s, t in zip(tokenizer.encode_batch(de), tokenizer.encode_batch(en))]


def profile_beam_search(model: Seq2SeqTransformer, src: torch.Tensor, mask: torch.Tensor, new: int, pad: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    def run() -> None:
        model.generate(src, new, mask, beam_size=4, bad_ids=[pad], force_eos=True, length_penalty=1.0, early_stopping=False)

    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            run()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def pad_right(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def length_batches(pairs, max_tokens: int, count: int, seed: int, pad: int, start: int, sort: str = "target"):
    """`count` batches by length: shuffle, sort a pool, cut at max_tokens.

    sort "target": by target then source length, max_tokens counting target tokens (the source
    side then keeps a third of padding); "longest": by the longer side, then target, then source,
    max_tokens counting the longer side, as nanoformer's TokenBatchSampler does (a few % padding).
    """
    rng = random.Random(seed)
    pool = rng.sample(pairs, min(len(pairs), 200 * count))

    def size(pair) -> int:
        return max(len(pair[0]), len(pair[1])) if sort == "longest" else len(pair[1])

    pool.sort(key=lambda p: (size(p), len(p[1]), len(p[0])))
    batches, current = [], []
    for pair in pool:
        width = max([size(pair)] + [size(p) for p in current])
        if current and width * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(pair)
    batches.append(current)
    chosen = rng.sample(batches, min(count, len(batches)))
    out = []
    for batch in chosen:
        src, src_mask = pad_right([p[0] for p in batch], pad)
        labels, _ = pad_right([p[1] for p in batch], pad)
        tgt_in = torch.cat([torch.full((len(batch), 1), start), labels[:, :-1]], dim=1)
        labels = labels.masked_fill(labels == pad, -100)
        out.append((src, src_mask, tgt_in, labels))
    return out


def train_round(model, optimizer, batches, hf: bool):
    def run() -> None:
        for src, src_mask, tgt_in, labels in batches:
            if hf:
                logits = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt_in).logits
                loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), label_smoothing=0.1,
                                       ignore_index=-100)
            else:  # the library's training loss (recipes/translation.py): the same value, no logits tensor
                loss = model(src, tgt_in, src_padding_mask=src_mask, targets=labels, label_smoothing=0.1)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return run


def pretrain(model: Seq2SeqTransformer, batches) -> None:
    """A short training run (AdamW 1e-3, 50 warm-up steps), so that generation ends like translation does."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
    model.train()
    for batch in batches:
        train_round(model, optimizer, [batch], hf=False)()
        schedule.step()


def after_eos(ids: torch.Tensor, eos: int, fill: int) -> torch.Tensor:
    """Every token after a row's first eos set to `fill` (HF fills with eos when pad_id is 0)."""
    seen = torch.cumsum((ids == eos).long(), dim=1) - (ids == eos).long()
    return ids.masked_fill(seen > 0, fill)


def generated_lengths(ids: torch.Tensor, eos: int) -> list[int]:
    """Tokens each row generated, eos included (the start token is not counted)."""
    return [row.index(eos) + 1 if eos in row else len(row) for row in ids[:, 1:].tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/multi30k")
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-ff", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=2000, help="target tokens per training batch")
    parser.add_argument("--train-batches", type=int, default=3, help="batches per timed training round")
    parser.add_argument("--train-rounds", type=int, default=3)
    parser.add_argument("--sort", choices=["target", "longest"], default="target",
                        help="training batches: sorted by target length (default) or by the longer side (nanoformer's sampler)")
    parser.add_argument("--optimizer", choices=["fused", "foreach"], default="fused",
                        help="AdamW implementation on both sides: fused is the default of both HF's Trainer "
                             "(adamw_torch_fused, torch >= 2.8) and nanoformer's trainer")
    parser.add_argument("--batch", type=int, default=16, help="sentences per generate call")
    parser.add_argument("--new-tokens", type=int, default=32, help="max_new_tokens (about twice a Multi30k target)")
    parser.add_argument("--rounds", type=int, default=5, help="timed generate calls per side")
    parser.add_argument("--pretrain-steps", type=int, default=0,
                        help="first train ours this many steps on Multi30k (~200: translation-like output lengths)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--gemm", choices=["auto", "onednn", "aten"], default="auto",
                        help="the GEMM of nanoformer's linear layers (nanoformer/kernels/gemm.py); HF's use torch's")
    parser.add_argument("--profile", action="store_true",
                        help="instead: torch.profiler over our side of one beam-4 generate call, kernels by self time")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args()
    set_gemm_backend(args.gemm)
    torch.manual_seed(0)
    peak = matmul_peak_gflops()
    data = Path(args.data)

    tokenizer = Tokenizer.train_bpe([data / "train.de", data / "train.en"], vocab_size=args.vocab)
    special = tokenizer.special_ids()
    pad, eos = special["pad"], special["eos"]
    config = ModelConfig.from_preset(
        "marian-base", vocab_size=args.vocab, d_model=args.d_model, n_heads=args.heads, n_layers=args.layers,
        d_ff=args.d_ff, max_positions=256, pad_id=pad, eos_id=eos, unk_id=special["unk"], decoder_start_id=pad,
        dropout=0.1, attention_dropout=0.0, activation_dropout=0.0,
    )
    ours = Seq2SeqTransformer(config)
    pairs = load_pairs(data, tokenizer, eos)
    if args.pretrain_steps:
        pretrain(ours, length_batches(pairs, 1500, args.pretrain_steps, seed=1, pad=pad, start=pad))
    hf = to_hf(ours)
    shape = dict(d_model=args.d_model, layers=f"{args.layers}+{args.layers}", heads=args.heads, d_ff=args.d_ff,
                 vocab=args.vocab, dtype="fp32", threads=torch.get_num_threads())

    if not args.skip_generate:
        ours.eval()
        hf.eval()
        lines = (data / "test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[: args.batch]
        src, mask = pad_right([ids + [eos] for ids in tokenizer.encode_batch(lines)], pad)
        new = args.new_tokens
        if args.profile:
            profile_beam_search(ours, src, mask, new, pad)
            return
        for beams in (1, 4):
            outputs = {}

            def run_hf(beams: int = beams, outputs: dict = outputs) -> None:
                with torch.no_grad():
                    outputs["hf"] = hf.generate(
                        input_ids=src, attention_mask=mask, num_beams=beams, max_new_tokens=new, do_sample=False,
                        bad_words_ids=[[pad]], forced_eos_token_id=eos, length_penalty=1.0, early_stopping=False,
                    )

            def run_ours(beams: int = beams, outputs: dict = outputs) -> None:
                outputs["nanoformer"] = ours.generate(src, new, mask, beam_size=beams, bad_ids=[pad], force_eos=True,
                                                      length_penalty=1.0, early_stopping=False)

            times = time_interleaved({"hf": run_hf, "nanoformer": run_ours}, rounds=args.rounds)
            same = torch.equal(after_eos(outputs["hf"], eos, pad), after_eos(outputs["nanoformer"], eos, pad))
            lengths = generated_lengths(outputs["nanoformer"], eos)
            result = {"phase": "greedy" if beams == 1 else f"beam{beams}", "shape": shape, "batch": args.batch,
                      "weights": f"trained {args.pretrain_steps} steps" if args.pretrain_steps else "random",
                      "max_new_tokens": new, "identical_outputs": same,
                      "generated_length_mean": round(sum(lengths) / len(lengths), 1),
                      "generated_length_min_max": [min(lengths), max(lengths)],
                      "steps": outputs["nanoformer"].shape[1] - 1}
            for name, values in times.items():
                result[f"{name}_sentences_per_s"] = round(args.batch / median(values), 1)
            result["ratio"] = round(result["nanoformer_sentences_per_s"] / result["hf_sentences_per_s"], 3)
            write_result("translate_vs_hf", result, args.out)

    if not args.skip_train:
        batches = length_batches(pairs, args.max_tokens, args.train_batches, seed=0, pad=pad, start=pad, sort=args.sort)
        n_pairs = sum(len(b[0]) for b in batches)
        tgt_tokens = sum(int((b[3] != -100).sum()) for b in batches)
        # Padding share of each side: nanoformer's training skips padding in its token-wise layers
        # (kernels/packing.py), so the ratio depends on it; our own recipe's batches are tighter.
        src_real = sum(int(b[1].sum()) for b in batches) / sum(b[1].numel() for b in batches)
        tgt_real = tgt_tokens / sum(b[3].numel() for b in batches)
        ours.train()
        hf.train()
        runners = {
            "hf": train_round(hf, torch.optim.AdamW(hf.parameters(), lr=5e-4, **{args.optimizer: True}), batches, True),
            "nanoformer": train_round(ours, torch.optim.AdamW(ours.parameters(), lr=5e-4, **{args.optimizer: True}), batches, False),
        }
        times = time_interleaved(runners, rounds=args.train_rounds)
        result = {"phase": "train", "shape": shape, "max_tokens": args.max_tokens, "sort": args.sort,
                  "optimizer": args.optimizer, "batches": len(batches),
                  "pairs_per_round": n_pairs, "target_tokens_per_round": tgt_tokens,
                  "src_padding": round(1 - src_real, 3), "tgt_padding": round(1 - tgt_real, 3),
                  "matmul_peak_gflops": round(peak, 1)}
        for name, values in times.items():
            result[f"{name}_pairs_per_s"] = round(n_pairs / median(values), 1)
        result["ratio"] = round(result["nanoformer_pairs_per_s"] / result["hf_pairs_per_s"], 3)
        write_result("translate_vs_hf", result, args.out)


if __name__ == "__main__":
    main()
