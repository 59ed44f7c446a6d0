"""Padding-free token-wise layers: run projections, FFNs and norms on the real tokens only.

A batch of sentences padded to its longest one wastes work in every token-wise sublayer: the
Q/K/V and output projections, the FFN, the norms, dropout and the residual adds act on each
position alone, so on padding they compute values nothing reads. Length bucketing keeps the
*target* side tight, but the source side of a translation batch sorted by target length is often
a third padding. `TokenPacking` gathers the real tokens of a (B, T, D) batch into (N, D) rows for
those sublayers and scatters them back to (B, T, ·) only where positions meet: inside attention.

Packing changes no real token's value (each row is computed by the same operations either way);
padding positions come back as zeros instead of the values a padded pass would give them, which
nothing reads because every attention masks padding keys. Hugging Face's "unpadded" BERT
variants and FlashAttention's varlen kernels rest on the same observation.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _Pack(torch.autograd.Function):
    """(B·T, D) -> (N, D) rows at `index`; the gradient is scattered back with a copy, not an add
    (the indices are distinct), which is cheaper than index_select's generic backward."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, grad.shape[1]).index_copy_(0, index, grad), None


class _Unpack(torch.autograd.Function):
    """(N, D) -> (B·T, D) with the rows at `index` and zeros elsewhere; the gradient is a gather."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, rows: int) -> Tensor:
        ctx.save_for_backward(index)
        return x.new_zeros(rows, x.shape[1]).index_copy_(0, index, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


class TokenPacking:
    """Where the real tokens of a padded (B, T) batch lie, to pack (B, T, D) -> (N, D) and back."""

    def __init__(self, real: Tensor) -> None:
        """real: (B, T) bool, True = a real token."""
        self.batch, self.length = real.shape
        self.index = real.reshape(-1).nonzero().squeeze(1)

    @classmethod
    def worth_it(cls, real: Tensor, min_padding: float = 0.1) -> TokenPacking | None:
        """A packing when at least `min_padding` of the positions are padding, else None: below
        that, the gathers and scatters cost about what the skipped rows would have. None under
        torch.compile too: the number of real tokens is data-dependent and would break the graph."""
        if torch.compiler.is_compiling():
            return None
        padding = real.numel() - int(real.sum())
        return cls(real) if padding > 0 and padding >= min_padding * real.numel() else None

    def pack(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (N, D), the real tokens in row-major order."""
        return _Pack.apply(x.reshape(self.batch * self.length, x.shape[-1]), self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """(N, D) -> (B, T, D), zeros at padding."""
        return _Unpack.apply(x, self.index, self.batch * self.length).view(self.batch, self.length, x.shape[-1])


def through_last(flags: Tensor) -> Tensor:
    """(B, T) bool: True at each row's positions up to and including its last True flag.

    For a decoder trained on `flags` = "this target counts", the False tail is what causal
    attention and the loss both leave unread, so packing may skip it."""
    return flags.flip(1).cumsum(1).flip(1) > 0
