"""One decoding step of a decoder stack, without the module machinery.

Generating a token runs one position through every layer. The arithmetic is small (at batch 1,
a few matrix-vector products per layer), so the Python around it counts: `nn.Module` calls,
method calls and shape bookkeeping cost the module path about 75 µs per layer (measured for the
6-layer, 384-wide GPT of benchmarks/gpt_vs_hf.py on one thread: 3.4 ms per token through the
modules, 3.0 ms through this file). This file walks the *same parameters* with functional calls
for the one case that runs thousands of times: one new token per row, eval mode, a KV cache.

It is an optimisation, not a second model: `Decoder.forward` calls it only when it would compute
exactly what the layers compute, and the tests hold the two paths equal for every configuration
(pre/post-LN, LayerNorm/RMSNorm, all activations and positional schemes, cross-attention, masks).
Anything it does not know (a replaced or hooked submodule, e.g. a LoRA wrapper around a
projection, or the math attention path used for inspection) sends the step down the module path.

The decision and the parameter lookups (`nn.Module.__getattr__` is slow too) are made once per
KV cache, i.e. once per generation, into a `DecodePlan`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.layers.attention import MultiHeadAttention, group_queries, ungroup_queries
from nanoformer.layers.cache import KVCache
from nanoformer.layers.feedforward import FeedForward
from nanoformer.layers.linear import Linear, linear
from nanoformer.layers.positional import apply_rotary


def _plain(module: nn.Module | None) -> bool:
    """True if calling `module` would run its own forward and nothing else (no hooks)."""
    return module is None or not (module._forward_hooks or module._forward_pre_hooks)


def _weights(layer: nn.Linear | None) -> tuple[Tensor, Tensor | None] | None:
    return None if layer is None else (layer.weight, layer.bias)


def _norm_fn(norm: nn.Module | None) -> Callable[[Tensor], Tensor] | None:
    if norm is None:
        return None
    if type(norm) is nn.LayerNorm:
        shape, weight, bias, eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps
        return lambda x: F.layer_norm(x, shape, weight, bias, eps)
    return norm  # RMSNorm and anything else: its own forward


@dataclass
class LayerPlan:
    """One decoder layer's parameters, looked up once."""

    heads: int
    d_head: int
    scale: float  # 1/√d_head, the expression attention.py uses, so results match to the bit
    self_norm: Callable[[Tensor], Tensor]
    qkv: tuple[Tensor, Tensor | None]
    self_out: tuple[Tensor, Tensor | None]
    cross_norm: Callable[[Tensor], Tensor] | None
    cross_q: tuple[Tensor, Tensor | None] | None
    cross_kv: tuple[Tensor, Tensor | None] | None
    cross_out: tuple[Tensor, Tensor | None] | None
    ffn_norm: Callable[[Tensor], Tensor]
    up: tuple[Tensor, Tensor | None]
    gate: tuple[Tensor, Tensor | None] | None
    down: tuple[Tensor, Tensor | None]
    act: Callable[[Tensor], Tensor]


@dataclass
class DecodePlan:
    pre_norm: bool
    layers: list[LayerPlan]


def make_plan(decoder: nn.Module) -> DecodePlan | None:
    """The plan for `decoder`, or None if the fast path would not compute exactly what its layers do."""
    # blocks.py calls this module, so the layer class is imported at call time.
    from nanoformer.layers.blocks import DecoderLayer

    if decoder.training or nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return None
    plans = []
    for layer in decoder.layers:
        if type(layer) is not DecoderLayer:  # a subclass may compute something else
            return None
        attn, cross, ffn = layer.self_attn, layer.cross_attn, layer.ffn
        if type(ffn) is not FeedForward or not (_plain(layer) and _plain(ffn)):
            return None
        linears = [ffn.up, ffn.gate, ffn.down, attn.qkv_proj if not attn.cross else None, attn.out_proj]
        for a in (attn, cross):
            if a is not None and (type(a) is not MultiHeadAttention or a.impl != "sdpa" or not _plain(a)):
                return None
        if cross is not None:
            linears += [cross.q_proj, cross.kv_proj, cross.out_proj]
        if any(m is not None and (type(m) is not Linear or not _plain(m)) for m in linears):
            return None
        norms = [layer.self_attn_norm, layer.cross_attn_norm, layer.ffn_norm]
        if not all(_plain(m) for m in norms):
            return None
        plans.append(
            LayerPlan(
                heads=attn.n_heads,
                d_head=attn.d_head,
                scale=1.0 / math.sqrt(attn.d_head),
                self_norm=_norm_fn(layer.self_attn_norm),
                qkv=_weights(attn.qkv_proj),
                self_out=_weights(attn.out_proj),
                cross_norm=_norm_fn(layer.cross_attn_norm),
                cross_q=_weights(cross.q_proj) if cross is not None else None,
                cross_kv=_weights(cross.kv_proj) if cross is not None else None,
                cross_out=_weights(cross.out_proj) if cross is not None else None,
                ffn_norm=_norm_fn(layer.ffn_norm),
                up=_weights(ffn.up),
                gate=_weights(ffn.gate),
                down=_weights(ffn.down),
                act=ffn.act,
            )
        )
    return DecodePlan(pre_norm=decoder.layers[0].pre_norm, layers=plans)


