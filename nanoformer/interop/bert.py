"""BERT (`BertModel`, `BertForMaskedLM`) <-> our `EncoderModel`.

BERT is a post-LN encoder: learned positions plus segment (token type) embeddings, a LayerNorm
right after the embeddings, exact (erf) GELU, no final norm. Its attention has separate
query / key / value projections, which we stack into one fused `qkv_proj` (and split back).
The masked-LM head is dense -> activation -> LayerNorm -> decoder tied to the word embeddings,
plus a vocabulary bias (`cls.predictions.bias`, our `mlm_head.decoder.bias`).

- `from_hf(BertModel)`: BertModel has no MLM head, so our `mlm_head` (dense, norm, bias) is left
  freshly initialised; its decoder matrix is tied to the imported word embeddings as usual.
  BertModel's pooler (dense + tanh over [CLS]) has no counterpart here and is dropped.
- `to_hf(EncoderModel)` gives a `BertForMaskedLM`; its `.bert` is the plain `BertModel`.
- `BertForSequenceClassification` <-> an EncoderModel with a classification head
  (`num_labels > 0`, `classifier_pooling = "cls"`): BERT's pooler is our `classifier.dense`, its
  `classifier` our `classifier.out`; class names travel as `id2label` <-> `labels`. A classifier
  has no masked-LM head on either side. Mean pooling has no BERT equivalent and does not export.
- Special ids other than pad (cls, sep, mask, unk) live in BERT's tokenizer, not its config, so
  they are not set by import.
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
from nanoformer.models.encoder import EncoderModel

HF_CLASSES = ("BertForMaskedLM", "BertModel", "BertForSequenceClassification")
_WORDS = "embeddings.word_embeddings.weight"


def config_from_hf(hf_config: Any) -> ModelConfig:
    """Our ModelConfig for a Hugging Face BertConfig."""
    c = hf_config
    kind = getattr(c, "position_embedding_type", "absolute")
    if kind not in (None, "absolute"):
        raise UserError(f"BertConfig.position_embedding_type = {kind!r} has no nanoformer equivalent; only 'absolute' converts")
    if getattr(c, "is_decoder", False) or getattr(c, "add_cross_attention", False):
        raise UserError("a BERT configured as a decoder (is_decoder / add_cross_attention) has no nanoformer equivalent")
    return ModelConfig(
        arch="encoder",
        vocab_size=c.vocab_size,
        d_model=c.hidden_size,
        n_heads=c.num_attention_heads,
        n_layers=c.num_hidden_layers,
        d_ff=c.intermediate_size,
        max_positions=c.max_position_embeddings,
        dropout=float(c.hidden_dropout_prob),
        attention_dropout=float(c.attention_probs_dropout_prob),
        activation_dropout=0.0,
        activation=activation_from_hf(c.hidden_act, "BertConfig.hidden_act"),
        bias=True,
        norm="layernorm",
        norm_eps=c.layer_norm_eps,
        norm_position="post",
        final_norm=None,  # post-LN: no final norm
        embedding_norm=True,
        positional="learned",
        tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)),
        output_bias=True,
        type_vocab_size=c.type_vocab_size,
        init="bert",
        init_std=c.initializer_range,
        pad_id=special_id(c.pad_token_id, c.vocab_size),
    )


def labels_from_hf(hf_config: Any) -> tuple[int, list[str] | None]:
    """(num_labels, class names or None) of a BertForSequenceClassification's config."""
    problem = getattr(hf_config, "problem_type", None)
    if problem not in (None, "single_label_classification"):
        raise UserError(f"BertConfig.problem_type = {problem!r}: only single-label classification converts")
    n = int(hf_config.num_labels)
    if n < 2:
        raise UserError(f"BertConfig.num_labels = {n} is regression in Hugging Face; only classifiers (>= 2 classes) convert")
    names = [str((hf_config.id2label or {}).get(i, f"LABEL_{i}")) for i in range(n)]
    default = names == [f"LABEL_{i}" for i in range(n)]
    return n, (None if default or len(set(names)) != n else names)


def config_to_hf(config: ModelConfig) -> Any:
    """A Hugging Face BertConfig for our config (UserError if BERT cannot express it)."""
    transformers = need_transformers()
    require(
        config,
        "BERT",
        dict(arch="encoder", norm="layernorm", bias=True, norm_position="post", use_final_norm=False,
             embedding_norm=True, positional="learned", scale_embeddings=False),
    )
    if config.num_labels:
        require(config, "BertForSequenceClassification", dict(classifier_pooling="cls"))
    classes = {}
    if config.num_labels:
        names = config.labels or [f"LABEL_{i}" for i in range(config.num_labels)]
        classes = dict(num_labels=config.num_labels, id2label=dict(enumerate(names)),
                       label2id={name: i for i, name in enumerate(names)})
    return transformers.BertConfig(
        **classes,
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.d_ff,
        hidden_act=activation_to_hf(config.activation),
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_positions,
        # BERT always has segment embeddings; a model without them exports one all-zero segment.
        type_vocab_size=max(1, config.type_vocab_size),
        initializer_range=config.init_std,
        layer_norm_eps=config.norm_eps,
        pad_token_id=config.pad_id,
        tie_word_embeddings=config.tie_embeddings,
    )


