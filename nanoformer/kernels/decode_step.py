"""One decoding step of a decoder stack as plain functional calls over its parameters.

Generating a token runs one position through every layer. The arithmetic is small (at batch 1,
a few matrix-vector products per layer), so the Python around it counts: `nn.Module` calls,
attribute lookups and the general attention path cost tens of microseconds per layer and token
(measured in docs/benchmarks.md, "Decoding steps"). `Decoder.decoding()` (layers/blocks.py)
looks its layers' parameters up once per generation into `LayerWeights` and steps through this
function instead of the modules: the same operations in the same order, so the results equal
the modules' (tests/test_decode_step.py holds them equal for every configuration).

Only tensors and torch functions here; the caches are the layers' own `LayerCache`s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from nanoformer.kernels.grouped_attention import group_queries, ungroup_queries

Project = Callable[[Tensor], Tensor]  # a linear layer as a function: F.linear on its weights, or its int8 product


@dataclass
class LayerWeights:
    """One decoder layer's parameters, looked up once per generation."""

    heads: int
    d_head: int
    scale: float  # 1/√d_head, as attention computes it, so results match to the bit
    self_norm: Callable[[Tensor], Tensor]
    qkv: Project
    self_out: Project
    ffn_norm: Callable[[Tensor], Tensor]
    up: Project
    gate: Project | None
    down: Project
    act: Callable[[Tensor], Tensor]
    cross_norm: Callable[[Tensor], Tensor] | None = None
    cross_q: Project | None = None
    cross_out: Project | None = None
    memory_kv: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None  # the module's own, called once


def decode_step(
    layers: Sequence[LayerWeights],
    pre_norm: bool,
    x: Tensor,
    caches: Sequence[Any],
    self_bias: Tensor | None = None,
    memory: Tensor | None = None,
    memory_bias: Tensor | None = None,
    rope: tuple[Tensor, Tensor] | None = None,
    rotary: Callable[..., Tensor] | None = None,
) -> Tensor:
    """The stack's output (B, 1, D) for one new embedded token per row, x (B, 1, D), before the final norm.

    caches: each layer's `LayerCache`. self_bias / memory_bias: additive masks over the cached
    keys and the memory (every query sees at least one key). rope: (cos, sin) of the new
    position, applied by `rotary(x, cos, sin)` (positional.apply_rotary).
    """
    batch = x.shape[0]
    for p, cache in zip(layers, caches):
        heads, d_head, scale = p.heads, p.d_head, p.scale

        # Masked self-attention over the cache plus this token (the cache holds only the past).
        h = p.self_norm(x) if pre_norm else x
        qkv = p.qkv(h).view(batch, 3, heads, 1, d_head)  # one position: (B,1,3,H,d) is (B,3,H,1,d)
        q, k, v = qkv.unbind(1)
        if rope is not None:
            q, k = rotary(q, *rope), rotary(k, *rope)
        k, v = cache.append(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self_bias, scale=scale)
        out = p.self_out(out.view(batch, 1, heads * d_head))
        x = x + out if pre_norm else p.self_norm(x + out)

        if p.cross_q is not None:
            h = p.cross_norm(x) if pre_norm else x
            q = p.cross_q(h).view(batch, heads, 1, d_head)
            k, v = cache.cross_kv(memory, p.memory_kv)
            grouped = k.shape[0] != batch  # one memory per sentence, several beams
            if grouped:
                q = group_queries(q, k.shape[0])
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_bias, scale=scale)
            if grouped:
                out = ungroup_queries(out, batch)
            out = p.cross_out(out.view(batch, 1, heads * d_head))
            x = x + out if pre_norm else p.cross_norm(x + out)

        h = p.ffn_norm(x) if pre_norm else x
        hidden = p.act(p.up(h)) if p.gate is None else p.act(p.gate(h)) * p.up(h)
        out = p.down(hidden)
        x = x + out if pre_norm else p.ffn_norm(x + out)
    return x
