"""Dropout with a cheap random mask on the CPU: the same contract as `F.dropout`.

Dropout zeroes each element with probability p and scales the rest by 1/(1-p), so that the
expected value is unchanged. On the CPU, torch draws the mask with one Bernoulli sample per
element from its Mersenne Twister through a double; in BERT training (attention and hidden
dropout 0.1) those draws were a fifth of every step, the same on Hugging Face's side.

Here one 64-bit random word gives four 15-bit lanes, and an element is dropped when its lane is
below round(p · 32768): p is rounded to a multiple of 1/32768 (0.1 becomes 0.100006), which no
training run can tell apart. The comparison writes the mask straight into a float tensor, which
is then scaled by 1/(1-p) once: forward and backward are each one plain multiply (a bool mask
would cost a full-size conversion inside every multiply). Same-seed runs are reproducible and
exact resume still holds, because the words come from torch's generator. Other devices keep
torch's kernel (CUDA's Philox is fast already). Timings: docs/benchmarks.md, "CPU dropout"
(benchmarks/elementwise_kernels.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LANE_BITS = 15


class _LaneDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
        lanes = words.view(torch.int16)[:n].view(x.shape)
        mask = torch.empty_like(x, memory_format=torch.contiguous_format)
        torch.ge(torch.bitwise_and(lanes, (1 << LANE_BITS) - 1), round(p * (1 << LANE_BITS)), out=mask)
        mask.mul_(1.0 / (1.0 - p))  # 0 or 1/(1-p): x · mask is x · keep · scale, the same floats
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """`F.dropout(x, p, training)`, with the cheap mask on the CPU."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if p == 1.0 or x.device.type != "cpu" or not x.is_floating_point():
        return F.dropout(x, p, training)
    return _LaneDropout.apply(x, p)


class Dropout(nn.Dropout):
    """`nn.Dropout` (same arguments, state and repr) drawing its mask with `dropout`."""

    def forward(self, input: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(input)
        return dropout(input, self.p, self.training)
