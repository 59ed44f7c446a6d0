"""Encoder and decoder layers, and the stacks built from them.

Each layer wraps its sublayers (attention, FFN) in a residual connection and a norm, in one of
two orders:
- post-LN, the paper's:  x = LN(x + Dropout(Sublayer(x)))
- pre-LN, GPT-2's:       x = x + Dropout(Sublayer(LN(x)))   (and a final LN after the stack)
Pre-LN trains stably without a long warm-up; post-LN is what the paper, BERT and Marian use.

The stacks own what all their layers share: the relative-position machinery (RoPE angles, ALiBi
slopes), computed once per forward and handed to every layer.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.kernels.decode_step import LayerWeights, decode_step  # one-token steps: kernels/decode_step.py
from nanoformer.kernels.dropout import Dropout  # nn.Dropout, fast on the CPU: kernels/dropout.py
from nanoformer.kernels.gemm import Linear, frozen_linear
from nanoformer.kernels.int8 import Int8Linear
from nanoformer.kernels.packing import TokenPacking  # padding-free token-wise sublayers: kernels/packing.py
from nanoformer.layers.attention import MultiHeadAttention
from nanoformer.layers.cache import KVCache, LayerCache
from nanoformer.layers.feedforward import FeedForward
from nanoformer.layers.masks import additive_mask
from nanoformer.layers.norms import make_norm
from nanoformer.layers.positional import RotaryEmbedding, alibi_bias, alibi_slopes, apply_rotary

_DECODING_LOCK = threading.Lock()  # guards Decoder.decoding's depth count across threads


@dataclass
class StackOutput:
    """A stack's hidden states and, when asked for, every layer's attention weights (B, H, Tq, Tk)."""

    hidden: Tensor
    self_attentions: list[Tensor] | None = None
    cross_attentions: list[Tensor] | None = None


class _ResidualLayer(nn.Module):
    """The residual + norm wiring shared by encoder and decoder layers."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.dropout = Dropout(config.dropout)

    def before(self, norm: nn.Module, x: Tensor) -> Tensor:
        """The sublayer's input: LN(x) for pre-LN, x itself for post-LN."""
        return norm(x) if self.pre_norm else x

    def after(self, norm: nn.Module, x: Tensor, sublayer_out: Tensor) -> Tensor:
        """Add the sublayer's output to the residual stream (and normalise, for post-LN)."""
        if self.training:  # skipping the no-op call in eval mode saves real time per decoding step
            sublayer_out = self.dropout(sublayer_out)
        x = x + sublayer_out
        return x if self.pre_norm else norm(x)


def _attention(config: ModelConfig, cross: bool = False) -> MultiHeadAttention:
    return MultiHeadAttention(
        config.d_model,
        config.n_heads,
        cross=cross,
        bias=config.bias,
        dropout=config.attention_dropout,
        impl=config.attention_impl,
    )


def _ffn(config: ModelConfig) -> FeedForward:
    return FeedForward(config.d_model, config.d_ff, config.activation, config.bias, config.activation_dropout)


def _norm(config: ModelConfig) -> nn.Module:
    return make_norm(config.norm, config.d_model, config.norm_eps, config.bias)


class EncoderLayer(_ResidualLayer):
    """Self-attention over the whole sequence, then the FFN."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.self_attn = _attention(config)
        self.self_attn_norm = _norm(config)
        self.ffn = _ffn(config)
        self.ffn_norm = _norm(config)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        need_weights: bool = False,
        keep: Tensor | None = None,
        packing: TokenPacking | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """keep: (B, Tq) positions whose outputs are wanted; the output is then (B, Tq, D).
        Every position is still attended to, but only the kept ones pass the output projection
        and the FFN, so a last layer feeding an MLM head on 15% of the tokens does a fraction of its work.
        packing: x is (N, D), the batch's real tokens only (kernels/packing.py), and so is the output."""
        h, weights = self.self_attn(self.before(self.self_attn_norm, x), mask=mask, bias=bias, rope=rope,
                                    need_weights=need_weights, queries=keep, packing=packing)
        if keep is not None:
            x = x.gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = self.after(self.self_attn_norm, x, h)
        x = self.after(self.ffn_norm, x, self.ffn(self.before(self.ffn_norm, x)))
        return x, weights


