"""Attention masks: one boolean convention for the whole package.

**Convention: True = this query may attend to this key.** A mask is a bool tensor that broadcasts
to the attention scores' shape (batch, heads, query_len, key_len). This is the convention of
torch's `scaled_dot_product_attention` and of Hugging Face's `attention_mask` (1 = real token);
`torch.nn.MultiheadAttention` and `torch.nn.Transformer` use the opposite one (True = blocked),
which `from_blocked_mask` converts at the edge.
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(query_len: int, key_len: int, offset: int = 0, device: torch.device | None = None) -> Tensor:
    """(query_len, key_len) mask where query i (at absolute position offset + i) sees keys 0..offset+i.

    `offset` is the number of keys already cached before these queries; with a cache the queries
    are the last `query_len` positions of the `key_len` keys, so offset = key_len - query_len.
    """
    q_pos = torch.arange(query_len, device=device).unsqueeze(1) + offset
    k_pos = torch.arange(key_len, device=device).unsqueeze(0)
    return k_pos <= q_pos


def padding_mask(attention_mask: Tensor) -> Tensor:
    """Turn a (batch, key_len) "1 = real token" mask into a (batch, 1, 1, key_len) key mask."""
    return attention_mask.bool()[:, None, None, :]


def from_blocked_mask(mask: Tensor) -> Tensor:
    """Convert torch.nn.MultiheadAttention's convention (True, or an additive -inf, = blocked) to ours."""
    if mask.dtype == torch.bool:
        return ~mask
    return torch.isfinite(mask)


def combine(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of the given masks (None means 'no restriction')."""
    result = None
    for mask in masks:
        if mask is None:
            continue
        result = mask if result is None else result & mask
    return result


def additive_mask(mask: Tensor | None, bias: Tensor | None, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """A boolean mask and an additive bias (ALiBi) as one float tensor added to the scores: the
    bias (or 0) where a query may attend, -inf where it may not. Only for queries that each see
    at least one key: a softmax over nothing but -inf is NaN."""
    if mask is None:
        return bias
    base = bias if bias is not None else torch.zeros((), dtype=dtype, device=mask.device)
    return base.masked_fill(~mask, float("-inf"))


def check_attention_mask(name: str, mask: Tensor | None, batch: int, length: int) -> None:
    """Validate a user-facing (batch, length) padding mask: 1/True marks real tokens."""
    if mask is None:
        return
    if not isinstance(mask, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape ({batch}, {length}), got {type(mask).__name__}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(
            f"{name} must be bool or integer (1/True = real token, 0/False = padding), got dtype {mask.dtype}"
        )
    if tuple(mask.shape) != (batch, length):
        raise ValueError(f"{name} must have shape (batch, length) = ({batch}, {length}), got {tuple(mask.shape)}")
