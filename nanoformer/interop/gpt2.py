"""GPT-2 (`GPT2LMHeadModel`) <-> our `DecoderModel`.

GPT-2 is a pre-LN decoder with learned positions, a final LayerNorm (ln_f) and an output
projection tied to the token embeddings. Its linear layers are `Conv1D`s that store weights as
(in, out), the transpose of nn.Linear; its fused `c_attn` projects to [q | k | v] exactly as our
`qkv_proj` does, heads contiguous within each block. "gelu_new" is the tanh approximation of
GELU (our "gelu_tanh").

Dropout: GPT-2 has embd_pdrop (embeddings), resid_pdrop (residual branches) and attn_pdrop; we
have one `dropout` for embeddings and residual branches, so import takes resid_pdrop, and export
writes `dropout` to both. GPT-2 has no dropout after the FFN activation: `activation_dropout`
is not exported. None of this changes eval-mode outputs.
"""

from __future__ import annotations

from typing import Any

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
    layer_norm,
    load_exact,
    need_transformers,
    require,
    rule,
    special_id,
)
from nanoformer.models.decoder import DecoderModel

HF_CLASSES = ("GPT2LMHeadModel",)


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a Hugging Face GPT2Config."""
    c = hf_config
    if getattr(c, "add_cross_attention", False):
        raise UserError("GPT2Config.add_cross_attention = True (a GPT-2 with cross-attention) has no nanoformer equivalent")
    if not getattr(c, "scale_attn_weights", True) or getattr(c, "scale_attn_by_inverse_layer_idx", False):
        raise UserError("GPT-2 attention scaling other than 1/sqrt(d_head) has no nanoformer equivalent")
    vocab = c.vocab_size
    return ModelConfig(
        arch="decoder",
        vocab_size=vocab,
        d_model=c.n_embd,
        n_heads=c.n_head,
        n_layers=c.n_layer,
        d_ff=c.n_inner if c.n_inner is not None else 4 * c.n_embd,
        max_positions=c.n_positions,
        dropout=float(c.resid_pdrop),
        attention_dropout=float(c.attn_pdrop),
        activation_dropout=0.0,
        activation=activation_from_hf(c.activation_function, "GPT2Config.activation_function"),
        bias=True,
        norm="layernorm",
        norm_eps=c.layer_norm_epsilon,
        norm_position="pre",
        final_norm=None,  # pre-LN: a final norm (ln_f)
        positional="learned",
        tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)),
        output_bias=False,
        init="gpt2",
        init_std=c.initializer_range,
        pad_id=special_id(c.pad_token_id, vocab),
        bos_id=special_id(c.bos_token_id, vocab),
        eos_id=special_id(c.eos_token_id, vocab),
    )


def config_to_hf(config: ModelConfig) -> Any:
    """A Hugging Face GPT2Config for our config (UserError if GPT-2 cannot express it)."""
    transformers = need_transformers()
    require(
        config,
        "GPT-2",
        dict(arch="decoder", norm="layernorm", bias=True, norm_position="pre", use_final_norm=True,
             positional="learned", scale_embeddings=False, embedding_norm=False, output_bias=False),
    )
    return transformers.GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_positions,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=config.d_ff,
        activation_function=activation_to_hf(config.activation),
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.attention_dropout,
        layer_norm_epsilon=config.norm_eps,
        initializer_range=config.init_std,
        bos_token_id=config.bos_id,
        eos_token_id=config.eos_id,
        pad_token_id=config.pad_id,
        tie_word_embeddings=config.tie_embeddings,
    )


def rules(config: ModelConfig) -> list[Rule]:
    """Our state-dict keys <- GPT2LMHeadModel's."""
    out = [
        rule("embeddings.tokens.weight", "transformer.wte.weight"),
        rule("embeddings.positions.weight", "transformer.wpe.weight"),
        *layer_norm("decoder.final_norm", "transformer.ln_f"),
        rule("lm_head.weight", "transformer.wte.weight" if config.tie_embeddings else "lm_head.weight"),
    ]
    for i in range(config.n_layers):
        ours, theirs = f"decoder.layers.{i}", f"transformer.h.{i}"
        out += layer_norm(f"{ours}.self_attn_norm", f"{theirs}.ln_1")
        out += layer_norm(f"{ours}.ffn_norm", f"{theirs}.ln_2")
        for our_linear, conv1d in (
            ("self_attn.qkv_proj", "attn.c_attn"),
            ("self_attn.out_proj", "attn.c_proj"),
            ("ffn.up", "mlp.c_fc"),
            ("ffn.down", "mlp.c_proj"),
        ):
            out.append(rule(f"{ours}.{our_linear}.weight", f"{theirs}.{conv1d}.weight", op="transpose"))
            out.append(rule(f"{ours}.{our_linear}.bias", f"{theirs}.{conv1d}.bias"))
    return out


def _aliases(config: ModelConfig) -> dict[str, str]:
    return {"lm_head.weight": "transformer.wte.weight"} if config.tie_embeddings else {}


def from_hf(hf_model: nn.Module, **overrides: Any) -> DecoderModel:
    """Our DecoderModel with the weights of a GPT2LMHeadModel (same dtype, device and train/eval mode).

    overrides: ModelConfig fields to change that do not alter the weights (e.g. attention_impl="math").
    """
    config = config_from_hf(hf_model.config)
    if overrides:
        config = config.replace(**overrides)
    model = DecoderModel(config)
    hf_state = hf_model.state_dict()
    state, used = convert_from_hf(rules(config), hf_state)
    # Old transformers versions save the causal-mask buffers attn.bias / attn.masked_bias.
    mask_buffers = [f"transformer.h.{i}.attn.{name}" for i in range(config.n_layers) for name in ("bias", "masked_bias")]
    check_unused(hf_state, used, [*_aliases(config), *mask_buffers], "GPT2LMHeadModel")
    load_exact(model, state, "GPT-2 import")
    return finish(model, hf_model)


def to_hf(model: DecoderModel) -> nn.Module:
    """A GPT2LMHeadModel with our DecoderModel's weights (same dtype, device and train/eval mode)."""
    transformers = need_transformers()
    config = model.config
    hf_model = transformers.GPT2LMHeadModel(config_to_hf(config))
    state = convert_to_hf(rules(config), model.state_dict())
    fill_aliases(state, _aliases(config))
    load_exact(hf_model, state, "GPT-2 export")
    return finish(hf_model, model)
