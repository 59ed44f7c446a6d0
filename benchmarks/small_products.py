"""Decoding with small products on torch's kernel (the default rule) against all of them on oneDNN.

`kernels/gemm.py` sends a product to torch's own GEMM, even on AMD CPUs where oneDNN is the fast
one, when its weight is small (`_small_product`). This measures what that does inside decoding,
where it counts: one model, the two choices alternated batch run by batch run in one process
(`NANOFORMER_GEMM`'s default rule against `set_gemm_backend("onednn")`, which sends every product
to oneDNN), greedy and beam 4, sentences/s and whether the outputs are the same.

With --int8 the model is quantized, and the two choices are int8's own rule (`Int8Linear.small`:
a small layer at a few rows multiplies its dequantized weight in float32) against every int8
layer on the int8 GEMM; the outputs then differ where the input's rounding tips a token.

A trained translator decodes the first --sentences lines of Multi30k's test_2016 in batches, as
`nanoformer translate` does; `--random WIDTH` builds an untrained 3 + 3-layer translator of that
width instead (d_ff 4 x width, vocabulary 8,000), which decodes 16 random sources for 32 steps.

    python benchmarks/small_products.py runs/m30k-15min --out benchmarks/results/small_products.jsonl
    python benchmarks/small_products.py --random 256 --out benchmarks/results/small_products.jsonl
    python benchmarks/small_products.py runs/m30k-15min --int8 --out benchmarks/results/small_products.jsonl
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

import nanoformer  # noqa: E402
from nanoformer.config import ModelConfig  # noqa: E402
from nanoformer.data.text import find_data_file  # noqa: E402
from nanoformer.generation.translation import encode_sources, translate_ids  # noqa: E402
from nanoformer.kernels.gemm import set_gemm_backend  # noqa: E402
from nanoformer.kernels.int8 import Int8Linear  # noqa: E402
from nanoformer.models import build_model  # noqa: E402
from nanoformer.quantize import quantize  # noqa: E402


def gemm_choices(model) -> dict:
    """The float32 rule against every product on oneDNN: name -> (result key, function that sets it)."""
    return {"default rule": ("default_rule", lambda: set_gemm_backend(None)),
            "all on oneDNN": ("all_onednn", lambda: set_gemm_backend("onednn"))}


def int8_choices(model) -> dict:
    """int8's rule against every int8 layer on the int8 GEMM."""
    layers = [m for m in model.modules() if type(m) is Int8Linear]
    rule = {m: m.small for m in layers}

    def use_rule(on: bool) -> None:
        for m in layers:
            m.small = rule[m] and on

    return {"default rule": ("default_rule", lambda: use_rule(True)),
            "all on the int8 GEMM": ("all_int8_gemm", lambda: use_rule(False))}


def random_translator(width: int, int8: bool):
    config = ModelConfig(arch="encoder-decoder", vocab_size=8000, d_model=width, n_heads=4, n_layers=3,
                         d_ff=4 * width, max_positions=256, dropout=0.0, pad_id=0, bos_id=1, eos_id=2,
                         norm_position="pre", tie_embeddings=True, share_embeddings=True)
    torch.manual_seed(0)
    model = build_model(config).eval()
    if int8:
        quantize(model)
    sources = torch.randint(3, 8000, (16, 20))
    return model, lambda beam: model.generate(sources, 32, beam_size=beam, bad_ids=[0, 2]).tolist(), 16


def trained_translator(checkpoint: str, sentences: int, batch: int, int8: bool):
    model, tokenizer = nanoformer.load(checkpoint, quantize="int8" if int8 else None)
    texts = find_data_file("multi30k/test_2016_flickr.de").read_text(encoding="utf-8").splitlines()[:sentences]
    sources = encode_sources(texts, tokenizer, model.config.max_positions)
    config = model.config
    return model, lambda beam: translate_ids(model, sources, config.pad_id, config.eos_id, beam_size=beam,
                                             batch_size=batch), len(sources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="a trained translation run or checkpoint")
    parser.add_argument("--random", type=int, metavar="WIDTH", help="an untrained translator of this width instead")
    parser.add_argument("--int8", action="store_true", help="quantize the model; compare int8's small-product rule")
    parser.add_argument("--sentences", type=int, default=320)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per choice (median), alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if (args.checkpoint is None) == (args.random is None):
        parser.error("give a checkpoint or --random WIDTH")
    torch.set_num_threads(args.threads)
    for batch in [16] if args.random else args.batch:
        model, run, count = random_translator(args.random, args.int8) if args.random else trained_translator(
            args.checkpoint, args.sentences, batch, args.int8)
        choices = (int8_choices if args.int8 else gemm_choices)(model)
        rule, other = choices  # the default rule first
        use_default, other_key = choices[rule][1], choices[other][0]
        for beam in (1, 4):
            outputs, times = {}, {name: [] for name in choices}
            for name, (_, use) in choices.items():  # warm-up, and the outputs compared
                use()
                outputs[name] = run(beam)
            for _ in range(args.rounds):
                for name, (_, use) in choices.items():
                    use()
                    start = time.perf_counter()
                    run(beam)
                    times[name].append(time.perf_counter() - start)
            use_default()
            speed = {name: count / statistics.median(t) for name, t in times.items()}
            same = sum(a == b for a, b in zip(outputs[rule], outputs[other]))
            write_result("small_products", {
                "model": args.checkpoint or f"random {args.random} x (3 + 3)", "d_model": model.config.d_model,
                "precision": "int8" if args.int8 else "fp32",
                "sentences": count, "batch": batch, "beam": beam, "rounds": args.rounds,
                "default_rule_sentences_per_s": round(speed[rule], 1),
                f"{other_key}_sentences_per_s": round(speed[other], 1),
                "ratio": round(speed[rule] / speed[other], 3),
                "same_outputs": outputs[rule] == outputs[other], "same_output_share": round(same / len(outputs[rule]), 3)},
                args.out)


if __name__ == "__main__":
    main()
