"""GPT-2 weight exchange: a random-init GPT2LMHeadModel and our DecoderModel compute the same
logits (with and without padding), greedily generate the same 50 tokens, and export back."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from nanoformer.config import ModelConfig  # noqa: E402
from nanoformer.errors import UserError  # noqa: E402
from nanoformer.interop import from_hf, to_hf  # noqa: E402
from nanoformer.interop.gpt2 import config_from_hf, config_to_hf  # noqa: E402
from nanoformer.models import DecoderModel  # noqa: E402

TOL = 1e-4
VOCAB = 128


@torch.no_grad()
def jitter(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Move every weight off its init (LayerNorm 1/0, zero biases), so a swapped tensor shows."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="module")
def hf_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=96, n_embd=64, n_layer=3, n_head=4,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,  # greedy runs the full 50 tokens
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    jitter(model)
    return model


@pytest.fixture(scope="module")
def ours(hf_gpt2):
    return from_hf(hf_gpt2)


def left_padded(lengths, width, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=g)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, width - n :] = 1
        ids[row, : width - n] = 0
    return ids, mask


def test_config_maps_both_ways(hf_gpt2, ours):
    c = ours.config
    assert (c.arch, c.d_model, c.n_heads, c.n_layers, c.d_ff, c.max_positions) == ("decoder", 64, 4, 3, 256, 96)
    assert (c.activation, c.norm_position, c.use_final_norm, c.tie_embeddings) == ("gelu_tanh", "pre", True, True)
    assert (c.dropout, c.attention_dropout, c.norm_eps) == (0.1, 0.1, 1e-5)
    assert c.bos_id is None and c.eos_id is None and c.pad_id is None
    back = config_to_hf(c)
    for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "activation_function",
                 "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon"):
        assert getattr(back, name) == getattr(hf_gpt2.config, name), name
    assert config_from_hf(back) == c
    assert ours.lm_head.weight is ours.embeddings.tokens.weight and not ours.training


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_logits_match(hf_gpt2, impl):
    model = from_hf(hf_gpt2, attention_impl=impl)
    ids = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(ids) - hf_gpt2(ids).logits).abs().max().item()
    assert diff <= TOL


def test_logits_match_with_padding(hf_gpt2, ours):
    ids, mask = left_padded([20, 13, 5], 20)
    # Left padding: positions count real tokens (what HF's generate passes, and our default).
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        theirs = hf_gpt2(ids, attention_mask=mask, position_ids=position_ids).logits
        mine = ours(ids, attention_mask=mask)
    real = mask.bool()
    assert (mine[real] - theirs[real]).abs().max().item() <= TOL
    # Right padding: positions 0.. on both sides without being told.
    right_ids, right_mask = ids.flip(-1), mask.flip(-1)
    with torch.no_grad():
        theirs = hf_gpt2(right_ids, attention_mask=right_mask).logits
        mine = ours(right_ids, attention_mask=right_mask)
    real = right_mask.bool()
    assert (mine[real] - theirs[real]).abs().max().item() <= TOL


def greedy(model: DecoderModel, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding on our KV cache: the prompt once, then one token per step."""
    cache = model.new_cache(ids.shape[1] + new_tokens)
    logits = model.decode_step(ids, cache, attention_mask=mask)
    out = ids
    for step in range(new_tokens):
        token = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, token], dim=1)
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        if step + 1 < new_tokens:
            logits = model.decode_step(token, cache, attention_mask=mask)
    return out


def test_greedy_continuation_matches_hf_generate(hf_gpt2, ours):
    ids, mask = left_padded([9, 6], 9, seed=2)
    theirs = hf_gpt2.generate(
        ids, attention_mask=mask, do_sample=False, max_new_tokens=50, pad_token_id=0, eos_token_id=None
    )
    assert theirs.shape == (2, 59)
    mine = greedy(ours, ids, mask, 50)
    assert torch.equal(mine, theirs)
    # The public generate does the same.
    assert torch.equal(ours.generate(ids, max_new_tokens=50, do_sample=False, attention_mask=mask), theirs)


def test_export_reproduces_our_logits():
    config = ModelConfig.from_preset(
        "tiny-decoder", vocab_size=VOCAB, d_model=64, n_layers=2, d_ff=128, max_positions=64,
        activation="gelu_tanh", dropout=0.1, attention_dropout=0.1, pad_id=None, eos_id=3,
    )
    torch.manual_seed(0)
    model = DecoderModel(config).eval()
    jitter(model, seed=3)
    hf_model = to_hf(model)
    assert isinstance(hf_model, transformers.GPT2LMHeadModel) and not hf_model.training
    assert hf_model.lm_head.weight is hf_model.transformer.wte.weight
    assert hf_model.config.eos_token_id == 3 and hf_model.config.activation_function == "gelu_new"
    ids, mask = left_padded([16, 9], 16, seed=4)
    with torch.no_grad():
        assert (hf_model(ids).logits - model(ids)).abs().max().item() <= TOL
        right = mask.flip(-1).bool()
        diff = hf_model(ids.flip(-1), attention_mask=mask.flip(-1)).logits - model(ids.flip(-1), attention_mask=mask.flip(-1))
        assert diff[right].abs().max().item() <= TOL
    # And back again: the very same tensors.
    again = from_hf(hf_model)
    assert again.config == config.replace(init_std=0.02)
    for key, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], tensor), key


def test_untied_export_round_trip():
    config = ModelConfig.from_preset("tiny-decoder", vocab_size=VOCAB, d_model=32, n_layers=1, d_ff=64, tie_embeddings=False)
    model = DecoderModel(config).eval()
    jitter(model)
    hf_model = to_hf(model)
    assert hf_model.lm_head.weight is not hf_model.transformer.wte.weight
    ids = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        assert (hf_model(ids).logits - model(ids)).abs().max().item() <= TOL
        assert (from_hf(hf_model)(ids) - model(ids)).abs().max().item() == 0


def test_unsupported_models_and_shapes_are_refused():
    with pytest.raises(ValueError, match="from_hf does not convert Linear"):
        from_hf(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="to_hf converts"):
        to_hf(torch.nn.Linear(2, 2))
    rope = DecoderModel(ModelConfig.from_preset("tiny-decoder", positional="rope", norm="rmsnorm"))
    with pytest.raises(UserError, match="cannot export to GPT-2: .*positional = 'rope'"):
        to_hf(rope)
    swiglu = DecoderModel(ModelConfig.from_preset("tiny-decoder", activation="swiglu"))
    with pytest.raises(UserError, match="swiglu"):
        to_hf(swiglu)
    with pytest.raises(UserError, match="cross-attention"):
        config_from_hf(transformers.GPT2Config(add_cross_attention=True))
