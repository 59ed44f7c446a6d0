"""ModelConfig: validation messages, JSON round trips, presets and their parameter counts."""

from __future__ import annotations

import json

import pytest
import torch

from nanoformer.config import PRESETS, ModelConfig, closed_form_parameter_count
from nanoformer.models import build_model


def expected_parameter_count(c: ModelConfig) -> int:
    """Parameter count written out module by module, independently of the library's formula."""
    d, f = c.d_model, c.d_ff

    def linear(n_in: int, n_out: int, bias: bool = c.bias) -> int:
        return n_in * n_out + (n_out if bias else 0)

    def norm() -> int:
        gain = d
        shift = d if c.norm == "layernorm" and c.bias else 0
        return gain + shift

    def ffn() -> int:
        inputs = 2 if c.activation == "swiglu" else 1  # SwiGLU has a gate beside the up projection
        return inputs * linear(d, f) + linear(f, d)

    self_attention = linear(d, 3 * d) + linear(d, d)
    cross_attention = linear(d, d) + linear(d, 2 * d) + linear(d, d)

    def embeddings(vocab: int, types: int) -> int:
        total = vocab * d + types * d
        if c.positional == "learned":
            total += c.max_positions * d
        if c.embedding_norm:
            total += norm()
        return total

    def output(vocab: int) -> int:
        return (0 if c.tie_embeddings else vocab * d) + (vocab if c.output_bias else 0)

    final = norm() if c.use_final_norm else 0
    if c.arch == "decoder":
        layer = self_attention + ffn() + 2 * norm()
        return embeddings(c.vocab_size, 0) + c.n_layers * layer + final + output(c.vocab_size)
    if c.arch == "encoder":
        layer = self_attention + ffn() + 2 * norm()
        mlm_transform = linear(d, d, bias=True) + norm()
        return (embeddings(c.vocab_size, c.type_vocab_size) + c.n_layers * layer + final + mlm_transform
                + output(c.vocab_size))
    enc_layer = self_attention + ffn() + 2 * norm()
    dec_layer = self_attention + cross_attention + ffn() + 3 * norm()
    src = embeddings(c.vocab_size, 0)
    tgt = embeddings(c.tgt_vocab_size, 0)
    if c.share_embeddings:
        tgt -= c.tgt_vocab_size * d  # the token matrix is the source's
    return (src + tgt + c.encoder_layers * enc_layer + c.decoder_layers * dec_layer + 2 * final
            + output(c.tgt_vocab_size))


