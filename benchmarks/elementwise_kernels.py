"""What the element-wise kernels of a training step cost at the benchmarks' shapes.

Two of them are large enough to matter beside the matrix products:
- GELU at GPT training's FFN shape (4,096 tokens x 1,536, benchmarks/gpt_vs_hf.py): torch's
  tanh-approximate GELU (GPT-2's "gelu_new", what both libraries run) against the erf GELU and
  torch's own tanh and sigmoid kernels on the same tensor, and, with --compile, the tanh GELU
  written as x * sigmoid(2 * sqrt(2/pi) * (x + 0.044715 x^3)) and compiled;
- dropout at Multi30k training's FFN shape (4,096 tokens x 1,024, p 0.3): torch's `F.dropout`,
  nanoformer's `layers.dropout.dropout` (float mask), the bool mask it used before, and drawing
  the random words alone. Forward + backward, outputs checked equal where they should be.
Median of repeats, milliseconds, two threads unless torch is told otherwise.

    python benchmarks/elementwise_kernels.py --out benchmarks/results/elementwise_kernels.jsonl
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, write_result  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nanoformer.kernels.dropout import dropout  # noqa: E402


def timed_ms(fn, repeats: int) -> float:
    return round(median_time(fn, repeats, warmup=3) * 1e3, 3)


def gelu_kernels(repeats: int, compile_: bool) -> dict:
    x = torch.randn(4096, 1536)
    grad = torch.randn(4096, 1536)
    result = {
        "gelu_tanh_forward_ms": timed_ms(lambda: F.gelu(x, approximate="tanh"), repeats),
        "gelu_tanh_backward_ms": timed_ms(lambda: torch.ops.aten.gelu_backward(grad, x, approximate="tanh"), repeats),
        "gelu_erf_forward_ms": timed_ms(lambda: F.gelu(x), repeats),
        "gelu_erf_backward_ms": timed_ms(lambda: torch.ops.aten.gelu_backward(grad, x), repeats),
        "tanh_ms": timed_ms(lambda: torch.tanh(x), repeats),
        "sigmoid_ms": timed_ms(lambda: torch.sigmoid(x), repeats),
    }
    if compile_:
        k = 2 * math.sqrt(2 / math.pi)
        sigmoid_form = torch.compile(lambda t: t * torch.sigmoid(k * (t + 0.044715 * t * t * t)))
        torch.testing.assert_close(sigmoid_form(x), F.gelu(x, approximate="tanh"), atol=1e-5, rtol=0)
        result["gelu_tanh_sigmoid_form_compiled_forward_ms"] = timed_ms(lambda: sigmoid_form(x), repeats)
    return result


def dropout_kernels(repeats: int) -> dict:
    p, n = 0.3, 4096 * 1024
    x = torch.randn(4096, 1024, requires_grad=True)
    grad = torch.randn(4096, 1024)

    def bool_mask(t: torch.Tensor) -> torch.Tensor:  # the library's dropout before the float mask
        words = torch.empty(n // 4, dtype=torch.int64).random_()
        keep = torch.bitwise_and(words.view(torch.int16).view(t.shape), 0x7FFF) >= round(p * 32768)
        return t * keep * torch.tensor(1 / (1 - p))  # autograd keeps the bool mask

    torch.manual_seed(0)
    a = dropout(x, p)
    torch.manual_seed(0)
    assert torch.equal(a, bool_mask(x)), "the float mask must give the bool mask's floats"

    def step(fn):
        return lambda: fn(x).backward(grad)

    return {
        "torch_F_dropout_ms": timed_ms(step(lambda t: F.dropout(t, p)), repeats),
        "bool_mask_ms": timed_ms(step(bool_mask), repeats),
        "nanoformer_float_mask_ms": timed_ms(step(lambda t: dropout(t, p)), repeats),
        "random_words_only_ms": timed_ms(lambda: torch.empty(n // 4, dtype=torch.int64).random_(), repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true", help="also time the compiled sigmoid form of the tanh GELU")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    write_result("elementwise_kernels", {"shape": "gelu 4096x1536", **gelu_kernels(args.repeats, args.compile)}, args.out)
    write_result("elementwise_kernels", {"shape": "dropout 4096x1024 p=0.3, forward + backward",
                                         **dropout_kernels(args.repeats)}, args.out)


if __name__ == "__main__":
    main()
