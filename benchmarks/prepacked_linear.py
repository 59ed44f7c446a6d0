"""A probe, not a feature: would MKL's pre-packed weights speed up the decode step's matmuls?

Beam 4 with random weights (benchmarks/translate_vs_hf.py) spends about half its step in
`linear` on 64 rows (16 sentences x 4 beams). MKL can pack a weight matrix once
(`torch.ops.mkl._mkl_reorder_linear_weight`, a private op that torch.compile's CPU backend
uses) instead of on every call. This times each matmul shape of one decoding step of the
Marian-shaped model (d 256, FFN 1024, vocabulary 8,000) both ways, interleaved, and checks
that the outputs agree.

    python benchmarks/prepacked_linear.py --out benchmarks/results/prepacked_linear.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, time_interleaved, write_result  # noqa: E402

# (out, in) of each linear a decoder layer runs per step, and the output layer.
SHAPES = {"qkv": (768, 256), "attn_out": (256, 256), "cross_q": (256, 256), "cross_out": (256, 256),
          "ffn_in": (1024, 256), "ffn_out": (256, 1024), "output_layer": (8000, 256)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="rows per call: sentences x beams")
    parser.add_argument("--calls", type=int, default=200, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    for name, (n_out, n_in) in SHAPES.items():
        x, w, b = torch.randn(args.rows, n_in), torch.randn(n_out, n_in), torch.randn(n_out)
        packed = torch.ops.mkl._mkl_reorder_linear_weight(w, args.rows)
        same = torch.allclose(torch.ops.mkl._mkl_linear(x, packed, w, b, args.rows), F.linear(x, w, b), atol=1e-3)

        def aten() -> None:
            for _ in range(args.calls):
                F.linear(x, w, b)

        def prepacked() -> None:
            for _ in range(args.calls):
                torch.ops.mkl._mkl_linear(x, packed, w, b, args.rows)

        times = time_interleaved({"aten": aten, "prepacked": prepacked}, rounds=args.rounds)
        us = {k: round(median(v) / args.calls * 1e6, 1) for k, v in times.items()}
        write_result("prepacked_linear", {"shape": name, "rows": args.rows, "out": n_out, "in": n_in,
                                          "aten_us": us["aten"], "prepacked_us": us["prepacked"],
                                          "speedup": round(us["aten"] / us["prepacked"], 3), "same_outputs": same},
                     args.out)


if __name__ == "__main__":
    main()