def built_count(config: ModelConfig) -> int:
    """Parameters of the real model, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = build_model(config)
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors counted once


KNOWN_COUNTS = {
    "gpt2-small": 124_439_808,  # GPT2LMHeadModel
    "bert-base": 109_514_298,  # BertForMaskedLM (tied decoder, with its bias)
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_count(name):
    config = ModelConfig.from_preset(name)
    expected = expected_parameter_count(config)
    assert closed_form_parameter_count(config) == expected
    assert built_count(config) == expected
    if name in KNOWN_COUNTS:
        assert expected == KNOWN_COUNTS[name]


def test_transformer_base_size_matches_the_paper():
    config = ModelConfig.from_preset("transformer-base")
    assert config.share_embeddings and config.vocab_size == 37000
    assert 63e6 <= closed_form_parameter_count(config) <= 65e6
    big = closed_form_parameter_count(ModelConfig.from_preset("transformer-big"))
    assert 210e6 <= big <= 215e6  # the paper's Table 3 says 213M


@pytest.mark.parametrize("name", ["tiny-decoder", "tiny-encoder", "tiny-seq2seq"])
def test_small_presets_built_for_real(name):
    config = ModelConfig.from_preset(name)
    torch.manual_seed(0)
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == closed_form_parameter_count(config)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == closed_form_parameter_count(config)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(arch="decoder", bias=False, norm="rmsnorm", activation="swiglu", tie_embeddings=False, output_bias=True),
        dict(arch="decoder", bias=False, positional="rope", final_norm=False),
        dict(arch="encoder", bias=False, embedding_norm=True, type_vocab_size=3, tie_embeddings=False),
        dict(arch="encoder", norm="rmsnorm", embedding_norm=True, positional="alibi", final_norm=True),
        dict(arch="encoder-decoder", target_vocab_size=50, n_encoder_layers=1, n_decoder_layers=3,
             positional="learned", tie_embeddings=False),
        dict(arch="encoder-decoder", share_embeddings=True, norm_position="post", positional="sinusoidal",
             activation="swiglu", bias=False, embedding_norm=True),
    ],
)
def test_closed_form_matches_built_model_for_variants(overrides):
    config = ModelConfig(vocab_size=97, d_model=24, n_heads=3, n_layers=2, d_ff=40, max_positions=33, **overrides)
    expected = expected_parameter_count(config)
    assert closed_form_parameter_count(config) == expected
    assert built_count(config) == expected


# -- validation ------------------------------------------------------------------------------------


def test_d_model_not_divisible_names_both_numbers():
    with pytest.raises(ValueError) as info:
        ModelConfig(d_model=100, n_heads=12)
    message = str(info.value)
    assert "d_model" in message and "100" in message and "n_heads" in message and "12" in message


def test_unknown_choice_lists_the_choices():
    with pytest.raises(ValueError) as info:
        ModelConfig(arch="gpt")
    message = str(info.value)
    assert "'gpt'" in message
    for choice in ("encoder-decoder", "encoder", "decoder"):
        assert choice in message
    for field, bad, choice in [("positional", "xpos", "alibi"), ("activation", "tanh", "swiglu"),
                               ("norm_position", "sandwich", "pre"), ("attention_impl", "flash", "math"),
                               ("init", "kaiming", "xavier"), ("norm", "batch", "rmsnorm"),
                               ("sinusoidal_layout", "spiral", "half")]:
        with pytest.raises(ValueError, match=f"{field}.*{bad}.*{choice}"):
            ModelConfig(**{field: bad})


def test_from_dict_unknown_key_lists_valid_keys():
    with pytest.raises(ValueError) as info:
        ModelConfig.from_dict({"d_model": 64, "n_head": 4})
    message = str(info.value)
    assert "n_head" in message
    for key in ("n_heads", "d_model", "vocab_size", "positional"):
        assert key in message


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (dict(vocab_size=0), "vocab_size"),
        (dict(n_layers=-1), "n_layers"),
        (dict(d_ff=True), "d_ff"),
        (dict(max_positions=2.5), "max_positions"),
        (dict(n_decoder_layers=0), "n_decoder_layers"),
        (dict(dropout=1.0), "dropout"),
        (dict(attention_dropout=-0.1), "attention_dropout"),
        (dict(positional="rope", d_model=12, n_heads=4), "rope.*3"),
        (dict(arch="decoder", share_embeddings=True), "share_embeddings"),
        (dict(arch="encoder-decoder", share_embeddings=True, target_vocab_size=10), "share_embeddings.*10"),
        (dict(arch="decoder", type_vocab_size=2), "type_vocab_size"),
        (dict(type_vocab_size=-1), "type_vocab_size"),
        (dict(vocab_size=10, eos_id=10), "eos_id"),
        (dict(vocab_size=10, pad_id=-1), "pad_id"),
    ],
)
def test_invalid_values_are_rejected(overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        ModelConfig(**overrides)


def test_replace_revalidates():
    config = ModelConfig()
    with pytest.raises(ValueError, match="n_heads"):
        config.replace(n_heads=5)
    assert config.replace(n_heads=8).n_heads == 8 and config.n_heads == 4


def test_derived_sizes():
    c = ModelConfig(arch="encoder-decoder", n_layers=3, n_decoder_layers=5, vocab_size=40, target_vocab_size=30,
                    norm_position="post", bos_id=2)
    assert (c.encoder_layers, c.decoder_layers, c.tgt_vocab_size, c.d_head) == (3, 5, 30, 32)
    assert c.use_final_norm is False and c.replace(norm_position="pre").use_final_norm is True
    assert c.replace(final_norm=True).use_final_norm is True
    assert c.start_id == 2 and c.replace(decoder_start_id=7).start_id == 7


# -- serialisation and presets ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PRESETS))
def test_json_round_trip(name, tmp_path):
    config = ModelConfig.from_preset(name)
    path = tmp_path / "config.json"
    config.to_json(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["arch"] == config.arch and raw == config.to_dict()
    loaded = ModelConfig.from_json(path)
    assert loaded == config
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_from_preset_overrides_and_unknown_names():
    config = ModelConfig.from_preset("tiny-decoder", n_layers=1, positional="rope")
    assert config.n_layers == 1 and config.positional == "rope" and config.d_model == 128
    with pytest.raises(ValueError) as info:
        ModelConfig.from_preset("gpt5")
    assert "gpt5" in str(info.value) and "gpt2-small" in str(info.value)
    with pytest.raises(ValueError, match="n_layer"):
        ModelConfig.from_preset("tiny-decoder", n_layer=2)


def test_presets_use_their_reference_norm_order():
    post = {"transformer-base", "transformer-big", "bert-base", "bert-mini", "marian-base"}
    for name in PRESETS:
        config = ModelConfig.from_preset(name)
        if name in post:
            assert config.norm_position == "post" and not config.use_final_norm, name
        if name == "gpt2-small":
            assert config.norm_position == "pre" and config.use_final_norm
    marian = ModelConfig.from_preset("marian-base")
    assert marian.sinusoidal_layout == "half" and marian.start_id == marian.pad_id


def test_best_metric_other_than_val_loss_only_for_classifiers():
    from nanoformer.errors import UserError
    from nanoformer.run_config import build_run_config

    sections = {"model": {"arch": "decoder", "vocab_size": 64, "d_model": 16, "n_heads": 2, "n_layers": 1,
                          "d_ff": 32, "max_positions": 8},
                "data": {"path": "x.txt"}, "train": {"best_metric": "accuracy"}}
    with pytest.raises(UserError, match="only classifiers compute validation metrics"):
        build_run_config(sections)
    sections["train"]["best_metric"] = "val_loss"
    assert build_run_config(sections).train.best_metric == "val_loss"
