"""The one-token decoding fast path (layers/fast_decode.py) computes what the layers compute.

Each case decodes a few steps twice from the same prompt: once with the fast path, once with it
switched off (the module path), and compares every step's logits and the caches they leave.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nanoformer.layers.blocks as blocks
from nanoformer.layers.fast_decode import make_plan
from tests.test_models import ids, make

STEPS = 6


def decode_logits(model: nn.Module, fast: bool, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Logits of a prefill and STEPS one-token steps, on a left-padded batch (decoder) or padded sources."""
    calls = []
    real = blocks.fast_decode_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(blocks, "fast_decode_step", counting)
        if not fast:
            patch.setattr(blocks, "make_plan", lambda decoder: None)
        out = []
        with torch.no_grad():
            cache = model.new_cache(24)
            if model.config.arch == "decoder":
                prompt = ids(3, 5, seed=1)
                mask = torch.ones(3, 5, dtype=torch.bool)
                mask[0, :2] = False  # left padding
                mask[2, :1] = False
                step = prompt
                for t in range(STEPS + 1):
                    logits = model.decode_step(step, cache, attention_mask=mask)
                    out.append(logits)
                    step = logits[:, -1:].argmax(-1)
                    mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], dim=1)
            else:
                src = ids(3, 7, seed=2, vocab=model.config.vocab_size)
                src_mask = torch.ones(3, 7, dtype=torch.bool)
                src_mask[1, 4:] = False  # a padded source
                memory = model.encode(src, src_mask)
                step = torch.full((3, 1), model.config.bos_id)
                for t in range(STEPS + 1):
                    logits = model.decode_step(step, memory if t == 0 else None, cache, src_mask)
                    out.append(logits)
                    step = logits[:, -1:].argmax(-1)
            out.append(torch.cat([layer.kv[:, :, :, : layer.length] for layer in cache.layers]))
    assert (len(calls) > 0) == fast, "the fast path was not taken (or taken when switched off)"
    return out


CASES = [
    dict(arch="decoder", positional="learned", norm_position="pre"),
    dict(arch="decoder", positional="sinusoidal", norm_position="post"),
    dict(arch="decoder", positional="rope", norm="rmsnorm", activation="swiglu", bias=False),
    dict(arch="decoder", positional="alibi", activation="gelu_tanh"),
    dict(arch="decoder", positional="none", activation="relu"),
    dict(arch="encoder-decoder", positional="sinusoidal"),
    dict(arch="encoder-decoder", positional="learned", norm_position="pre", attention_impl="sdpa"),
    dict(arch="encoder-decoder", positional="rope", activation="swiglu"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_fast_path_equals_module_path(case: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    case = dict(case)
    model = make(case.pop("arch"), **case)
    assert make_plan(model.decoder) is not None
    fast = decode_logits(model, True, monkeypatch)
    slow = decode_logits(model, False, monkeypatch)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_hooked_or_replaced_modules_take_the_module_path() -> None:
    """A hook or a wrapped projection (e.g. LoRA) must run: the fast path steps aside."""
    model = make("decoder")
    seen = []
    handle = model.decoder.layers[1].ffn.up.register_forward_hook(lambda *args: seen.append(1))
    assert make_plan(model.decoder) is None
    with torch.no_grad():
        cache = model.new_cache(8)
        model.decode_step(ids(1, 3, seed=0), cache)
        model.decode_step(ids(1, 1, seed=1), cache)
    assert len(seen) == 2  # the prefill and the one-token step both ran the hook
    handle.remove()
    assert make_plan(model.decoder) is not None

    class Wrapped(nn.Linear):
        pass

    old = model.decoder.layers[0].self_attn.qkv_proj
    wrapped = Wrapped(old.in_features, old.out_features)
    wrapped.load_state_dict(old.state_dict())
    model.decoder.layers[0].self_attn.qkv_proj = wrapped
    assert make_plan(model.decoder) is None
    model.train()
    model.decoder.layers[0].self_attn.qkv_proj = old
    assert make_plan(model.decoder) is None  # training mode never takes it
