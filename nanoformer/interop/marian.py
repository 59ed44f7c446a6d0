"""Marian (`MarianMTModel`, the opus-mt translation models) <-> our `Seq2SeqTransformer`.

Marian is the paper's model almost verbatim: post-LN, no final norm, no LayerNorm after the
embeddings, sinusoidal positions and token embeddings scaled by √d_model. The details:
- positions are the paper's sines and cosines stored half-split (all sines, then all cosines):
  our `sinusoidal_layout="half"`; they are computed, not learned, so import only checks them and
  export writes them;
- one embedding matrix shared by source, target and the output projection (opus-mt), and a
  per-token output bias `final_logits_bias` (a buffer in Hugging Face) = our `lm_head.bias`;
- separate q / k / v projections: self-attention q, k, v stack into our `qkv_proj`;
  cross-attention q goes to `cross_attn.q_proj`, k and v stack into `cross_attn.kv_proj`;
- "swish" (opus-mt's activation) is SiLU;
- the decoder starts from the pad token (`decoder_start_token_id`), our `decoder_start_id`;
- LayerNorm eps is torch's default 1e-5 (Marian has no setting for it).
Positions: Hugging Face numbers target positions 0, 1, 2, ... regardless of padding, as we do
when no target padding mask is given (with a left-padded target mask, ours count real tokens).
Layer drop (encoder_layerdrop / decoder_layerdrop) is a training-only option we do not have.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nanoformer.config import ModelConfig
from nanoformer.errors import UserError
from nanoformer.interop._common import (
    Rule,
    activation_from_hf,
    activation_to_hf,
    check_unused,
    convert_from_hf,
    convert_to_hf,
    fill_aliases,
    finish,
    fused,
    layer_norm,
    linear,
    load_exact,
    need_transformers,
    require,
    rule,
    special_id,
)
from nanoformer.layers.positional import sinusoidal_table
from nanoformer.models.seq2seq import Seq2SeqTransformer

HF_CLASSES = ("MarianMTModel",)
MARIAN_NORM_EPS = 1e-5
_POSITIONS = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a Hugging Face MarianConfig."""
    c = hf_config
    pairs = (("n_heads", "encoder_attention_heads", "decoder_attention_heads"), ("d_ff", "encoder_ffn_dim", "decoder_ffn_dim"))
    for ours, enc, dec in pairs:
        if getattr(c, enc) != getattr(c, dec):
            raise UserError(
                f"MarianConfig.{enc} = {getattr(c, enc)} differs from {dec} = {getattr(c, dec)}; "
                f"nanoformer has one {ours} for both stacks"
            )
    share = bool(getattr(c, "share_encoder_decoder_embeddings", True))
    target_vocab = c.decoder_vocab_size or c.vocab_size
    if share and target_vocab != c.vocab_size:
        raise UserError(
            f"MarianConfig shares embeddings but decoder_vocab_size = {target_vocab} != vocab_size = {c.vocab_size}"
        )
    vocab = max(c.vocab_size, target_vocab)
    return ModelConfig(
        arch="encoder-decoder",
        vocab_size=c.vocab_size,
        target_vocab_size=None if target_vocab == c.vocab_size else target_vocab,
        d_model=c.d_model,
        n_heads=c.encoder_attention_heads,
        n_layers=c.encoder_layers,
        n_encoder_layers=c.encoder_layers,
        n_decoder_layers=c.decoder_layers,
        d_ff=c.encoder_ffn_dim,
        max_positions=c.max_position_embeddings,
        dropout=float(c.dropout),
        attention_dropout=float(c.attention_dropout),
        activation_dropout=float(c.activation_dropout),
        activation=activation_from_hf(c.activation_function, "MarianConfig.activation_function"),
        bias=True,
        norm="layernorm",
        norm_eps=MARIAN_NORM_EPS,
        norm_position="post",
        final_norm=None,  # post-LN: no final norm
        embedding_norm=False,
        positional="sinusoidal",
        sinusoidal_layout="half",
        scale_embeddings=bool(c.scale_embedding),
        tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)),
        share_embeddings=share,
        output_bias=True,
        # Hugging Face initialises Marian with N(0, init_std) everywhere: our "bert" scheme.
        init="bert",
        init_std=c.init_std,
        pad_id=special_id(c.pad_token_id, vocab),
        bos_id=special_id(c.bos_token_id, vocab),
        eos_id=special_id(c.eos_token_id, vocab),
        decoder_start_id=special_id(c.decoder_start_token_id, vocab),
    )


def config_to_hf(config: ModelConfig) -> Any:
    """A Hugging Face MarianConfig for our config (UserError if Marian cannot express it)."""
    transformers = need_transformers()
    require(
        config,
        "Marian",
        dict(arch="encoder-decoder", norm="layernorm", bias=True, norm_eps=MARIAN_NORM_EPS, norm_position="post",
             use_final_norm=False, embedding_norm=False, positional="sinusoidal", sinusoidal_layout="half",
             type_vocab_size=0),
    )
    return transformers.MarianConfig(
        vocab_size=config.vocab_size,
        decoder_vocab_size=config.tgt_vocab_size,
        share_encoder_decoder_embeddings=config.share_embeddings,
        tie_word_embeddings=config.tie_embeddings,
        d_model=config.d_model,
        encoder_layers=config.encoder_layers,
        decoder_layers=config.decoder_layers,
        encoder_attention_heads=config.n_heads,
        decoder_attention_heads=config.n_heads,
        encoder_ffn_dim=config.d_ff,
        decoder_ffn_dim=config.d_ff,
        max_position_embeddings=config.max_positions,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        activation_dropout=config.activation_dropout,
        activation_function=activation_to_hf(config.activation, silu_name="swish"),
        scale_embedding=config.scale_embeddings,
        init_std=config.init_std,
        pad_token_id=config.pad_id,
        bos_token_id=config.bos_id,
        eos_token_id=config.eos_id,
        forced_eos_token_id=config.eos_id,
        decoder_start_token_id=config.start_id,
    )


