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

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.layers.attention import MultiHeadAttention
from nanoformer.layers.cache import KVCache, LayerCache
from nanoformer.layers.dropout import Dropout
from nanoformer.layers.fast_decode import fast_decode_step, make_plan
from nanoformer.layers.feedforward import FeedForward
from nanoformer.layers.norms import make_norm
from nanoformer.layers.packing import TokenPacking
from nanoformer.layers.positional import RotaryEmbedding, alibi_bias, alibi_slopes


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
        packing: x is (N, D), the batch's real tokens only (layers/packing.py), and so is the output."""
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
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """packing: x is (N, D), the batch's real tokens only (layers/packing.py), and so is the output."""
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
        # In training, the token-wise sublayers skip padding (layers/packing.py); evaluation keeps
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
        packing: the token-wise sublayers run on these positions only (layers/packing.py); the
        others come back as zeros. Causal attention makes trailing positions safe to skip: no
        earlier position reads them. The caller knows which ones nothing needs (the training loss).
        """
        if packing is not None and cache is not None:
            raise ValueError("packing= is for whole teacher-forced sequences; it does not combine with a cache")
        key_len = x.shape[1] + (cache.length if cache is not None else 0)
        bias, rope = self.relative_positions(position_ids, x.shape[1], key_len)
        if cache is not None and x.shape[1] == 1 and not need_weights:
            # One token per row with a cache: the same computation without module dispatch,
            # planned once per cache (see layers/fast_decode.py).
            if cache.plan is None:
                cache.plan = make_plan(self) or "modules"
            if cache.plan != "modules":
                hidden = fast_decode_step(cache.plan, x, cache, self_mask, memory, memory_mask, bias, rope)
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
                need_weights=need_weights,
                packing=packing,
            )
            if self_attentions is not None:
                self_attentions.append(self_w)
                cross_attentions.append(cross_w)
        return StackOutput(self.finish(x, packing), self_attentions, cross_attentions if self.cross else None)

    def new_cache(self, capacity: int) -> KVCache:
        return KVCache(len(self.layers), capacity)

