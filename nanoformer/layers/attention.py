"""Scaled dot-product attention and multi-head attention (self and cross).

Attention(Q, K, V) = softmax(QKᵀ / √d_k) · V: each query scores every key, the scores become
weights through a softmax, and the output is the weighted sum of the values. The 1/√d_k keeps the
dot products of wide vectors from saturating the softmax.

Two paths share one interface:
- "math": the formula written out; it can return the attention weights for inspection;
- "sdpa": torch's fused `scaled_dot_product_attention` (flash / memory-efficient kernels).
`need_weights=True` always takes the math path, and so does attention dropout on the CPU (torch's
kernels fall back to the formula anyway; ours draws the dropout mask cheaply, see dropout.py).
Masks follow `masks.py`: True = may attend. A query whose keys are all masked gets a zero output
(never NaN, forward or backward).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.config import ATTENTION_IMPLS
from nanoformer.layers.cache import LayerCache
from nanoformer.layers.dropout import dropout
from nanoformer.layers.linear import Linear
from nanoformer.layers.masks import causal_mask
from nanoformer.layers.packing import TokenPacking
from nanoformer.layers.positional import apply_rotary



def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    need_weights: bool = False,
    impl: str = "sdpa",
) -> tuple[Tensor, Tensor | None]:
    """Attend queries (B, H, Tq, d) to keys/values (B, H, Tk, d); returns (output, weights or None).

    mask: bool, broadcastable to (B, H, Tq, Tk), True = may attend.
    bias: float, added to the scores (ALiBi), broadcastable likewise.
    causal: queries are the last Tq of the Tk positions and see only keys at or before their own.
    """
    query_len, key_len = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # With attention dropout on the CPU, torch's fused kernels fall back to the written-out
    # formula anyway, with a slow Bernoulli mask; ours draws it cheaply (layers/dropout.py).
    explicit = need_weights or impl == "math" or (dropout_p > 0 and q.device.type == "cpu")
    if causal and query_len > 1:
        if mask is None and bias is None and query_len == key_len and not explicit:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=scale)
            return out, None
        tri = causal_mask(query_len, key_len, offset=key_len - query_len, device=q.device)
        mask = tri if mask is None else mask & tri

    # Rows with no visible key: let them attend everywhere (finite maths), then zero their output.
    empty_rows = None
    if mask is not None:
        empty_rows = ~mask.any(dim=-1, keepdim=True)
        mask = mask | empty_rows

    if explicit:
        scores = torch.matmul(q * scale, k.transpose(-2, -1))  # scaling q is cheaper than the scores
        if bias is not None:
            scores = scores + bias
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        if empty_rows is not None:
            weights = weights.masked_fill(empty_rows, 0.0)
        dropped = dropout(weights, dropout_p) if dropout_p > 0 else weights
        return torch.matmul(dropped, v), (weights if need_weights else None)

    attn_mask: Tensor | None = mask
    if bias is not None:
        attn_mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
    if empty_rows is not None:
        out = out.masked_fill(empty_rows, 0.0)
    return out, None


def group_queries(q: Tensor, kv_rows: int) -> Tensor:
    """Queries (R, H, T, d) whose R / kv_rows consecutive rows share one row of keys/values, as
    (kv_rows, H, g·T, d): the g rows become more queries of one attention call.

    Beam search keeps the cross-attention keys/values once per source sentence, not once per beam:
    the g beams of a sentence read the same encoder memory, so a step reads g times less of it.
    Each query row is attended independently, so the outputs equal those of g identical copies.
    """
    rows, heads, length, d = q.shape
    if rows % kv_rows:
        raise ValueError(f"{rows} query rows cannot share {kv_rows} rows of keys/values")
    g = rows // kv_rows
    return q.view(kv_rows, g, heads, length, d).transpose(1, 2).reshape(kv_rows, heads, g * length, d)


def ungroup_queries(x: Tensor, rows: int) -> Tensor:
    """Undo `group_queries` on an output or weights (kv_rows, H, g·T, x) -> (rows, H, T, x)."""
    kv_rows, heads, grouped, width = x.shape
    g = rows // kv_rows
    return x.view(kv_rows, heads, g, grouped // g, width).transpose(1, 2).reshape(rows, heads, grouped // g, width)


def select_queries(
    positions: Tensor, q: Tensor, mask: Tensor | None, bias: Tensor | None
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The rows of q (B, H, T, d), and of a mask or bias with a query dimension, at `positions` (B, Tq)."""

    def rows(t: Tensor) -> Tensor:
        if t.shape[-2] == 1:  # one row for every query (a key mask)
            return t
        t = t.expand(positions.shape[0], *t.shape[1:])
        index = positions[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[-1])
        return t.gather(2, index)

    return rows(q), (rows(mask) if mask is not None else None), (rows(bias) if bias is not None else None)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project, split into heads, attend per head, concat, project back.

    Self-attention uses one fused Q/K/V projection (one matmul instead of three). Cross-attention
    takes queries from the decoder and keys/values from the encoder memory, so its K/V projection
    is separate and, with a cache, runs once per source sentence.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        cross: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_model // n_heads
        self.cross, self.dropout, self.impl = cross, dropout, impl
        if cross:
            self.q_proj = Linear(d_model, d_model, bias=bias)
            self.kv_proj = Linear(d_model, 2 * d_model, bias=bias)
        else:
            self.qkv_proj = Linear(d_model, 3 * d_model, bias=bias)
        self.out_proj = Linear(d_model, d_model, bias=bias)

    def _heads(self, x: Tensor, n: int) -> list[Tensor]:
        """(B, T, n·D) -> n tensors of shape (B, H, T, d_head)."""
        batch, length, _ = x.shape
        x = x.view(batch, length, n, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return list(x.unbind(0))

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        causal: bool = False,
        cache: LayerCache | None = None,
        need_weights: bool = False,
        queries: Tensor | None = None,
        packing: TokenPacking | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x: (B, T, D) queries. memory: (B, S, D) encoder states for cross-attention.

        rope: (cos, sin) for the new positions, applied to queries and keys (self-attention only).
        cache: this layer's cache; self-attention appends the new keys/values to it, and
        cross-attention computes memory keys/values once and reuses them afterwards.
        queries: (B, Tq) positions of x whose outputs are wanted (self-attention without a
        cache); every position still serves as a key and value. The output is then (B, Tq, D).
        packing: x is (N, D), the real tokens of a padded (B, T) batch (layers/packing.py); the
        projections run on those rows, attention on the (B, T) layout, and the output is (N, D).
        Returns the output (B, T, D) and, if need_weights, the weights (B, H, T, T_keys).
        """
        rows = x.shape[0]
        if packing is not None and (cache is not None or queries is not None):
            raise ValueError("packing= is for whole padded sequences; it combines with neither cache nor queries")
        if self.cross:
            q = self.q_proj(x)
            if packing is not None:
                q = packing.unpack(q)
                rows = q.shape[0]
            q = self._heads(q, 1)[0]
            if cache is not None and cache.cross_k is not None:
                k, v = cache.cross_k, cache.cross_v
            else:
                if memory is None:
                    raise ValueError("cross-attention needs `memory` (the encoder output) on its first call")
                k, v = self._heads(self.kv_proj(memory), 2)
                if cache is not None:
                    cache.cross_k, cache.cross_v = k, v
            if k.shape[0] != rows:  # one memory per sentence, several beams (see group_queries)
                q = group_queries(q, k.shape[0])
        else:
            qkv = self.qkv_proj(x)
            if packing is not None:
                qkv = packing.unpack(qkv)
                rows = qkv.shape[0]
            batch, length, _ = qkv.shape
            qkv = qkv.view(batch, length, 3, self.n_heads, self.d_head).permute(0, 2, 3, 1, 4)
            q, k, v = qkv.unbind(1)  # each (B, H, T, d)
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
                if cache is not None:
                    k, v = cache.append(k, v)
            elif cache is not None:
                k, v = cache.append_kv(qkv[:, 1:])  # keys and values in one copy
            if queries is not None:
                if cache is not None:
                    raise ValueError("queries= selects outputs of a whole sequence; it does not combine with a cache")
                q, mask, bias = select_queries(queries, q, mask, bias)
        out, weights = scaled_dot_product_attention(
            q,
            k,
            v,
            mask=mask,
            bias=bias,
            causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
            impl=self.impl,
        )
        if out.shape[0] != rows:
            out = ungroup_queries(out, rows)
            weights = ungroup_queries(weights, rows) if weights is not None else None
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, self.d_model)
        if packing is not None:
            out = packing.pack(out)
        return self.out_proj(out), weights
