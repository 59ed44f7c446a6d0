"""Export to CTranslate2, the inference engine users pick for fast CPU translation and generation.

The model is described with CTranslate2's own specification API (`ctranslate2.specs`): one spec
per family, filled layer by layer with our weights, then validated, optionally quantized and
saved by CTranslate2 itself. Vocabularies are our tokenizer's tokens in id order, so a token
string means the same id on both sides.

What maps onto CTranslate2 (checked against its outputs in tests/test_interop_ctranslate2.py):
- encoder-decoder (`TransformerSpec`), GPT-style decoder (`TransformerDecoderModelSpec`) and
  BERT-style encoder (`TransformerEncoderModelSpec`: hidden states, and BERT's pooler; the MLM and
  classification heads stay with nanoformer);
- post-LN and pre-LN (with its final norm), LayerNorm and RMSNorm;
- sinusoidal (either layout) and learned positions (their table is exported), no positions,
  and RoPE (half-split pairs, CTranslate2's `rotary_interleave=False`);
- ReLU, GELU, tanh-GELU, SiLU and SwiGLU feed-forward layers; embedding scaling; tied or separate
  output layers, with or without bias.
Anything else is refused with a one-line error naming the option (ALiBi, whose CTranslate2 form
differs from ours, or a post-LN stack with a final norm).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from nanoformer.errors import UserError
from nanoformer.quantize import refuse_quantized

ACTIVATIONS = {"relu": "RELU", "gelu": "GELU", "gelu_tanh": "GELUTanh", "silu": "SWISH", "swiglu": "SWISH"}
QUANTIZATIONS = ("float32", "int8", "int8_float32", "int16")


def import_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise UserError("export-ct2 needs the ctranslate2 package; install it: pip install 'nanoformer[deploy]'") from None
    return ctranslate2


def check_exportable(config: Any) -> None:
    """Refuse, in one line, what CTranslate2's Transformer cannot express."""
    if config.positional == "alibi":
        raise UserError("export-ct2: [model] positional = \"alibi\" has no exact CTranslate2 form (its ALiBi "
                        "differs from ours); export a model with sinusoidal, learned, rope or no positions")
    if config.norm_position == "post" and config.use_final_norm:
        raise UserError("export-ct2: a post-LN model with a final norm ([model] final_norm) has no CTranslate2 form")
    if config.activation not in ACTIVATIONS:
        raise UserError(f"export-ct2: [model] activation = {config.activation!r} has no CTranslate2 form; "
                        f"supported: {', '.join(ACTIVATIONS)}")
    if config.arch not in ("encoder-decoder", "decoder", "encoder"):
        raise UserError(f"export-ct2: arch {config.arch!r} has no CTranslate2 form")


