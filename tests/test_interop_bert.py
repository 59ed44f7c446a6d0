"""BERT weight exchange: random-init BertForMaskedLM / BertModel against our EncoderModel, with
padding masks and token types, and our models exported back."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nanoformer.config import ModelConfig  # noqa: E402
from nanoformer.errors import UserError  # noqa: E402
from nanoformer.interop import from_hf, to_hf  # noqa: E402
from nanoformer.interop.bert import config_from_hf, config_to_hf  # noqa: E402
from nanoformer.models import EncoderModel  # noqa: E402

TOL = 1e-4
VOCAB = 120


@torch.no_grad()
def jitter(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Move every weight off its init (LayerNorm 1/0, zero biases), so a swapped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)


def hf_config(**changes):
    values = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=40, type_vocab_size=2,
    )
    return transformers.BertConfig(**{**values, **changes})


def batch(seed=0):
    """Right-padded ids (pad 0) with a padding mask and two segments per row."""
    g = torch.Generator().manual_seed(seed)
    lengths = [16, 11, 4]
    ids = torch.randint(1, VOCAB, (3, 16), generator=g)
    mask = torch.zeros(3, 16, dtype=torch.long)
    types = torch.zeros(3, 16, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = 0
        types[row, n // 2 : n] = 1
    return ids, mask, types


@pytest.fixture(scope="module")
def hf_mlm():
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(hf_config()).eval()
    jitter(model)
    return model


def test_config_maps_both_ways(hf_mlm):
    config = config_from_hf(hf_mlm.config)
    assert (config.arch, config.norm_position, config.embedding_norm, config.use_final_norm) == ("encoder", "post", True, False)
    assert (config.activation, config.norm_eps, config.type_vocab_size, config.output_bias) == ("gelu", 1e-12, 2, True)
    assert (config.dropout, config.attention_dropout, config.pad_id) == (0.1, 0.1, 0)
    back = config_to_hf(config)
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                 "type_vocab_size", "layer_norm_eps", "pad_token_id"):
        assert getattr(back, name) == getattr(hf_mlm.config, name), name
    assert config_from_hf(back) == config


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_masked_lm_logits_match(hf_mlm, impl):
    model = from_hf(hf_mlm, attention_impl=impl)
    assert model.mlm_head.decoder.weight is model.embeddings.tokens.weight
    ids, mask, types = batch()
    with torch.no_grad():
        theirs = hf_mlm(ids, attention_mask=mask, token_type_ids=types).logits
        mine = model(ids, attention_mask=mask, token_type_ids=types)
        assert (mine - theirs).abs().max().item() <= TOL
        # Without token types both sides use segment 0; without a mask, nothing is hidden.
        assert (model(ids) - hf_mlm(ids).logits).abs().max().item() <= TOL


def test_bert_model_hidden_states_match():
    torch.manual_seed(1)
    hf_model = transformers.BertModel(hf_config(hidden_act="gelu_new")).eval()
    jitter(hf_model, seed=1)
    model = from_hf(hf_model)
    assert model.config.activation == "gelu_tanh"
    assert model.mlm_head.decoder.weight is model.embeddings.tokens.weight  # tied; the rest of the head is fresh
    ids, mask, types = batch(seed=2)
    with torch.no_grad():
        theirs = hf_model(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        mine = model.encode(ids, attention_mask=mask, token_type_ids=types)
    assert (mine - theirs).abs().max().item() <= TOL


def test_export_reproduces_our_logits():
    config = ModelConfig.from_preset("tiny-encoder", vocab_size=VOCAB, d_model=64, n_layers=2, d_ff=128, max_positions=32)
    torch.manual_seed(0)
    model = EncoderModel(config).eval()
    jitter(model, seed=3)
    hf_model = to_hf(model)
    assert isinstance(hf_model, transformers.BertForMaskedLM) and not hf_model.training
    assert hf_model.cls.predictions.decoder.weight is hf_model.bert.embeddings.word_embeddings.weight
    ids, mask, types = batch(seed=4)
    with torch.no_grad():
        theirs = hf_model(ids, attention_mask=mask, token_type_ids=types).logits
        assert (theirs - model(ids, attention_mask=mask, token_type_ids=types)).abs().max().item() <= TOL
        hidden = hf_model.bert(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        assert (hidden - model.encode(ids, attention_mask=mask, token_type_ids=types)).abs().max().item() <= TOL
    again = from_hf(hf_model)
    for key, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key


def test_export_without_segments_or_output_bias():
    """No token types -> one all-zero segment; no output bias -> a zero cls.predictions.bias."""
    config = ModelConfig.from_preset(
        "tiny-encoder", vocab_size=VOCAB, d_model=32, n_layers=1, d_ff=64, max_positions=32,
        type_vocab_size=0, output_bias=False, tie_embeddings=False, activation="relu",
    )
    model = EncoderModel(config).eval()
    jitter(model)
    hf_model = to_hf(model)
    assert hf_model.config.type_vocab_size == 1 and hf_model.config.hidden_act == "relu"
    ids, mask, _ = batch()
    with torch.no_grad():
        assert (hf_model(ids, attention_mask=mask).logits - model(ids, attention_mask=mask)).abs().max().item() <= TOL


def test_unsupported_shapes_are_refused():
    pre_ln = EncoderModel(ModelConfig.from_preset("tiny-encoder", norm_position="pre"))
    with pytest.raises(UserError, match="cannot export to BERT: norm_position = 'pre'"):
        to_hf(pre_ln)
    with pytest.raises(UserError, match="position_embedding_type"):
        config_from_hf(hf_config(position_embedding_type="relative_key"))
    with pytest.raises(UserError, match="regression"):
        from_hf(transformers.BertForSequenceClassification(hf_config(num_labels=1)))
    mean_pooled = EncoderModel(ModelConfig.from_preset("tiny-encoder", num_labels=2, classifier_pooling="mean"))
    with pytest.raises(UserError, match="classifier_pooling = 'mean'"):
        to_hf(mean_pooled)


# -- BertForSequenceClassification <-> EncoderModel with a classification head ---------------------


def test_sequence_classification_logits_match_both_ways():
    torch.manual_seed(2)
    labels = {0: "negative", 1: "neutral", 2: "positive"}
    hf_model = transformers.BertForSequenceClassification(
        hf_config(num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})).eval()
    jitter(hf_model, seed=5)
    model = from_hf(hf_model)
    assert model.is_classifier and model.mlm_head is None
    assert (model.config.num_labels, model.config.labels) == (3, ["negative", "neutral", "positive"])
    ids, mask, types = batch(seed=6)
    with torch.no_grad():
        theirs = hf_model(ids, attention_mask=mask, token_type_ids=types).logits
        mine = model(ids, attention_mask=mask, token_type_ids=types)
    assert mine.shape == (3, 3)
    assert (mine - theirs).abs().max().item() <= TOL

    # Back to Hugging Face: the same logits, the class names as id2label, every tensor equal.
    back = to_hf(model)
    assert isinstance(back, transformers.BertForSequenceClassification) and not back.training
    assert back.config.id2label == labels
    with torch.no_grad():
        assert (back(ids, attention_mask=mask, token_type_ids=types).logits - mine).abs().max().item() <= TOL
    for key, tensor in hf_model.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key


def test_our_classifier_exports_and_default_label_names_stay_unnamed():
    config = ModelConfig.from_preset("tiny-encoder", vocab_size=VOCAB, d_model=64, n_layers=2, d_ff=128,
                                     max_positions=32, num_labels=2)
    torch.manual_seed(0)
    model = EncoderModel(config).eval()
    jitter(model, seed=7)
    hf_model = to_hf(model)
    assert hf_model.config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    ids, mask, types = batch(seed=8)
    with torch.no_grad():
        theirs = hf_model(ids, attention_mask=mask, token_type_ids=types).logits
        assert (theirs - model(ids, attention_mask=mask, token_type_ids=types)).abs().max().item() <= TOL
    again = from_hf(hf_model)
    assert again.config.labels is None and again.config == config.replace(dropout=0.1, attention_dropout=0.0)
    for key, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key
