"""torch's two fp32 GEMMs on this CPU, at the shapes nanoformer's models multiply.

nanoformer/kernels/gemm.py multiplies the linear layers through oneDNN on AMD CPUs, where MKL's
sgemm (torch's default for `a @ b` and `F.linear`) does not use AVX-512. This measures, in one
process and interleaved, what that choice rests on:

- training: the three products of a linear layer (forward, input gradient, weight gradient) at
  the GPT benchmark's and the Marian benchmark's shapes, `F.linear`/`mm` against oneDNN as
  `nanoformer.kernels.gemm` calls it, in GFLOP/s;
- decoding: one step's products of the Marian decoder at beam 4 × 16 sentences (64 rows through
  three layers' six projections and the 8,000-word output layer, each weight used once per
  step, so they stream from memory as in generation): torch, oneDNN on plain weights, and oneDNN
  on weights packed once (`frozen_weights`), in ms per step;
- small products (phase "small"): one layer's product at 1-128 rows for the layer shapes of
  128- to 768-wide models, torch's kernel against oneDNN on a packed weight, in µs per call, with
  8 MB of other memory written between calls so that the weight comes from memory as it does in a
  decoding step. `kernels/gemm.py`'s `_small_product` starts from this table; its bound was then
  set lower, inside decoding steps (docs/benchmarks.md, "Small products").

    python benchmarks/gemm_backends.py --out benchmarks/results/gemm_backends.jsonl
    python benchmarks/gemm_backends.py --memory onednn   # resident memory over 1,200 products of varying rows
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import matmul_peaks, median, resident_mb, time_interleaved, write_result  # noqa: E402

from nanoformer.kernels import gemm as L  # noqa: E402

TRAINING_SHAPES = {  # (rows, in, out)
    "gpt qkv": (4096, 384, 1152),
    "gpt ffn up": (4096, 384, 1536),
    "gpt ffn down": (4096, 1536, 384),
    "gpt head (chunk)": (1024, 384, 8192),
    "marian ffn up": (4096, 256, 1024),
    "marian ffn down": (4096, 1024, 256),
    "marian head (chunk)": (512, 256, 8000),
}
DECODER_STEP = [(256, 768), (256, 256), (256, 256), (256, 256), (256, 1024), (1024, 256)] * 3 + [(256, 8000)]


def training_rows(rounds: int) -> list[dict]:
    rows = []
    for name, (m, k, n) in TRAINING_SHAPES.items():
        x, w, dy = torch.randn(m, k), torch.randn(n, k) * 0.05, torch.randn(m, n)
        flops = 2 * m * k * n
        runners = {
            "forward aten": lambda: F.linear(x, w),
            "forward onednn": lambda: L._onednn_linear(x, w),
            "input grad aten": lambda: dy.mm(w),
            "input grad onednn": lambda: L._onednn_linear(dy, w.t()),
            "weight grad aten": lambda: dy.t().mm(x),
            "weight grad onednn": lambda: L._onednn_linear(dy.t(), x.t()) if n <= k else L._onednn_linear(x.t(), dy.t()).t(),
        }
        times = time_interleaved(runners, rounds=rounds)
        row = {"shape": name, "rows_in_out": [m, k, n]}
        for key, values in times.items():
            row[key.replace(" ", "_") + "_gflops"] = round(flops / median(values) / 1e9, 1)
        rows.append(row)
    return rows


def decode_row(rounds: int) -> dict:
    torch.manual_seed(0)
    weights = [(torch.randn(n, k) * 0.05, torch.randn(n)) for k, n in DECODER_STEP]
    inputs = {k: torch.randn(64, 1, k) for k in (256, 1024)}
    packed = [(torch.ops.mkldnn._reorder_linear_weight(w, 64), b) for w, b in weights]

    def step(fn, ws) -> None:
        for (k, _), (w, b) in zip(DECODER_STEP, ws):
            fn(inputs[k], w, b)

    runners = {
        "aten": lambda: [step(F.linear, weights) for _ in range(10)],
        "onednn plain weights": lambda: [step(L._onednn_linear, weights) for _ in range(10)],
        "onednn packed weights": lambda: [step(L._onednn_linear, packed) for _ in range(10)],
    }
    times = time_interleaved(runners, rounds=rounds)
    return {"shape": "marian decoder step, 64 rows (beam 4 x 16)",
            **{key.replace(" ", "_") + "_ms_per_step": round(median(v) / 10 * 1e3, 3) for key, v in times.items()}}


SMALL_WIDTHS = (128, 256, 384, 512, 768)
SMALL_ROWS = (1, 4, 16, 64, 128)


def picks(x: torch.Tensor, w: torch.Tensor) -> str:
    """What `kernels/gemm.py`'s `linear` multiplies this product with on this CPU (Intel: torch's kernel always)."""
    return "aten" if L.gemm_backend() != "onednn" or L._small_product(x, w) else "onednn"


def small_rows(calls: int = 100) -> list[dict]:
    evict = torch.randn(2 << 20)  # 8 MB, written between calls

    def per_call_us(fn) -> float:
        for _ in range(10):
            fn()
        total = 0.0
        for _ in range(calls):
            evict.mul_(1.0)
            start = time.perf_counter()
            fn()
            total += time.perf_counter() - start
        return total / calls * 1e6

    rows = []
    for d in SMALL_WIDTHS:
        for k, n in ((d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)):
            w, b = torch.randn(n, k) * 0.05, torch.randn(n)
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 64)
            for m in SMALL_ROWS:
                x = torch.randn(m, k)
                aten = per_call_us(lambda: F.linear(x, w, b))
                onednn = per_call_us(lambda: L._onednn_linear(x, packed, b))
                rows.append({"rows_in_out": [m, k, n], "weight_elements": k * n, "aten_us": round(aten, 1),
                             "onednn_packed_us": round(onednn, 1), "faster": "aten" if aten < onednn else "onednn",
                             "rule_picks": picks(x, w)})
    return rows


def memory_probe(backend: str, steps: int = 1200) -> None:
    """Resident memory while one 256 -> 1024 layer trains on 500-1,500 rows a step, a new count each
    time, as padding-free batches do: oneDNN builds (and caches) its primitives per shape."""
    import random

    L.set_gemm_backend(backend)
    weight, bias = torch.randn(1024, 256, requires_grad=True), torch.randn(1024, requires_grad=True)
    rng = random.Random(0)
    for step in range(steps + 1):
        x = torch.randn(rng.randint(500, 1500), 256, requires_grad=True)
        L.linear(x, weight, bias).sum().backward()
        if step % 200 == 0:
            print(f"{backend}: step {step}, resident {resident_mb()} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--memory", choices=["aten", "onednn"], default=None,
                        help="instead: resident memory over products of varying rows on that GEMM")
    parser.add_argument("--phase", choices=["all", "small"], default="all", help="small: only the small-product table")
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args()
    if args.memory:
        memory_probe(args.memory)
        return
    if not L._prepare_onednn_linear():
        raise SystemExit("this torch build has no oneDNN linear op (torch.ops.mkldnn._linear_pointwise)")
    peaks = {k: round(v, 1) for k, v in matmul_peaks().items()}
    for row in small_rows():
        write_result("gemm_backends", {"phase": "small", "matmul_peaks_gflops": peaks, **row}, args.out)
    if args.phase == "small":
        return
    for row in training_rows(args.rounds):
        write_result("gemm_backends", {"phase": "train", "matmul_peaks_gflops": peaks, **row}, args.out)
    write_result("gemm_backends", {"phase": "decode", **decode_row(args.rounds)}, args.out)


if __name__ == "__main__":
    main()