def _embedding_keys(config: ModelConfig) -> tuple[str, str]:
    """The Hugging Face source and target token-embedding keys."""
    if config.share_embeddings:
        return "model.shared.weight", "model.shared.weight"
    return "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"


def _attention(ours: str, theirs: str, cross: bool) -> list[Rule]:
    projections = (f"{theirs}.{p}_proj" for p in ("q", "k", "v"))
    if cross:
        q, *kv = projections
        out = linear(f"{ours}.q_proj", q) + fused(f"{ours}.kv_proj", kv)
    else:
        out = fused(f"{ours}.qkv_proj", projections)
    return out + linear(f"{ours}.out_proj", f"{theirs}.out_proj")


def _ffn(ours: str, theirs: str) -> list[Rule]:
    return linear(f"{ours}.ffn.up", f"{theirs}.fc1") + linear(f"{ours}.ffn.down", f"{theirs}.fc2") + layer_norm(
        f"{ours}.ffn_norm", f"{theirs}.final_layer_norm"
    )


def rules(config: ModelConfig) -> list[Rule]:
    """Our state-dict keys <- MarianMTModel's."""
    src, tgt = _embedding_keys(config)
    out = [
        rule("src_embeddings.tokens.weight", src),
        rule("tgt_embeddings.tokens.weight", tgt),
        rule("lm_head.weight", tgt if config.tie_embeddings else "lm_head.weight"),
    ]
    if config.output_bias:
        out.append(rule("lm_head.bias", "final_logits_bias", op="flatten"))
    for i in range(config.encoder_layers):
        ours, theirs = f"encoder.layers.{i}", f"model.encoder.layers.{i}"
        out += _attention(f"{ours}.self_attn", f"{theirs}.self_attn", cross=False)
        out += layer_norm(f"{ours}.self_attn_norm", f"{theirs}.self_attn_layer_norm")
        out += _ffn(ours, theirs)
    for i in range(config.decoder_layers):
        ours, theirs = f"decoder.layers.{i}", f"model.decoder.layers.{i}"
        out += _attention(f"{ours}.self_attn", f"{theirs}.self_attn", cross=False)
        out += layer_norm(f"{ours}.self_attn_norm", f"{theirs}.self_attn_layer_norm")
        out += _attention(f"{ours}.cross_attn", f"{theirs}.encoder_attn", cross=True)
        out += layer_norm(f"{ours}.cross_attn_norm", f"{theirs}.encoder_attn_layer_norm")
        out += _ffn(ours, theirs)
    return out


def _aliases(config: ModelConfig) -> dict[str, str]:
    """Tied copies Hugging Face lists under their own names."""
    src, tgt = _embedding_keys(config)
    aliases = {}
    if config.share_embeddings:
        aliases.update({"model.encoder.embed_tokens.weight": src, "model.decoder.embed_tokens.weight": src})
    if config.tie_embeddings:
        aliases["lm_head.weight"] = tgt
    return aliases


def from_hf(hf_model: nn.Module, **overrides: Any) -> Seq2SeqTransformer:
    """Our Seq2SeqTransformer with the weights of a MarianMTModel (same dtype, device and train/eval mode).

    overrides: ModelConfig fields that do not alter the weights (e.g. attention_impl="math").
    """
    config = config_from_hf(hf_model.config)
    if overrides:
        config = config.replace(**overrides)
    model = Seq2SeqTransformer(config)
    hf_state = hf_model.state_dict()
    state, used = convert_from_hf(rules(config), hf_state)
    expected = sinusoidal_table(config.max_positions, config.d_model, "half")
    for key in _POSITIONS:
        if key in hf_state:
            gap = (hf_state[key].float().cpu() - expected).abs().max().item()
            if gap > 1e-4:
                raise UserError(f"{key} is {gap:.3g} away from the sinusoidal table; Marian positions must be the fixed sinusoids")
    check_unused(hf_state, used, [*_aliases(config), *_POSITIONS], "MarianMTModel")
    load_exact(model, state, "Marian import")
    return finish(model, hf_model)


def to_hf(model: Seq2SeqTransformer) -> nn.Module:
    """A MarianMTModel with our Seq2SeqTransformer's weights (same dtype, device and train/eval mode)."""
    transformers = need_transformers()
    config = model.config
    hf_model = transformers.MarianMTModel(config_to_hf(config))
    our_state = model.state_dict()
    state = convert_to_hf(rules(config), our_state)
    if not config.output_bias:
        state["final_logits_bias"] = torch.zeros(1, config.tgt_vocab_size)
    table = sinusoidal_table(config.max_positions, config.d_model, "half")
    state.update({key: table.clone() for key in _POSITIONS})
    fill_aliases(state, _aliases(config))
    load_exact(hf_model, state, "Marian export")
    return finish(hf_model, model)
