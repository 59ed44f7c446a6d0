"""The linear layers' GEMM choice (nanoformer/kernels/gemm.py): oneDNN computes what F.linear does."""

from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.nn.functional as F

from nanoformer.config import ModelConfig
from nanoformer.kernels import gemm as L
from nanoformer.kernels.gemm import Linear, frozen_weights, gemm_backend, linear, set_gemm_backend
from nanoformer.layers.losses import linear_cross_entropy
from nanoformer.models import DecoderModel, Seq2SeqTransformer

needs_onednn = pytest.mark.skipif(not L._prepare_onednn_linear(), reason="this torch build has no oneDNN linear op")


@pytest.fixture
def backend():
    """Set the backend for one test, then restore the default rule."""
    yield set_gemm_backend
    set_gemm_backend(None)


@needs_onednn
@pytest.mark.parametrize("shape", [(7, 32), (3, 5, 32), (2, 3, 4, 32)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("out_features", [16, 96])  # narrower and wider than the input: both weight-gradient layouts
def test_onednn_linear_matches_f_linear_forward_and_backward(backend, shape, with_bias, out_features):
    backend("onednn")
    torch.manual_seed(0)
    x = torch.randn(shape, requires_grad=True)
    w = torch.randn(out_features, 32, requires_grad=True)
    b = torch.randn(out_features, requires_grad=True) if with_bias else None
    grad = torch.randn(*shape[:-1], out_features)
    ours = linear(x, w, b)
    ours.backward(grad)
    mine = [t.grad.clone() for t in (x, w, b) if t is not None]
    for t in (x, w, b):
        if t is not None:
            t.grad = None
    ref = F.linear(x, w, b)
    ref.backward(grad)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    for got, t in zip(mine, [t for t in (x, w, b) if t is not None]):
        assert got.shape == t.shape
        torch.testing.assert_close(got, t.grad, rtol=1e-5, atol=1e-4)


@needs_onednn
def test_onednn_linear_takes_non_contiguous_inputs(backend):
    backend("onednn")
    x = torch.randn(6, 4, 32).transpose(0, 1)
    w = torch.randn(32, 24).t()  # (24, 32), strided
    torch.testing.assert_close(linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-4)


def test_aten_backend_is_f_linear_exactly(backend):
    backend("aten")
    torch.manual_seed(0)
    x, w, b = torch.randn(5, 3, 16), torch.randn(8, 16), torch.randn(8)
    assert gemm_backend() == "aten"
    assert torch.equal(linear(x, w, b), F.linear(x, w, b))


@needs_onednn
def test_autocast_and_other_dtypes_keep_torch_kernels(backend):
    backend("onednn")
    x, w = torch.randn(4, 16), torch.randn(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, w).dtype == torch.bfloat16
    assert torch.equal(linear(x.double(), w.double()), F.linear(x.double(), w.double()))


def test_backend_names_are_checked(backend, monkeypatch):
    with pytest.raises(ValueError, match="onednn, aten"):
        backend("mkl")
    monkeypatch.setenv("NANOFORMER_GEMM", "fast")
    with pytest.raises(ValueError, match="NANOFORMER_GEMM"):
        gemm_backend()
    monkeypatch.setenv("NANOFORMER_GEMM", "aten")
    assert gemm_backend() == "aten"


def test_auto_follows_the_cpu_vendor(backend, monkeypatch):
    monkeypatch.delenv("NANOFORMER_GEMM", raising=False)
    monkeypatch.setattr(L, "cpu_vendor", lambda: "GenuineIntel")
    assert gemm_backend() == "aten"
    monkeypatch.setattr(L, "cpu_vendor", lambda: "AuthenticAMD")
    assert gemm_backend() == ("onednn" if L._prepare_onednn_linear() else "aten")


@needs_onednn
def test_the_default_rule_sends_small_products_to_torchs_kernel(backend, monkeypatch):
    """On an AMD CPU a product too small to repay oneDNN's cost per call is F.linear exactly, in the
    module path and in the decoding steps alike (so the two stay equal to the bit); an override
    sends everything to oneDNN."""
    monkeypatch.delenv("NANOFORMER_GEMM", raising=False)
    monkeypatch.setattr(L, "cpu_vendor", lambda: "AuthenticAMD")
    calls = []
    real = L._onednn_linear
    monkeypatch.setattr(L, "_onednn_linear", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    small, wide, large = torch.randn(128, 512), torch.randn(256, 256), torch.randn(129, 512)
    cases = [(small, 1, False), (small, 128, False), (small, 129, True),
             (wide, 1, True), (wide, 16, True), (large, 1, True)]
    with torch.no_grad():
        for weight, rows, on_onednn in cases:
            x = torch.randn(rows, 1, weight.shape[1])  # (rows, 1, in), as a decoding step has
            calls.clear()
            out = linear(x, weight)
            assert bool(calls) == on_onednn, (tuple(weight.shape), rows)
            with frozen_weights():
                calls.clear()
                step = L.frozen_linear(weight)(x)
                assert bool(calls) == on_onednn, (tuple(weight.shape), rows)
                assert torch.equal(step, linear(x, weight))
            if on_onednn:
                torch.testing.assert_close(out, F.linear(x, weight), rtol=1e-5, atol=1e-4)
            else:
                assert torch.equal(out, F.linear(x, weight))
        backend("onednn")  # the override: every product on oneDNN
        calls.clear()
        linear(torch.randn(1, small.shape[1]), small)
        assert calls


@needs_onednn
def test_frozen_weights_reuse_packed_copies_only_within_the_block(backend):
    backend("onednn")
    torch.manual_seed(0)
    x, w = torch.randn(4, 32), torch.randn(16, 32)
    with frozen_weights():
        first = linear(x, w)
        with frozen_weights():  # nested: the inner block's exit keeps the outer's copies
            linear(x, w)
        assert len(L._frozen.packed) == 1
        torch.testing.assert_close(first, F.linear(x, w), rtol=1e-5, atol=1e-4)
    assert L._frozen.packed is None
    # An in-place change that does not bump the version counter (the fused AdamW's), between blocks.
    param = torch.nn.Parameter(w.clone())
    param.grad = torch.randn_like(w)
    torch.optim.AdamW([param], lr=0.5, fused=True).step()
    with torch.no_grad(), frozen_weights():
        torch.testing.assert_close(linear(x, param), F.linear(x, param), rtol=1e-5, atol=1e-4)


@needs_onednn
def test_frozen_linear_goes_straight_to_the_packed_product_only_where_that_is_safe(backend):
    backend("onednn")
    torch.manual_seed(0)
    x, w, b = torch.randn(3, 32), torch.nn.Parameter(torch.randn(16, 32)), torch.nn.Parameter(torch.randn(16))
    outside = L.frozen_linear(w, b)  # outside frozen_weights: linear itself
    assert isinstance(outside, functools.partial) and outside.func is linear
    with frozen_weights():
        project = L.frozen_linear(w, b)
        assert not isinstance(project, functools.partial) and len(L._frozen.packed) == 1
        with torch.no_grad():
            torch.testing.assert_close(project(x), F.linear(x, w, b), rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(project(x[:, None, :]), F.linear(x[:, None, :], w, b), rtol=1e-5, atol=1e-4)
            with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast on: linear's path, torch's kernel
                assert project(x).dtype == torch.bfloat16
            broadcast = torch.ones(1, 32).expand(3, 32)  # stride 0: made contiguous by linear's path
            torch.testing.assert_close(project(broadcast), F.linear(broadcast, w, b), rtol=1e-5, atol=1e-4)
        out = project(x)  # grad enabled: through autograd, so the weights get their gradients
        out.sum().backward()
        assert w.grad is not None and b.grad is not None
    backend("aten")
    with frozen_weights():
        assert isinstance(L.frozen_linear(w, b), functools.partial)  # no oneDNN here: nothing to pack


@needs_onednn
def test_fused_loss_same_with_both_backends(backend):
    torch.manual_seed(0)
    hidden = torch.randn(700, 24, requires_grad=True)  # more rows than one chunk
    weight = torch.randn(50, 24, requires_grad=True)
    bias = torch.randn(50, requires_grad=True)
    targets = torch.randint(0, 50, (700,))
    targets[::7] = -100
    results = []
    for name in ("aten", "onednn"):
        backend(name)
        for t in (hidden, weight, bias):
            t.grad = None
        loss = linear_cross_entropy(hidden, weight, bias, targets, label_smoothing=0.1, chunk_rows=256)
        loss.backward()
        results.append([loss.detach()] + [t.grad.clone() for t in (hidden, weight, bias)])
    for got, ref in zip(*results):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("family", ["decoder", "seq2seq"])
def test_models_train_and_generate_alike_on_both_backends(backend, family):
    torch.manual_seed(0)
    config = ModelConfig(arch="decoder" if family == "decoder" else "encoder-decoder", vocab_size=64, d_model=32,
                         n_heads=4, n_layers=2, d_ff=64, max_positions=32, dropout=0.0, pad_id=0, bos_id=1, eos_id=2)
    model = DecoderModel(config) if family == "decoder" else Seq2SeqTransformer(config)
    ids = torch.randint(3, 64, (3, 10))
    results = []
    for name in ("aten", "onednn"):
        backend(name)
        model.zero_grad()
        model.train()
        loss = model(ids, targets=ids) if family == "decoder" else model(ids, ids, targets=ids)
        loss.backward()
        model.eval()
        out = model.generate(ids[:, :4], 8, eos_id=None) if family == "decoder" else model.generate(ids, 8, beam_size=2)
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()], out))
    (loss_a, grads_a, out_a), (loss_b, grads_b, out_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert torch.equal(out_a, out_b)


@needs_onednn
def test_broadcast_gradient_of_a_sum(backend):
    # `.sum().backward()` hands the layer a stride-0 gradient. Before `_onednn_linear` made it
    # contiguous, oneDNN took about 5 s for this backward pass (0.01 s now); the values must match.
    backend("onednn")
    torch.manual_seed(0)
    x = torch.randn(1000, 256, requires_grad=True)
    w = torch.randn(1024, 256, requires_grad=True)
    linear(x, w).sum().backward()
    torch.testing.assert_close(x.grad, w.sum(0).expand(1000, 256), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(w.grad, x.sum(0).expand(1024, 256), rtol=1e-5, atol=1e-3)


@needs_onednn
def test_empty_products_fall_back(backend):
    backend("onednn")
    w = torch.randn(4, 8, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    for shape in [(0, 8), (2, 0, 8)]:
        x = torch.randn(shape, requires_grad=True)
        y = linear(x, w, b)
        y.sum().backward()
        assert y.shape == (*shape[:-1], 4) and x.grad.shape == x.shape
    assert w.grad.abs().sum() == 0


def test_linear_module_is_nn_linear():
    layer = Linear(8, 4)
    assert isinstance(layer, torch.nn.Linear)
    assert set(layer.state_dict()) == {"weight", "bias"}


def test_onednn_kernel_cache_is_bounded_unless_the_user_set_it(monkeypatch):
    # Padding-free batches bring new row counts every step; oneDNN's default cache of 1,024
    # kernels, one per shape, held gigabytes (benchmarks/onednn_shapes.py).
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "8")
    L._prepare_onednn_linear.cache_clear()
    try:
        L._prepare_onednn_linear()
        assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == L._KERNEL_CACHE_CAPACITY == "64"
        assert os.environ["LRU_CACHE_CAPACITY"] == "8"
    finally:
        L._prepare_onednn_linear.cache_clear()
