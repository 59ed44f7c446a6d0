"""What new row counts cost oneDNN: time and memory of a layer pair trained on varying row counts.

oneDNN builds a kernel per product shape and keeps it in a cache. Padding-free batches give
every training step a new row count, so each step builds kernels again and the cache fills
with ones never reused. This trains a 256 -> 1024 -> 256 pair (ReLU between, as an FFN) for
`--steps` steps on 3,000 rows every step (`fixed`), on 2,000-4,000 rows (`vary`), or on
2,000-4,000 rows rounded up to a multiple of 64 (`round64`), and prints ms per step (after 50
warm-up steps) and the resident memory at the end. Run each mode in its own process; set
ONEDNN_PRIMITIVE_CACHE_CAPACITY and LRU_CACHE_CAPACITY in the environment to try other caches
(nanoformer sets both to 64 unless they are set).

    python benchmarks/onednn_shapes.py fixed; python benchmarks/onednn_shapes.py vary
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import resident_mb  # noqa: E402

from nanoformer.kernels import gemm as L  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["fixed", "vary", "round64"])
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(2)
    L.set_gemm_backend("onednn")
    up, down = torch.randn(1024, 256, requires_grad=True), torch.randn(256, 1024, requires_grad=True)
    rng = random.Random(0)
    start = 0.0
    for step in range(args.steps + 50):
        if step == 50:
            start = time.perf_counter()
        rows = 3000 if args.mode == "fixed" else rng.randint(2000, 4000)
        if args.mode == "round64":
            rows = -(-rows // 64) * 64
        x = torch.randn(rows, 256, requires_grad=True)
        L.linear(L.linear(x, up).relu(), down).square().mean().backward()
    ms = (time.perf_counter() - start) / args.steps * 1e3
    print(f"{args.mode}: {ms:.2f} ms/step, resident {resident_mb()} MB "
          f"(gemm {L.gemm_backend()}, cache {os.environ.get('ONEDNN_PRIMITIVE_CACHE_CAPACITY')})")


if __name__ == "__main__":
    main()
