"""A decoding step (one new token per row on the KV cache) computes what the whole sequence computes.

Each case decodes a few greedy steps from a padded batch, for every configuration the layers
offer (pre/post-LN, LayerNorm/RMSNorm, activations, positional schemes, cross-attention over a
padded source), and compares every step's logits
- with an uncached forward over the sequence so far (the step path: masks and ALiBi as one
  additive mask prepared once for all layers), and
- inside `decoding()`, where the steps run as functional calls (kernels/decode_step.py), with
  the module path at 1e-6, caches included.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import nanoformer.layers.blocks as blocks
from tests.test_models import ids, make

STEPS = 6
TOL = 2e-5


def step_and_full_logits(model: nn.Module, fast: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(cached step logits, uncached logits at that position) for a prefill and STEPS steps, and
    last the filled caches (twice); `fast`: the steps inside `model.decoding()`."""
    pairs = []
    with torch.no_grad(), (model.decoding() if fast else contextlib.nullcontext()):
        cache = model.new_cache(24)
        if model.config.arch == "decoder":
            sequence = ids(3, 5, seed=1)
            mask = torch.ones(3, 5, dtype=torch.bool)
            mask[0, :2] = False  # left padding
            mask[2, :1] = False
            step = sequence
            for _ in range(STEPS + 1):
                logits = model.decode_step(step, cache, attention_mask=mask)[:, -1]
                full = model(sequence, attention_mask=mask)[:, -1]
                pairs.append((logits, full))
                step = logits.argmax(-1, keepdim=True)
                sequence = torch.cat([sequence, step], dim=1)
                mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.bool)], dim=1)
        else:
            src = ids(3, 7, seed=2, vocab=model.config.vocab_size)
            src_mask = torch.ones(3, 7, dtype=torch.bool)
            src_mask[1, 4:] = False  # a padded source
            memory = model.encode(src, src_mask)
            target = torch.full((3, 1), model.config.bos_id)
            step = target
            for t in range(STEPS + 1):
                logits = model.decode_step(step, memory if t == 0 else None, cache, src_mask)[:, -1]
                full = model(src, target, src_padding_mask=src_mask)[:, -1]
                pairs.append((logits, full))
                step = logits.argmax(-1, keepdim=True)
                target = torch.cat([target, step], dim=1)
    kv = torch.cat([layer.kv[:, :, :, : layer.length] for layer in cache.layers])
    return pairs + [(kv, kv)]


CASES = [
    dict(arch="decoder", positional="learned", norm_position="pre"),
    dict(arch="decoder", positional="sinusoidal", norm_position="post"),
    dict(arch="decoder", positional="rope", norm="rmsnorm", activation="swiglu", bias=False),
    dict(arch="decoder", positional="alibi", activation="gelu_tanh"),
    dict(arch="decoder", positional="none", activation="relu"),
    dict(arch="decoder", positional="alibi", impl="math"),
    dict(arch="encoder-decoder", positional="sinusoidal"),
    dict(arch="encoder-decoder", positional="learned", norm_position="pre", attention_impl="sdpa"),
    dict(arch="encoder-decoder", positional="rope", activation="swiglu"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_decoding_steps_equal_the_uncached_forward(case: dict) -> None:
    case = dict(case)
    model = make(case.pop("arch"), **case)
    pairs = step_and_full_logits(model)
    first = pairs[0][0]
    assert any((step - first).abs().max() > 1e-3 for step, _ in pairs[1:]), "degenerate: every step gives the same logits"
    for step, full in pairs:
        torch.testing.assert_close(step, full, rtol=0, atol=TOL)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_functional_steps_equal_the_module_path(case: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    case = dict(case)
    model = make(case.pop("arch"), **case)
    calls = []
    real = blocks.decode_step
    monkeypatch.setattr(blocks, "decode_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    slow = step_and_full_logits(model)
    assert not calls, "the functional steps ran outside decoding()"
    fast = step_and_full_logits(model, fast=True)
    assert (len(calls) > 0) == (case.get("impl", "sdpa") == "sdpa"), "decoding() did not take the functional steps"
    for (a, _), (b, _) in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_replaced_projections_and_training_keep_the_module_path() -> None:
    model = make("decoder")
    with model.decoding():
        assert model.decoder._step_weights is not None
    assert model.decoder._step_weights is None  # only inside the block

    class Wrapped(nn.Linear):
        pass

    old = model.decoder.layers[0].self_attn.qkv_proj
    model.decoder.layers[0].self_attn.qkv_proj = Wrapped(old.in_features, old.out_features)
    with model.decoding():
        assert model.decoder._step_weights is None
    model.decoder.layers[0].self_attn.qkv_proj = old
    model.train()
    with model.decoding():
        assert model.decoder._step_weights is None  # training mode never takes it


def test_hooked_or_replaced_modules_run_in_every_step() -> None:
    """Decoding runs the modules themselves: a hook fires, and a wrapped projection (e.g. LoRA) is
    used, also inside `decoding()`."""
    model = make("decoder")
    seen = []
    handle = model.decoder.layers[1].ffn.up.register_forward_hook(lambda *args: seen.append(1))
    with torch.no_grad():
        cache = model.new_cache(8)
        model.decode_step(ids(1, 3, seed=0), cache)
        before = model.decode_step(ids(1, 1, seed=1), cache)
    assert len(seen) == 2  # the prefill and the one-token step both ran the hook
    handle.remove()

    class Doubled(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    old = model.decoder.layers[0].self_attn.qkv_proj
    wrapped = Doubled(old.in_features, old.out_features)
    wrapped.load_state_dict(old.state_dict())
    model.decoder.layers[0].self_attn.qkv_proj = wrapped
    with torch.no_grad(), model.decoding():
        cache = model.new_cache(8)
        model.decode_step(ids(1, 3, seed=0), cache)
        after = model.decode_step(ids(1, 1, seed=1), cache)
    assert (after - before).abs().max() > 1e-3  # the wrapper's forward took part in the step


def test_a_translation_run_prepares_the_weights_once_for_all_its_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """`translate_ids` holds one `generating` block around its batches: the decoder's weights are
    looked up (and the GEMM's packed copies made) once per run, not once per batch, with the same
    translations as one block per batch."""
    import nanoformer.generation.translation as translation

    model = make("encoder-decoder")
    looked_up = []
    real = blocks.Decoder._look_up_step_weights
    monkeypatch.setattr(blocks.Decoder, "_look_up_step_weights", lambda self: looked_up.append(1) or real(self))
    sources = [[3 + (5 * i + j) % 12 for j in range(2 + i % 4)] + [2] for i in range(7)]
    shared = translation.translate_ids(model, sources, 0, 2, batch_size=2, max_len_b=6)
    assert len(looked_up) == 1
    looked_up.clear()
    monkeypatch.setattr(translation, "generating", lambda model: contextlib.nullcontext())
    per_batch = translation.translate_ids(model, sources, 0, 2, batch_size=2, max_len_b=6)
    assert len(looked_up) == 4  # without the block: once per batch of 2 among the 7 sentences
    assert shared == per_batch and any(len(t) > 1 for t in shared)
