"""Marian weight exchange: a random-init MarianMTModel and our Seq2SeqTransformer compute the same
logits (padded sources, full and cached decoding), and our models export back."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nanoformer.config import ModelConfig  # noqa: E402
from nanoformer.errors import UserError  # noqa: E402
from nanoformer.interop import from_hf, to_hf  # noqa: E402
from nanoformer.interop.marian import config_from_hf, config_to_hf  # noqa: E402
from nanoformer.layers.positional import sinusoidal_table  # noqa: E402
from nanoformer.models import Seq2SeqTransformer  # noqa: E402

TOL = 1e-4
VOCAB, PAD, EOS = 100, 99, 0


@torch.no_grad()
def jitter(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Move every weight off its init (LayerNorm 1/0, zero biases), so a swapped tensor shows.
    Marian's sinusoidal positions stay as they are: they are computed, not learned."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "embed_positions" not in name:
            p.add_(torch.randn(p.shape, generator=g) * scale)
    if hasattr(model, "final_logits_bias"):
        model.final_logits_bias.add_(torch.randn(model.final_logits_bias.shape, generator=g))


def marian_config(**changes):
    values = dict(
        vocab_size=VOCAB, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
        activation_function="swish", scale_embedding=True, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=PAD, forced_eos_token_id=EOS, dropout=0.1, attention_dropout=0.05,
        activation_dropout=0.02,
    )
    return transformers.MarianConfig(**{**values, **changes})


def sources(pad=PAD, seed=0):
    """Right-padded sources ending in EOS, as Marian's tokenizer makes them, and their mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = [12, 7, 3]
    src = torch.randint(2, VOCAB - 1, (3, 12), generator=g)  # neither EOS (0) nor either pad (1, 99)
    mask = torch.zeros(3, 12, dtype=torch.long)
    for row, n in enumerate(lengths):
        src[row, n - 1] = EOS
        src[row, n:] = pad
        mask[row, :n] = 1
    return src, mask


def targets(start=PAD, vocab=VOCAB, seed=1):
    g = torch.Generator().manual_seed(seed)
    tgt = torch.randint(1, vocab - 1, (3, 9), generator=g)
    tgt[:, 0] = start
    return tgt


@pytest.fixture(scope="module")
def hf_marian():
    torch.manual_seed(0)
    model = transformers.MarianMTModel(marian_config()).eval()
    jitter(model)
    return model


def test_config_maps_both_ways(hf_marian):
    config = config_from_hf(hf_marian.config)
    assert (config.positional, config.sinusoidal_layout, config.scale_embeddings) == ("sinusoidal", "half", True)
    assert (config.norm_position, config.use_final_norm, config.embedding_norm, config.norm_eps) == ("post", False, False, 1e-5)
    assert (config.share_embeddings, config.tie_embeddings, config.output_bias, config.activation) == (True, True, True, "silu")
    assert (config.pad_id, config.eos_id, config.decoder_start_id, config.start_id) == (PAD, EOS, PAD, PAD)
    assert (config.dropout, config.attention_dropout, config.activation_dropout) == (0.1, 0.05, 0.02)
    back = config_to_hf(config)
    for name in ("vocab_size", "decoder_vocab_size", "d_model", "encoder_layers", "decoder_layers",
                 "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
                 "max_position_embeddings", "activation_function", "scale_embedding", "pad_token_id", "eos_token_id",
                 "decoder_start_token_id", "share_encoder_decoder_embeddings", "tie_word_embeddings",
                 "dropout", "attention_dropout", "activation_dropout"):
        assert getattr(back, name) == getattr(hf_marian.config, name), name
    assert config_from_hf(back) == config