def _array(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


def _linear(spec, layer: nn.Linear) -> None:
    spec.weight = _array(layer.weight)
    if layer.bias is not None:
        spec.bias = _array(layer.bias)


def _norm(spec, norm: nn.Module) -> None:
    spec.gamma = _array(norm.weight)
    if hasattr(spec, "beta"):  # LayerNorm; without a bias its shift is zero
        spec.beta = _array(norm.bias) if getattr(norm, "bias", None) is not None else np.zeros_like(spec.gamma)


def _attention(spec, attention: nn.Module, norm: nn.Module) -> None:
    """Our fused projections have CTranslate2's layouts: self [q; k; v], cross q and [k; v]."""
    if attention.cross:
        _linear(spec.linear[0], attention.q_proj)
        _linear(spec.linear[1], attention.kv_proj)
    else:
        _linear(spec.linear[0], attention.qkv_proj)
    _linear(spec.linear[-1], attention.out_proj)
    _norm(spec.layer_norm, norm)


def _ffn(spec, layer: nn.Module) -> None:
    ffn = layer.ffn
    if ffn.gate is not None:  # SwiGLU: act(gate(x)) * up(x); CTranslate2 activates linear_0
        _linear(spec.linear_0, ffn.gate)
        _linear(spec.linear_0_noact, ffn.up)
    else:
        _linear(spec.linear_0, ffn.up)
    _linear(spec.linear_1, ffn.down)
    _norm(spec.layer_norm, layer.ffn_norm)


def _embeddings(stack_spec, embeddings: nn.Module, config: Any) -> None:
    """Token table, scale and positions of one side."""
    target = stack_spec.embeddings[0] if isinstance(stack_spec.embeddings, list) else stack_spec.embeddings
    target.weight = _array(embeddings.tokens.weight)
    stack_spec.scale_embeddings = math.sqrt(config.d_model) if config.scale_embeddings else 1.0
    if hasattr(stack_spec, "position_encodings"):
        if embeddings.positions is None:  # positional = "none": CTranslate2 would add sinusoids
            table = np.zeros((config.max_positions, config.d_model), dtype=np.float32)
        elif hasattr(embeddings.positions, "table"):
            table = _array(embeddings.positions.table)
        else:
            table = _array(embeddings.positions.weight)
        stack_spec.position_encodings.encodings = table
    if embeddings.norm is not None:
        _norm(stack_spec.layernorm_embedding, embeddings.norm)


def _stack_options(config: Any, specs) -> dict[str, Any]:
    options = dict(
        pre_norm=config.norm_position == "pre",
        activation=getattr(specs.common_spec.Activation, ACTIVATIONS[config.activation]),
        ffn_glu=config.activation == "swiglu",
        rms_norm=config.norm == "rmsnorm",
        layernorm_embedding=config.embedding_norm,
    )
    if config.norm_position == "pre" and not config.use_final_norm:
        options["no_final_norm"] = True
    return options


def _rotary(config: Any) -> dict[str, Any]:
    if config.positional != "rope":
        return {}
    return dict(rotary_dim=0, rotary_interleave=False, rotary_base=float(config.rope_base))


def _fill_stack(stack_spec, stack: nn.Module) -> None:
    for layer_spec, layer in zip(stack_spec.layer, stack.layers):
        _attention(layer_spec.self_attention, layer.self_attn, layer.self_attn_norm)
        if getattr(layer, "cross_attn", None) is not None:
            _attention(layer_spec.attention, layer.cross_attn, layer.cross_attn_norm)
        _ffn(layer_spec.ffn, layer)
    if stack.final_norm is not None:
        _norm(stack_spec.layer_norm, stack.final_norm)


def seq2seq_spec(model: nn.Module, source_tokens: list[str], target_tokens: list[str]):
    """A CTranslate2 `TransformerSpec` holding an encoder-decoder model's weights."""
    ct2 = import_ctranslate2()
    specs = ct2.specs
    config = model.config
    check_exportable(config)
    options = _stack_options(config, specs)
    encoder = specs.TransformerEncoderSpec(config.encoder_layers, config.n_heads, **options, **_rotary(config))
    decoder = specs.TransformerDecoderSpec(config.decoder_layers, config.n_heads, **options, **_rotary(config),
                                           with_encoder_attention=True)
    _embeddings(encoder, model.src_embeddings, config)
    _fill_stack(encoder, model.encoder)
    _embeddings(decoder, model.tgt_embeddings, config)
    _fill_stack(decoder, model.decoder)
    _linear(decoder.projection, model.lm_head)
    spec = specs.TransformerSpec(encoder, decoder)
    spec.register_source_vocabulary(source_tokens)
    spec.register_target_vocabulary(target_tokens)
    spec.config.unk_token = target_tokens[config.unk_id] if config.unk_id is not None else "<unk>"
    spec.config.bos_token = target_tokens[config.bos_id] if config.bos_id is not None else target_tokens[config.start_id]
    spec.config.eos_token = target_tokens[config.eos_id]
    spec.config.decoder_start_token = target_tokens[config.start_id]
    spec.config.layer_norm_epsilon = config.norm_eps
    return spec


def decoder_spec(model: nn.Module, tokens: list[str]):
    """A CTranslate2 `TransformerDecoderModelSpec` holding a GPT-style model's weights."""
    ct2 = import_ctranslate2()
    specs = ct2.specs
    config = model.config
    check_exportable(config)
    decoder = specs.TransformerDecoderSpec(config.n_layers, config.n_heads, **_stack_options(config, specs),
                                           **_rotary(config), with_encoder_attention=False)
    _embeddings(decoder, model.embeddings, config)
    _fill_stack(decoder, model.decoder)
    _linear(decoder.projection, model.lm_head)
    spec = specs.TransformerDecoderModelSpec(decoder)
    spec.register_vocabulary(tokens)
    unk = config.unk_id if config.unk_id is not None else 1
    spec.config.unk_token = tokens[unk]
    spec.config.bos_token = tokens[config.bos_id if config.bos_id is not None else config.eos_id]
    spec.config.eos_token = tokens[config.eos_id] if config.eos_id is not None else tokens[0]
    spec.config.layer_norm_epsilon = config.norm_eps
    return spec


def encoder_spec(model: nn.Module, tokens: list[str]):
    """A CTranslate2 `TransformerEncoderModelSpec` holding a BERT-style encoder: CTranslate2's `Encoder`
    returns its last hidden states (and, for a classifier with BERT's pooler, the pooled [CLS] state)."""
    ct2 = import_ctranslate2()
    specs = ct2.specs
    config = model.config
    check_exportable(config)
    types = config.type_vocab_size > 0
    encoder = specs.TransformerEncoderSpec(
        config.n_layers, config.n_heads, **_stack_options(config, specs), **_rotary(config),
        num_source_embeddings=2 if types else 1, embeddings_merge=specs.common_spec.EmbeddingsMerge.ADD)
    _embeddings(encoder, model.embeddings, config)
    if types:
        encoder.embeddings[1].weight = _array(model.embeddings.token_types.weight)
    _fill_stack(encoder, model.encoder)
    pooler = model.is_classifier and model.classifier.dense is not None
    spec = specs.TransformerEncoderModelSpec(encoder, pooling_layer=pooler,
                                             pooling_activation=specs.common_spec.Activation.Tanh)
    if pooler:
        _linear(spec.pooler_dense, model.classifier.dense)
    spec.register_vocabulary(tokens)
    spec.config.unk_token = tokens[config.unk_id] if config.unk_id is not None else "<unk>"
    spec.config.layer_norm_epsilon = config.norm_eps
    return spec


def vocabulary(tokenizer: Any, size: int) -> list[str]:
    """The tokenizer's tokens in id order, padded to the model's vocabulary with unused names."""
    tokens = [tokenizer.id_to_token(i) for i in range(min(size, tokenizer.vocab_size))]
    tokens += [f"<unused{i}>" for i in range(len(tokens), size)]
    if len(set(tokens)) != len(tokens):
        raise UserError("export-ct2: the tokenizer has tokens of the same text under two ids; CTranslate2 "
                        "maps tokens by their text, so it cannot hold this vocabulary")
    return tokens


def save_spec(spec, out: Path, quantization: str | None = None) -> Path:
    """Validate, quantize (CTranslate2's own weight quantization) and write `spec` into `out`."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise UserError(f"--quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    spec.validate()
    spec.optimize(quantization=quantization)
    out.mkdir(parents=True, exist_ok=True)
    spec.save(str(out))
    return out


def export_ct2(checkpoint: str | Path, out: str | Path, quantization: str | None = None, force: bool = False) -> Path:
    """Write the checkpoint (or a run's best) as a CTranslate2 model folder; `force` replaces `out`."""
    from nanoformer.api import load
    from nanoformer.recipes.translation import load_source_tokenizer
    from nanoformer.training.checkpoint import resolve_checkpoint

    out = Path(out)
    if out.exists() and not (force and out.is_dir()):
        raise UserError(f"{out}: already exists; choose another folder or pass --force to replace it")
    model, tokenizer = load(checkpoint)
    refuse_quantized(model.config, "export-ct2 (it quantizes itself: --quantization int8)")
    if tokenizer is None:
        raise UserError(f"{checkpoint}: the checkpoint has no tokenizer.json; CTranslate2 needs the vocabulary")
    config = model.config
    check_exportable(config)
    import_ctranslate2()
    if config.arch == "encoder-decoder":
        source = load_source_tokenizer(resolve_checkpoint(checkpoint), tokenizer)
        spec = seq2seq_spec(model, vocabulary(source, config.vocab_size), vocabulary(tokenizer, config.tgt_vocab_size))
    elif config.arch == "encoder":
        spec = encoder_spec(model, vocabulary(tokenizer, config.vocab_size))
    else:
        spec = decoder_spec(model, vocabulary(tokenizer, config.vocab_size))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    return save_spec(spec, out, quantization)