def fast_decode_step(
    plan: DecodePlan,
    x: Tensor,
    cache: KVCache,
    self_mask: Tensor | None = None,
    memory: Tensor | None = None,
    memory_mask: Tensor | None = None,
    bias: Tensor | None = None,
    rope: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The stack's output (B, 1, D) for one new embedded token per row, x (B, 1, D).

    Arguments as in `Decoder.forward`. Every query row must have at least one visible key
    (true in decoding: a token always sees itself, and a source has at least one real token).
    """
    batch = x.shape[0]
    pre_norm = plan.pre_norm
    # One additive or boolean mask for self-attention, as attention.py combines them.
    attn_mask = self_mask
    if bias is not None:
        attn_mask = bias if self_mask is None else bias.masked_fill(~self_mask, float("-inf"))
    for p, layer_cache in zip(plan.layers, cache.layers):
        heads, d_head, scale = p.heads, p.d_head, p.scale

        # Masked self-attention over the cache plus this token (causality is implicit: the cache
        # holds only the past).
        h = p.self_norm(x) if pre_norm else x
        qkv = linear(h, *p.qkv).view(batch, 3, heads, 1, d_head)  # one position: (B,1,3,H,d) == (B,3,H,1,d)
        q = qkv[:, 0]
        if rope is not None:
            q = apply_rotary(q, *rope)
            k, v = layer_cache.append(apply_rotary(qkv[:, 1], *rope), qkv[:, 2])
        else:
            k, v = layer_cache.append_kv(qkv[:, 1:])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
        out = linear(out.view(batch, 1, heads * d_head), *p.self_out)
        x = x + out if pre_norm else p.self_norm(x + out)

        if p.cross_q is not None:
            h = p.cross_norm(x) if pre_norm else x
            q = linear(h, *p.cross_q).view(batch, heads, 1, d_head)
            if layer_cache.cross_k is None:
                if memory is None:
                    raise ValueError("cross-attention needs `memory` (the encoder output) on its first call")
                kv = linear(memory, *p.cross_kv).view(memory.shape[0], memory.shape[1], 2, heads, d_head)
                layer_cache.cross_k, layer_cache.cross_v = kv.permute(2, 0, 3, 1, 4).unbind(0)
            grouped = layer_cache.cross_k.shape[0] != batch  # one memory per sentence, several beams
            if grouped:
                q = group_queries(q, layer_cache.cross_k.shape[0])
            out = F.scaled_dot_product_attention(
                q, layer_cache.cross_k, layer_cache.cross_v, attn_mask=memory_mask, scale=scale
            )
            if grouped:
                out = ungroup_queries(out, batch)
            out = linear(out.view(batch, 1, heads * d_head), *p.cross_out)
            x = x + out if pre_norm else p.cross_norm(x + out)

        h = p.ffn_norm(x) if pre_norm else x
        if p.gate is None:
            hidden = p.act(linear(h, *p.up))
        else:
            hidden = p.act(linear(h, *p.gate)) * linear(h, *p.up)
        out = linear(hidden, *p.down)
        x = x + out if pre_norm else p.ffn_norm(x + out)
    return x