def test_positions_are_the_half_split_sinusoids(hf_marian):
    """Marian has no LayerNorm after the embeddings, and its positions are our "half" table."""
    assert not hasattr(hf_marian.model.encoder, "layernorm_embedding")
    table = sinusoidal_table(64, 64, "half")
    assert (hf_marian.model.encoder.embed_positions.weight - table).abs().max().item() <= 1e-6
    assert (hf_marian.model.decoder.embed_positions.weight - table).abs().max().item() <= 1e-6


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_logits_match_with_source_padding(hf_marian, impl):
    model = from_hf(hf_marian, attention_impl=impl)
    assert model.lm_head.weight is model.src_embeddings.tokens.weight is model.tgt_embeddings.tokens.weight
    src, mask = sources()
    tgt = targets()
    with torch.no_grad():
        theirs = hf_marian(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        mine = model(src, tgt, src_padding_mask=mask)
    assert (mine - theirs).abs().max().item() <= TOL


def test_cached_decoding_matches_hf(hf_marian):
    """Our incremental decoder (self K/V cached, cross K/V once) against HF's full forward."""
    model = from_hf(hf_marian)
    src, mask = sources(seed=3)
    tgt = targets(seed=4)
    with torch.no_grad():
        theirs = hf_marian(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        memory = model.encode(src, mask)
        cache = model.new_cache(tgt.shape[1])
        steps = [model.decode_step(tgt[:, :1], memory, cache, src_padding_mask=mask)]
        for t in range(1, tgt.shape[1]):
            steps.append(model.decode_step(tgt[:, t : t + 1], None, cache, src_padding_mask=mask))
    assert (torch.cat(steps, dim=1) - theirs).abs().max().item() <= TOL


def test_separate_vocabularies_untied_head():
    """share_encoder_decoder_embeddings=False with its own target vocabulary, untied output, ReLU."""
    torch.manual_seed(1)
    hf_model = transformers.MarianMTModel(
        marian_config(share_encoder_decoder_embeddings=False, decoder_vocab_size=80, tie_word_embeddings=False,
                      activation_function="relu", scale_embedding=False, pad_token_id=1, decoder_start_token_id=1)
    ).eval()
    jitter(hf_model, seed=1)
    model = from_hf(hf_model)
    c = model.config
    shape = (c.vocab_size, c.tgt_vocab_size, c.share_embeddings, c.tie_embeddings, c.activation)
    assert shape == (VOCAB, 80, False, False, "relu")
    src, mask = sources(pad=1)
    tgt = targets(start=1, vocab=80)
    with torch.no_grad():
        theirs = hf_model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        assert (model(src, tgt, src_padding_mask=mask) - theirs).abs().max().item() <= TOL
        back = to_hf(model)
        again = back(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        assert (again - theirs).abs().max().item() <= TOL


def test_export_reproduces_our_logits():
    config = ModelConfig.from_preset(
        "marian-base", vocab_size=VOCAB, d_model=64, n_heads=4, n_layers=2, d_ff=128, max_positions=64,
        pad_id=PAD, eos_id=EOS, unk_id=None, decoder_start_id=PAD,
    )
    torch.manual_seed(0)
    model = Seq2SeqTransformer(config).eval()
    jitter(model, seed=5)
    hf_model = to_hf(model)
    assert isinstance(hf_model, transformers.MarianMTModel) and not hf_model.training
    assert hf_model.config.activation_function == "swish" and hf_model.config.decoder_start_token_id == PAD
    assert hf_model.lm_head.weight is hf_model.model.shared.weight
    assert torch.equal(hf_model.final_logits_bias[0], model.lm_head.bias)
    src, mask = sources(seed=6)
    tgt = targets(seed=7)
    with torch.no_grad():
        theirs = hf_model(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits
        assert (theirs - model(src, tgt, src_padding_mask=mask)).abs().max().item() <= TOL
    again = from_hf(hf_model)
    for key, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key


def test_unsupported_shapes_are_refused():
    interleaved = Seq2SeqTransformer(ModelConfig.from_preset("tiny-seq2seq"))
    with pytest.raises(UserError, match="cannot export to Marian: sinusoidal_layout = 'interleaved'"):
        to_hf(interleaved)
    with pytest.raises(UserError, match="decoder_attention_heads"):
        config_from_hf(marian_config(decoder_attention_heads=8))
    with pytest.raises(UserError, match="activation_function"):
        config_from_hf(marian_config(activation_function="mish"))
