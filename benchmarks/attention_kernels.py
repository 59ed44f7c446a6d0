"""Which attention kernel is fastest at the benchmarks' shapes? (the evidence behind two open targets)

Times torch's fused `scaled_dot_product_attention` (flash on the CPU) against the written-out
formula (matmul, softmax, matmul) and against flash run in causal blocks, at:
- GPT training (benchmarks/gpt_vs_hf.py): 16 x 6 heads x 256 x 64, causal, forward and backward;
- one beam-search decoding step (benchmarks/translate_vs_hf.py): self-attention of 64 beams x 4
  heads, one query over 27 cached keys; cross-attention of 16 sentences x 4 heads, the 4 beams'
  queries over 20 source positions with a padding mask.
Outputs are checked equal. Median of interleaved repeats, microseconds or milliseconds.

    python benchmarks/attention_kernels.py --out benchmarks/results/attention_kernels.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time as timed, write_result  # noqa: E402


def training_shape(repeats: int) -> dict:
    B, H, T, D = 16, 6, 256, 64
    q, k, v = (torch.randn(B, H, T, D, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, T, D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    def flash():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def written_out():
        scores = torch.matmul(q * D**-0.5, k.transpose(-1, -2)).masked_fill(~causal, float("-inf"))
        return torch.matmul(torch.softmax(scores, -1), v)

    def blocks(n: int):
        def run():
            size, outs = T // n, []
            for i in range(n):
                rows, keys = slice(i * size, (i + 1) * size), slice(0, (i + 1) * size)
                mask = torch.ones(size, (i + 1) * size, dtype=torch.bool).tril(i * size)
                outs.append(F.scaled_dot_product_attention(q[:, :, rows], k[:, :, keys], v[:, :, keys], attn_mask=mask))
            return torch.cat(outs, dim=2)
        return run

    variants = {"flash": flash, "written_out": written_out, "flash_2_blocks": blocks(2), "flash_4_blocks": blocks(4)}
    reference = flash().detach()
    result = {}
    for name, fn in variants.items():
        assert torch.allclose(fn().detach(), reference, atol=1e-5), name
        for _ in range(2):
            fn().backward(grad)
        out = {}
        forward = timed(lambda fn=fn, out=out: out.__setitem__("y", fn()), repeats)
        backward = timed(lambda fn=fn: fn().backward(grad), repeats) - forward
        result[name] = {"forward_ms": round(forward * 1e3, 2), "backward_ms": round(backward * 1e3, 2)}
    return result


def decode_shapes(repeats: int) -> dict:
    cache = torch.randn(64, 2, 4, 33, 64)  # keys and values in one buffer, as layers/cache.py
    q, k, v = torch.randn(64, 4, 1, 64), cache[:, 0, :, :27], cache[:, 1, :, :27]
    cq, ck, cv = torch.randn(16, 4, 4, 64), torch.randn(16, 4, 20, 64), torch.randn(16, 4, 20, 64)
    mask = torch.ones(16, 1, 1, 20, dtype=torch.bool)
    mask[:8, ..., 15:] = False
    additive = torch.zeros(16, 1, 1, 20).masked_fill(~mask, float("-inf"))
    variants = {
        "self_sdpa": lambda: F.scaled_dot_product_attention(q, k, v, scale=0.125),
        "self_written_out": lambda: torch.matmul(torch.softmax(torch.matmul(q * 0.125, k.transpose(-1, -2)), -1), v),
        "cross_sdpa": lambda: F.scaled_dot_product_attention(cq, ck, cv, attn_mask=mask, scale=0.125),
        "cross_written_out": lambda: torch.matmul(
            torch.softmax(torch.matmul(cq, ck.transpose(-1, -2)).mul_(0.125).add_(additive), -1), cv),
    }
    assert torch.allclose(variants["self_sdpa"](), variants["self_written_out"](), atol=1e-5)
    assert torch.allclose(variants["cross_sdpa"](), variants["cross_written_out"](), atol=1e-5)
    result = {}
    for name, fn in variants.items():
        for _ in range(50):
            fn()
        result[name + "_us"] = round(timed(lambda fn=fn: [fn() for _ in range(20)], repeats) / 20 * 1e6, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    write_result("attention_kernels", {"shape": "gpt training 16x6x256x64 causal", **training_shape(args.repeats)}, args.out)
    write_result("attention_kernels", {"shape": "beam-4 decode step, d_head 64", **decode_shapes(args.repeats)}, args.out)


if __name__ == "__main__":
    main()