class DecoderLayer(_ResidualLayer):
    """Masked self-attention, then (encoder-decoder only) cross-attention to the memory, then the FFN."""

    def __init__(self, config: ModelConfig, cross: bool) -> None:
        super().__init__(config)
        self.self_attn = _attention(config)
        self.self_attn_norm = _norm(config)
        self.cross_attn = _attention(config, cross=True) if cross else None
        self.cross_attn_norm = _norm(config) if cross else None
        self.ffn = _ffn(config)
        self.ffn_norm = _norm(config)

    def forward(
        self,
        x: Tensor,
        self_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        bias: Tensor | None = None,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
        packing: TokenPacking | None = None,
        memory_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """memory_bias: an additive mask over the memory, instead of or with memory_mask.
        packing: x is (N, D), the batch's real tokens only (kernels/packing.py), and so is the output."""
        h, self_weights = self.self_attn(
            self.before(self.self_attn_norm, x),
            mask=self_mask,
            bias=bias,
            rope=rope,
            causal=True,
            cache=cache,
            need_weights=need_weights,
            packing=packing,
        )
        x = self.after(self.self_attn_norm, x, h)
        cross_weights = None
        if self.cross_attn is not None:
            h, cross_weights = self.cross_attn(
                self.before(self.cross_attn_norm, x),
                memory=memory,
                mask=memory_mask,
                bias=memory_bias,
                cache=cache,
                need_weights=need_weights,
                packing=packing,
            )
            x = self.after(self.cross_attn_norm, x, h)
        x = self.after(self.ffn_norm, x, self.ffn(self.before(self.ffn_norm, x)))
        return x, self_weights, cross_weights


class _Stack(nn.Module):
    """What encoder and decoder stacks share: relative positions and the optional final norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.rotary = RotaryEmbedding(config.d_head, config.rope_base) if config.positional == "rope" else None
        if config.positional == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(config.n_heads), persistent=False)
        else:
            self.alibi_slopes = None
        self.final_norm = _norm(config) if config.use_final_norm else None

    def relative_positions(
        self, position_ids: Tensor, query_len: int, key_len: int
    ) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
        """(ALiBi bias, RoPE cos/sin) for these queries; None for what the config does not use."""
        bias = None
        if self.alibi_slopes is not None:
            bias = alibi_bias(self.alibi_slopes, query_len, key_len, offset=key_len - query_len)
        rope = self.rotary(position_ids) if self.rotary is not None else None
        return bias, rope

    def finish(self, x: Tensor, packing: TokenPacking | None = None) -> Tensor:
        """The final norm, if any; then, for packed rows, back to the padded (B, T, D) layout."""
        x = self.final_norm(x) if self.final_norm is not None else x
        return packing.unpack(x) if packing is not None else x


class Encoder(_Stack):
    def __init__(self, config: ModelConfig, n_layers: int) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(n_layers))

    def forward(
        self,
        x: Tensor,
        position_ids: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = False,
        keep: Tensor | None = None,
    ) -> StackOutput:
        """x: embedded input (B, T, D); mask: (B, 1, 1, T) key mask, True = real token.

        keep: (B, Tq) positions whose final states are wanted; the last layer computes only those
        and the hidden states come back (B, Tq, D)."""
        bias, rope = self.relative_positions(position_ids, x.shape[1], x.shape[1])
        attentions = [] if need_weights else None
        # In training, the token-wise sublayers skip padding (kernels/packing.py); evaluation keeps
        # the padded layout, so that every position's states match other implementations'.
        packing = None
        key_mask = mask is not None and mask.dtype == torch.bool and tuple(mask.shape) == (x.shape[0], 1, 1, x.shape[1])
        if self.training and key_mask:
            packing = TokenPacking.worth_it(mask.reshape(x.shape[0], x.shape[1]))
        if packing is not None:
            x = packing.pack(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            layer_keep = keep if i == last else None
            if layer_keep is not None and packing is not None:
                x, packing = packing.unpack(x), None  # the last layer computes the kept positions only
            x, weights = layer(x, mask=mask, bias=bias, rope=rope, need_weights=need_weights,
                               keep=layer_keep, packing=packing)
            if attentions is not None:
                attentions.append(weights)
        return StackOutput(self.finish(x, packing), self_attentions=attentions)


class Decoder(_Stack):
    def __init__(self, config: ModelConfig, n_layers: int, cross: bool) -> None:
        super().__init__(config)
        self.cross = cross
        self.layers = nn.ModuleList(DecoderLayer(config, cross) for _ in range(n_layers))
        self._step_weights: list[LayerWeights] | None = None  # set inside `decoding()`
        self._decoding_depth = 0

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """A block in which one-token decoding steps skip the module machinery (kernels/decode_step.py).

        The generation loops run inside it. The layers' parameters are looked up once, on entry,
        and the steps compute exactly what the layers compute. Within the block the modules must
        not change, and forward hooks on the layers' submodules do not run in those steps
        (outside it, `decode_step` runs the modules, hooks and all). Layers or projections other
        than the ones the decoder builds (a wrapped projection, e.g. LoRA), training mode and
        the math attention path keep the module path. Nests.
        """
        with _DECODING_LOCK:  # a server may decode with one model in several threads
            self._decoding_depth += 1
            if self._decoding_depth == 1:
                self._step_weights = self._look_up_step_weights()
        try:
            yield
        finally:
            with _DECODING_LOCK:
                self._decoding_depth -= 1
                if self._decoding_depth == 0:
                    self._step_weights = None

    def _look_up_step_weights(self) -> list[LayerWeights] | None:
        """Each layer's parameters for `decode_step`, or None where it would compute something else."""
        if self.training:
            return None
        found = []
        for layer in self.layers:
            attn, cross, ffn = layer.self_attn, layer.cross_attn, layer.ffn
            linears = [attn.qkv_proj, attn.out_proj, ffn.up, ffn.gate, ffn.down]
            linears += [cross.q_proj, cross.out_proj] if cross is not None else []
            if (type(layer) is not DecoderLayer or type(ffn) is not FeedForward
                    or any(a is not None and (type(a) is not MultiHeadAttention or a.impl != "sdpa") for a in (attn, cross))
                    or any(m is not None and type(m) not in (Linear, Int8Linear) for m in linears)):
                return None
            found.append(LayerWeights(
                heads=attn.n_heads, d_head=attn.d_head, scale=1.0 / math.sqrt(attn.d_head),
                self_norm=_norm_function(layer.self_attn_norm), qkv=_weights(attn.qkv_proj), self_out=_weights(attn.out_proj),
                ffn_norm=_norm_function(layer.ffn_norm), up=_weights(ffn.up), gate=_weights(ffn.gate),
                down=_weights(ffn.down), act=ffn.act,
                cross_norm=_norm_function(layer.cross_attn_norm) if cross is not None else None,
                cross_q=_weights(cross.q_proj) if cross is not None else None,
                cross_out=_weights(cross.out_proj) if cross is not None else None,
                memory_kv=cross.memory_kv if cross is not None else None,
            ))
        return found

    def forward(
        self,
        x: Tensor,
        position_ids: Tensor,
        self_mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
        packing: TokenPacking | None = None,
    ) -> StackOutput:
        """x: embedded new tokens (B, T, D), following `cache.length` cached ones.

        self_mask: (B, 1, 1, T_keys) key mask over cached + new tokens (the causal part is
        added inside attention); memory_mask: (B, 1, 1, S) over the encoder memory.
        packing: the token-wise sublayers run on these positions only (kernels/packing.py); the
        others come back as zeros. Causal attention makes trailing positions safe to skip: no
        earlier position reads them. The caller knows which ones nothing needs (the training loss).
        """
        if packing is not None and cache is not None:
            raise ValueError("packing= is for whole teacher-forced sequences; it does not combine with a cache")
        key_len = x.shape[1] + (cache.length if cache is not None else 0)
        bias, rope = self.relative_positions(position_ids, x.shape[1], key_len)
        memory_bias = None
        if cache is not None and x.shape[1] == 1:
            # A decoding step, thousands per generation: the masks and ALiBi become one additive
            # mask here, once for all layers, instead of being combined inside each attention.
            # Each query must see a key: decoding's do (a token sees itself, a source has a word).
            if self_mask is None or bool(self_mask.any(-1).all()):
                self_mask, bias = None, additive_mask(self_mask, bias, x.dtype)
            if memory_mask is not None and bool(memory_mask.any(-1).all()):
                memory_mask, memory_bias = None, additive_mask(memory_mask, None, x.dtype)
            steps = self._step_weights
            if steps is not None and self_mask is None and memory_mask is None and not need_weights and not self.training:
                hidden = decode_step(steps, self.layers[0].pre_norm, x, cache.layers, bias, memory,
                                     memory_bias, rope, apply_rotary)
                return StackOutput(self.finish(hidden))
        self_attentions = [] if need_weights else None
        cross_attentions = [] if need_weights else None
        if packing is not None:
            x = packing.pack(x)
        for i, layer in enumerate(self.layers):
            x, self_w, cross_w = layer(
                x,
                self_mask=self_mask,
                memory=memory,
                memory_mask=memory_mask,
                bias=bias,
                rope=rope,
                cache=cache.layers[i] if cache is not None else None,
                memory_bias=memory_bias,
                need_weights=need_weights,
                packing=packing,
            )
            if self_attentions is not None:
                self_attentions.append(self_w)
                cross_attentions.append(cross_w)
        return StackOutput(self.finish(x, packing), self_attentions, cross_attentions if self.cross else None)

    def new_cache(self, capacity: int) -> KVCache:
        return KVCache(len(self.layers), capacity)


def _weights(layer: nn.Module | None) -> Callable[[Tensor], Tensor] | None:
    """The layer as a plain function: `frozen_linear` on its weight and bias, or an int8 layer's own product."""
    if layer is None:
        return None
    if type(layer) is Int8Linear:
        return layer.forward
    return frozen_linear(layer.weight, layer.bias)


def _norm_function(norm: nn.Module) -> Callable[[Tensor], Tensor]:
    """LayerNorm as a function call (the module call costs more than the norm of one token); others as they are."""
    if type(norm) is nn.LayerNorm:
        shape, weight, bias, eps = norm.normalized_shape, norm.weight, norm.bias, norm.eps
        return lambda x: F.layer_norm(x, shape, weight, bias, eps)
    return norm