def rules(config: ModelConfig, prefix: str = "bert.", head: bool = True) -> list[Rule]:
    """Our state-dict keys <- BERT's. prefix: "bert." in BertForMaskedLM / BertForSequenceClassification,
    "" in BertModel; head: the Hugging Face model has our head (MLM head, or pooler + classifier)."""
    out = [
        rule("embeddings.tokens.weight", prefix + _WORDS),
        rule("embeddings.positions.weight", prefix + "embeddings.position_embeddings.weight"),
        *layer_norm("embeddings.norm", prefix + "embeddings.LayerNorm"),
    ]
    if config.type_vocab_size:
        out.append(rule("embeddings.token_types.weight", prefix + "embeddings.token_type_embeddings.weight"))
    for i in range(config.n_layers):
        ours, theirs = f"encoder.layers.{i}", f"{prefix}encoder.layer.{i}"
        out += fused(f"{ours}.self_attn.qkv_proj", (f"{theirs}.attention.self.{p}" for p in ("query", "key", "value")))
        out += linear(f"{ours}.self_attn.out_proj", f"{theirs}.attention.output.dense")
        out += layer_norm(f"{ours}.self_attn_norm", f"{theirs}.attention.output.LayerNorm")
        out += linear(f"{ours}.ffn.up", f"{theirs}.intermediate.dense")
        out += linear(f"{ours}.ffn.down", f"{theirs}.output.dense")
        out += layer_norm(f"{ours}.ffn_norm", f"{theirs}.output.LayerNorm")
    if config.num_labels:
        if head:
            out += linear("classifier.dense", prefix + "pooler.dense")
            out += linear("classifier.out", "classifier")
        return out
    if config.tie_embeddings:
        out.append(rule("mlm_head.decoder.weight", prefix + _WORDS))
    if head:
        out += linear("mlm_head.dense", "cls.predictions.transform.dense")
        out += layer_norm("mlm_head.norm", "cls.predictions.transform.LayerNorm")
        if not config.tie_embeddings:
            out.append(rule("mlm_head.decoder.weight", "cls.predictions.decoder.weight"))
        if config.output_bias:
            out.append(rule("mlm_head.decoder.bias", "cls.predictions.bias"))
    return out


def _aliases(config: ModelConfig) -> dict[str, str]:
    aliases = {"cls.predictions.decoder.bias": "cls.predictions.bias"}
    if config.tie_embeddings:
        aliases["cls.predictions.decoder.weight"] = "bert." + _WORDS
    return aliases


def from_hf(hf_model: nn.Module, **overrides: Any) -> EncoderModel:
    """Our EncoderModel with the weights of a BertForMaskedLM, BertModel or BertForSequenceClassification
    (same dtype, device, mode).

    From a BertModel the masked-LM head (dense, LayerNorm, vocabulary bias) stays freshly
    initialised and the pooler is dropped. A BertForSequenceClassification becomes a classifier
    (`num_labels`, `labels` from id2label unless they are the default LABEL_i). overrides:
    ModelConfig fields that do not alter the weights (e.g. attention_impl="math").
    """
    classifier = type(hf_model).__name__ == "BertForSequenceClassification" or (
        hasattr(hf_model, "classifier") and hasattr(hf_model, "bert"))
    with_head = classifier or hasattr(hf_model, "cls")  # BertModel has no head
    prefix = "bert." if with_head else ""
    config = config_from_hf(hf_model.config)
    if classifier:
        num_labels, labels = labels_from_hf(hf_model.config)
        config = config.replace(num_labels=num_labels, labels=labels, classifier_pooling="cls")
    if overrides:
        config = config.replace(**overrides)
    model = EncoderModel(config)
    hf_state = hf_model.state_dict()
    state, used = convert_from_hf(rules(config, prefix, with_head), hf_state)
    ignorable = [prefix + "embeddings.position_ids", prefix + "embeddings.token_type_ids", "pooler."]
    if with_head and not classifier:
        ignorable += list(_aliases(config))
    check_unused(hf_state, used, ignorable, type(hf_model).__name__)
    if not with_head:
        fresh = model.state_dict()
        state.update({key: fresh[key] for key in fresh if key.startswith("mlm_head.") and key not in state})
    load_exact(model, state, "BERT import")
    return finish(model, hf_model)


def to_hf(model: EncoderModel) -> nn.Module:
    """A BertForMaskedLM (or, for a classifier, a BertForSequenceClassification) with our
    EncoderModel's weights (same dtype, device and train/eval mode)."""
    transformers = need_transformers()
    config = model.config
    hf_class = transformers.BertForSequenceClassification if config.num_labels else transformers.BertForMaskedLM
    hf_model = hf_class(config_to_hf(config))
    our_state = model.state_dict()
    state = convert_to_hf(rules(config), our_state)
    reference = our_state["embeddings.tokens.weight"]
    if not config.type_vocab_size:
        state["bert.embeddings.token_type_embeddings.weight"] = torch.zeros(1, config.d_model, dtype=reference.dtype)
    if config.num_labels:
        load_exact(hf_model, state, "BERT export")
        return finish(hf_model, model)
    if not config.output_bias:
        state["cls.predictions.bias"] = torch.zeros(config.vocab_size, dtype=reference.dtype)
    fill_aliases(state, _aliases(config))
    load_exact(hf_model, state, "BERT export")
    return finish(hf_model, model)
