"""Greedy's pick of the next token: `last_dim_argmax` against torch's argmax, alone and inside decoding.

Alone: each on (rows, vocabulary) logits, alternated in one process, median µs per call. Inside
decoding: a trained translator's greedy decoding of the first --sentences lines of Multi30k's
test_2016 (as `nanoformer translate` batches them), with `choose_next`'s pick switched between the
two and the runs alternated; sentences/s and whether the outputs are the same (they must be:
`last_dim_argmax` returns argmax's own indices).

    python benchmarks/greedy_argmax.py runs/m30k-15min --out benchmarks/results/greedy_argmax.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, time_interleaved, write_result  # noqa: E402

import nanoformer  # noqa: E402
import nanoformer.generation.sampling as sampling  # noqa: E402
from nanoformer.data.text import find_data_file  # noqa: E402
from nanoformer.generation.translation import encode_sources, translate_ids  # noqa: E402
from nanoformer.kernels.argmax import last_dim_argmax  # noqa: E402


def torch_argmax(x: torch.Tensor) -> torch.Tensor:
    return x.argmax(dim=-1)


def alone(rows: int, vocabulary: int, calls: int, rounds: int, out: str | None) -> None:
    x = torch.randn(rows, vocabulary, generator=torch.Generator().manual_seed(rows))
    assert torch.equal(last_dim_argmax(x), torch_argmax(x))

    def repeat(pick):
        return lambda: [pick(x) for _ in range(calls)]

    times = time_interleaved({"two_pass": repeat(last_dim_argmax), "torch": repeat(torch_argmax)}, rounds)
    us = {name: round(median(t) / calls * 1e6, 1) for name, t in times.items()}
    write_result("greedy_argmax", {"phase": "alone", "rows": rows, "vocabulary": vocabulary,
                                   "two_pass_us": us["two_pass"], "torch_argmax_us": us["torch"],
                                   "speedup": round(us["torch"] / us["two_pass"], 2)}, out)


def decoding(checkpoint: str, sentences: int, batch: int, rounds: int, out: str | None) -> None:
    model, tokenizer = nanoformer.load(checkpoint)
    texts = find_data_file("multi30k/test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:sentences]
    sources = encode_sources(texts, tokenizer, model.config.max_positions)
    config = model.config
    outputs = {}

    def run(pick, name):
        def translate():
            sampling.last_dim_argmax = pick  # what `choose_next` calls for a greedy pick
            try:
                outputs[name] = translate_ids(model, sources, config.pad_id, config.eos_id, batch_size=batch)
            finally:
                sampling.last_dim_argmax = last_dim_argmax
        return translate

    times = time_interleaved({"two_pass": run(last_dim_argmax, "two_pass"), "torch": run(torch_argmax, "torch")}, rounds)
    speed = {name: len(sources) / median(t) for name, t in times.items()}
    write_result("greedy_argmax", {"phase": "decoding", "model": checkpoint, "sentences": len(sources), "batch": batch,
                                   "rounds": rounds, "two_pass_sentences_per_s": round(speed["two_pass"], 1),
                                   "torch_argmax_sentences_per_s": round(speed["torch"], 1),
                                   "ratio": round(speed["two_pass"] / speed["torch"], 3),
                                   "same_outputs": outputs["two_pass"] == outputs["torch"]}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a trained translation run or checkpoint (the decoding phase)")
    parser.add_argument("--sentences", type=int, default=320)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for rows in (1, 4, 16, 32, 64):
        alone(rows, 8000, calls=200, rounds=args.rounds, out=args.out)
    alone(4, 50_257, calls=200, rounds=args.rounds, out=args.out)  # GPT-2's vocabulary
    if args.checkpoint:
        for batch in args.batch:
            decoding(args.checkpoint, args.sentences, batch, args.rounds, args.out)


if __name__ == "__main__":
    main()
