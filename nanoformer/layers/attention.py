"""Scaled dot-product attention and multi-head attention (self and cross).

Attention(Q, K, V) = softmax(QKᵀ / √d_k) · V: each query scores every key, the scores become
weights through a softmax, and the output is the weighted sum of the values. The 1/√d_k keeps the
dot products of wide vectors from saturating the softmax.

Two paths share one interface:
- "math": the formula written out; it can return the attention weights for inspection;
- "sdpa": torch's fused `scaled_dot_product_attention` (flash / memory-efficient kernels).
`need_weights=True` always takes the math path, and so does attention dropout on the CPU (torch's
kernels fall back to the formula anyway; ours draws the dropout mask cheaply, kernels/dropout.py).
Masks follow `masks.py`: True = may attend. A query whose keys are all masked gets a zero output
(never NaN, forward or backward).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.config import ATTENTION_IMPLS
from nanoformer.kernels.dropout import dropout  # F.dropout, fast on the CPU: kernels/dropout.py
from nanoformer.kernels.gemm import Linear  # nn.Linear on this CPU's fast GEMM: kernels/gemm.py
from nanoformer.kernels.grouped_attention import group_queries, ungroup_queries  # beams sharing a memory
from nanoformer.kernels.packing import TokenPacking  # padding-free token-wise sublayers
from nanoformer.layers.cache import LayerCache
from nanoformer.layers.masks import causal_mask
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
    # formula anyway, with a slow Bernoulli mask; ours draws it cheaply (kernels/dropout.py).
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
        """x: (B, T, D) queries; memory: (B, S, D) encoder states, for cross-attention.

        Returns the output (B, T, D) and, if need_weights, the weights (B, H, T, T_keys). The
        arguments are those of `self_attention` or `cross_attention`, whichever this module is.
        """
        if packing is not None and (cache is not None or queries is not None):
            raise ValueError("packing= is for whole padded sequences; it combines with neither cache nor queries")
        if self.cross:
            if rope is not None or causal or queries is not None:
                raise ValueError("cross-attention takes no rope, causal or queries")
            return self.cross_attention(x, memory, mask, bias, cache, need_weights, packing)
        if memory is not None:
            raise ValueError("self-attention takes no memory; build the module with cross=True")
        return self.self_attention(x, mask, bias, rope, causal, cache, need_weights, queries, packing)

    def self_attention(
        self, x: Tensor, mask: Tensor | None = None, bias: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None, causal: bool = False, cache: LayerCache | None = None,
        need_weights: bool = False, queries: Tensor | None = None, packing: TokenPacking | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Queries, keys and values all from x (one fused projection).

        rope: (cos, sin) of the new positions, rotating queries and keys. cache: the new keys and
        values are appended to it and attention reads all of them (decoding). queries: (B, Tq)
        positions whose outputs are wanted (no cache); every position still serves as a key and
        value, and the output is (B, Tq, D). packing: x is (N, D), the real tokens of a padded
        (B, T) batch; the projections run on those rows, attention on the (B, T) layout.
        """
        qkv = self.qkv_proj(x)
        if packing is not None:
            qkv = packing.unpack(qkv)
        batch, length, _ = qkv.shape
        q, k, v = qkv.view(batch, length, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4).unbind(0)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            if queries is not None:
                raise ValueError("queries= selects outputs of a whole sequence; it does not combine with a cache")
            k, v = cache.append(k, v)
        if queries is not None:
            q, mask, bias = select_queries(queries, q, mask, bias)
        out, weights = self._attend(q, k, v, mask, bias, causal, need_weights)
        return self._merge_heads(out, packing), weights

    def cross_attention(
        self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None, bias: Tensor | None = None,
        cache: LayerCache | None = None, need_weights: bool = False, packing: TokenPacking | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Queries from x, keys and values from the encoder memory (B_mem, S, D).

        cache: the memory's keys and values are computed on the first call and kept there
        (`memory` may then be None). The memory may hold one row per sentence for several rows
        of queries (the beams of beam search); those rows then share it (kernels/grouped_attention.py).
        """
        q = self.q_proj(x)
        if packing is not None:
            q = packing.unpack(q)
        rows = q.shape[0]
        q = q.view(rows, q.shape[1], self.n_heads, self.d_head).transpose(1, 2)
        if cache is not None:
            k, v = cache.cross_kv(memory, self.memory_kv)
        elif memory is not None:
            k, v = self.memory_kv(memory)
        else:
            raise ValueError("cross-attention needs `memory` (the encoder output) on its first call")
        if k.shape[0] != rows:
            q = group_queries(q, k.shape[0])
        out, weights = self._attend(q, k, v, mask, bias, False, need_weights)
        if out.shape[0] != rows:
            out = ungroup_queries(out, rows)
            weights = ungroup_queries(weights, rows) if weights is not None else None
        return self._merge_heads(out, packing), weights

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Cross-attention keys and values (B, H, S, d) of the encoder memory (B, S, D)."""
        batch, length, _ = memory.shape
        kv = self.kv_proj(memory).view(batch, length, 2, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None,
                causal: bool, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        return scaled_dot_product_attention(
            q, k, v, mask=mask, bias=bias, causal=causal, dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights, impl=self.impl,
        )

    def _merge_heads(self, out: Tensor, packing: TokenPacking | None) -> Tensor:
        """(B, H, T, d) -> the output projection of the concatenated heads, (B, T, D) or packed (N, D)."""
        batch, _, length, _ = out.shape
        out = out.transpose(1, 2).reshape(batch, length, self.d_model)
        if packing is not None:
            out = packing.pack(out)
        return self.out_proj(out)
