"""Attention: our MultiHeadAttention against torch.nn.MultiheadAttention, the "math" path against
the "sdpa" path for every mask combination, fully masked rows, masks and the KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from nanoformer.layers.attention import MultiHeadAttention, scaled_dot_product_attention
from nanoformer.layers.cache import KVCache, LayerCache
from nanoformer.layers.masks import causal_mask, combine, from_blocked_mask, padding_mask
from nanoformer.layers.positional import alibi_bias, alibi_slopes

TOL = 1e-5


def reference_attention(q, k, v, mask=None, bias=None, causal=False):
    """softmax(QKᵀ/√d + bias) V in float64, written out; rows with no visible key give 0."""
    q, k, v = q.double(), k.double(), v.double()
    tq, tk = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if bias is not None:
        scores = scores + bias.double()
    allowed = torch.ones(scores.shape, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    if causal:
        for i in range(tq):
            allowed[..., i, tk - tq + i + 1 :] = False
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0)  # empty rows: softmax of all -inf
    return weights @ v, weights


def random_qkv(batch=2, heads=3, tq=5, tk=5, d=8, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, tq, d, generator=g)
    k = torch.randn(batch, heads, tk, d, generator=g)
    v = torch.randn(batch, heads, tk, d, generator=g)
    if grad:
        for t in (q, k, v):
            t.requires_grad_(True)
    return q, k, v


def key_padding(lengths, total):
    """(B, 1, 1, total) mask, True on the first `length` keys of each row."""
    real = torch.arange(total).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    return padding_mask(real)


# -- against torch.nn.MultiheadAttention -----------------------------------------------------------

D, H = 16, 4


def torch_mha(seed=0):
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(D, H, batch_first=True, bias=True)
    with torch.no_grad():  # torch zero-initialises the biases; make them count
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha.eval()


def ours_from_torch(mha, cross):
    ours = MultiHeadAttention(D, H, cross=cross, impl="math").eval()
    with torch.no_grad():
        if cross:
            ours.q_proj.weight.copy_(mha.in_proj_weight[:D])
            ours.q_proj.bias.copy_(mha.in_proj_bias[:D])
            ours.kv_proj.weight.copy_(mha.in_proj_weight[D:])
            ours.kv_proj.bias.copy_(mha.in_proj_bias[D:])
        else:
            ours.qkv_proj.weight.copy_(mha.in_proj_weight)
            ours.qkv_proj.bias.copy_(mha.in_proj_bias)
        ours.out_proj.weight.copy_(mha.out_proj.weight)
        ours.out_proj.bias.copy_(mha.out_proj.bias)
    return ours


@pytest.mark.parametrize("causal_via", [None, "flag", "attn_mask"])
@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_self_attention_matches_torch(causal_via, impl):
    mha = torch_mha(seed=1)
    ours = ours_from_torch(mha, cross=False)
    ours.impl = impl
    torch.manual_seed(2)
    B, T = 3, 6
    x = torch.randn(B, T, D)
    blocked = torch.arange(T).unsqueeze(0) >= torch.tensor([6, 4, 1]).unsqueeze(1)  # torch: True = pad
    causal_blocked = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    attn_mask = causal_blocked if causal_via else None
    expected, expected_w = mha(
        x, x, x, key_padding_mask=blocked, attn_mask=attn_mask, need_weights=True, average_attn_weights=False
    )
    _, expected_avg = mha(x, x, x, key_padding_mask=blocked, attn_mask=attn_mask, need_weights=True)

    mask = padding_mask(from_blocked_mask(blocked))
    if causal_via == "attn_mask":
        mask = mask & from_blocked_mask(causal_blocked)
    causal = causal_via == "flag"
    out, _ = ours(x, mask=mask, causal=causal)
    assert (out - expected).abs().max() <= TOL
    out_w, weights = ours(x, mask=mask, causal=causal, need_weights=True)
    assert weights.shape == (B, H, T, T)
    assert (out_w - expected).abs().max() <= TOL
    assert (weights - expected_w).abs().max() <= TOL
    assert (weights.mean(dim=1) - expected_avg).abs().max() <= TOL


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_cross_attention_matches_torch(impl):
    mha = torch_mha(seed=3)
    ours = ours_from_torch(mha, cross=True)
    ours.impl = impl
    torch.manual_seed(4)
    B, T, S = 3, 4, 7
    x, memory = torch.randn(B, T, D), torch.randn(B, S, D)
    blocked = torch.arange(S).unsqueeze(0) >= torch.tensor([7, 3, 5]).unsqueeze(1)
    expected, expected_w = mha(
        x, memory, memory, key_padding_mask=blocked, need_weights=True, average_attn_weights=False
    )
    mask = padding_mask(from_blocked_mask(blocked))
    out, _ = ours(x, memory=memory, mask=mask)
    assert (out - expected).abs().max() <= TOL
    _, weights = ours(x, memory=memory, mask=mask, need_weights=True)
    assert weights.shape == (B, H, T, S)
    assert (weights - expected_w).abs().max() <= TOL


def test_cross_attention_with_additive_float_mask_matches_torch():
    mha = torch_mha(seed=5)
    ours = ours_from_torch(mha, cross=True)
    torch.manual_seed(6)
    x, memory = torch.randn(2, 3, D), torch.randn(2, 5, D)
    additive = torch.zeros(3, 5)
    additive[0, 3:] = float("-inf")
    additive[2, :2] = float("-inf")
    expected, _ = mha(x, memory, memory, attn_mask=additive)
    out, _ = ours(x, memory=memory, mask=from_blocked_mask(additive))
    assert (out - expected).abs().max() <= TOL


def test_mha_rejects_bad_construction_and_missing_memory():
    with pytest.raises(ValueError, match=r"d_model \(10\).*n_heads \(4\)"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="impl"):
        MultiHeadAttention(8, 2, impl="flash")
    cross = MultiHeadAttention(8, 2, cross=True)
    with pytest.raises(ValueError, match="memory"):
        cross(torch.randn(1, 2, 8))


# -- math path == sdpa path, for every mask combination --------------------------------------------


def _case(name):
    """(q, k, v, kwargs) for one named mask combination."""
    B, Hh, d = 3, 2, 8
    cached = name.startswith("cached")
    tq, tk = (3, 7) if cached else (6, 6)
    q, k, v = random_qkv(B, Hh, tq, tk, d, seed=CASES.index(name), grad=True)
    pad = key_padding([tk, tk - 2, 1], tk)
    kwargs = {}
    if "padding" in name:
        kwargs["mask"] = pad
    if "causal" in name or cached:
        kwargs["causal"] = True
    if "alibi" in name:
        kwargs["bias"] = alibi_bias(alibi_slopes(Hh), tq, tk, offset=tk - tq)
    if "empty" in name:  # some query rows see no key at all; one batch row sees nothing
        mask = torch.ones(B, 1, tq, tk, dtype=torch.bool)
        mask[0, :, 2, :] = False
        mask[1, :, :, :] = False
        mask[2, :, 0, 1:] = False
        kwargs["mask"] = mask
    return q, k, v, kwargs


CASES = [
    "none",
    "padding",
    "causal",
    "causal+padding",
    "empty_rows",
    "empty_rows+causal",
    "alibi",
    "alibi+padding",
    "alibi+causal+padding",
    "cached",
    "cached+padding",
    "cached+alibi+padding",
]


@pytest.mark.parametrize("name", CASES)
def test_math_equals_sdpa_and_reference(name):
    q, k, v, kwargs = _case(name)
    seed = torch.Generator().manual_seed(7)
    upstream = None
    results = {}
    for impl in ("math", "sdpa"):
        for t in (q, k, v):
            t.grad = None
        out, weights = scaled_dot_product_attention(q, k, v, impl=impl, **kwargs)
        assert weights is None
        if upstream is None:
            upstream = torch.randn(out.shape, generator=seed)
        (out * upstream).sum().backward()
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
        results[impl] = (out.detach(), [t.grad.clone() for t in (q, k, v)])
    (out_m, grads_m), (out_s, grads_s) = results["math"], results["sdpa"]
    assert (out_m - out_s).abs().max() <= TOL
    for gm, gs in zip(grads_m, grads_s):
        assert (gm - gs).abs().max() <= TOL
    expected, _ = reference_attention(q.detach(), k.detach(), v.detach(), **kwargs)
    assert (out_m.double() - expected).abs().max() <= TOL


@pytest.mark.parametrize("name", CASES)
def test_returned_weights_match_reference(name):
    q, k, v, kwargs = _case(name)
    with torch.no_grad():
        out, weights = scaled_dot_product_attention(q, k, v, need_weights=True, impl="sdpa", **kwargs)
        expected_out, expected_w = reference_attention(q, k, v, **kwargs)
    assert weights is not None and weights.shape == expected_w.shape
    assert (weights.double() - expected_w).abs().max() <= TOL
    assert (out.double() - expected_out).abs().max() <= TOL


def test_weights_rows_sum_to_one_and_ignore_masked_keys():
    q, k, v = random_qkv(2, 2, 5, 5, 4, seed=11)
    mask = key_padding([5, 3], 5)
    _, weights = scaled_dot_product_attention(q, k, v, mask=mask, causal=True, need_weights=True)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 5), atol=1e-6)
    assert (weights[1, :, :, 3:] == 0).all()
    assert (torch.triu(weights, diagonal=1) == 0).all()


def test_scale_argument_is_used():
    q, k, v = random_qkv(1, 1, 4, 4, 4, seed=12)
    a, _ = scaled_dot_product_attention(q, k, v, impl="math")
    b, _ = scaled_dot_product_attention(q, k, v, impl="math", scale=1.0)
    c, _ = scaled_dot_product_attention(q, k, v, impl="sdpa", scale=1.0)
    assert (a - b).abs().max() > 1e-3
    assert (b - c).abs().max() <= TOL
    expected, _ = reference_attention(q * 2.0, k, v)  # √d = 2: scale 1 is the default on 2q
    assert (b.double() - expected).abs().max() <= TOL


# -- fully masked rows -----------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["math", "sdpa"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fully_masked_rows_are_zero_and_finite(impl, with_bias):
    q, k, v = random_qkv(2, 2, 4, 5, 4, seed=13, grad=True)
    mask = torch.ones(2, 1, 4, 5, dtype=torch.bool)
    mask[0] = False  # the whole first batch row: every query sees nothing
    mask[1, :, 3] = False  # one query of the second row
    bias = alibi_bias(alibi_slopes(2), 4, 5, offset=1) if with_bias else None
    out, _ = scaled_dot_product_attention(q, k, v, mask=mask, bias=bias, impl=impl)
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all() and (out[1, :, 3] == 0).all()
    assert (out[1, :, :3].abs().sum(-1) > 0).all()
    out.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[0] == 0).all() and (q.grad[1, :, 3] == 0).all()
    assert (k.grad[0] == 0).all() and (v.grad[0] == 0).all()


def test_fully_masked_rows_return_zero_weights():
    q, k, v = random_qkv(1, 2, 3, 3, 4, seed=14)
    mask = torch.tensor([[True, False, True], [False, False, False], [True, True, True]])
    _, weights = scaled_dot_product_attention(q, k, v, mask=mask, need_weights=True)
    assert torch.isfinite(weights).all()
    assert (weights[:, :, 1] == 0).all()
    assert torch.allclose(weights[:, :, [0, 2]].sum(-1), torch.ones(1, 2, 2))


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_mha_fully_padded_sequence_gives_output_bias(impl):
    torch.manual_seed(15)
    mha = MultiHeadAttention(8, 2, impl=impl)
    with torch.no_grad():
        mha.out_proj.bias.normal_()
    x = torch.randn(2, 3, 8, requires_grad=True)
    mask = key_padding([3, 0], 3)
    out, _ = mha(x, mask=mask)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[1], mha.out_proj.bias.expand(3, 8), atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mha.parameters())


# -- masks -----------------------------------------------------------------------------------------


def test_causal_mask_with_offset():
    assert torch.equal(causal_mask(3, 3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    m = causal_mask(2, 5, offset=3)
    assert torch.equal(m, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))


def test_mask_conversions():
    blocked = torch.tensor([[False, True], [True, False]])
    assert torch.equal(from_blocked_mask(blocked), ~blocked)
    additive = torch.tensor([[0.0, float("-inf")], [-1.5, 0.0]])
    assert torch.equal(from_blocked_mask(additive), torch.tensor([[True, False], [True, True]]))
    hf = torch.tensor([[1, 1, 0], [1, 0, 0]])
    pm = padding_mask(hf)
    assert pm.dtype == torch.bool and pm.shape == (2, 1, 1, 3)
    assert torch.equal(pm[:, 0, 0], hf.bool())
    a = torch.tensor([True, False, True])
    b = torch.tensor([True, True, False])
    assert combine(None, None) is None
    assert torch.equal(combine(a, None, b), torch.tensor([True, False, False]))


# -- KV cache --------------------------------------------------------------------------------------


def test_layer_cache_append_grow_reorder_trim():
    torch.manual_seed(16)
    cache = LayerCache(capacity=2)
    chunks = [torch.randn(3, 2, n, 4) for n in (1, 3, 2)]
    for i, c in enumerate(chunks):
        k, v = cache.append(c, -c)
    full = torch.cat(chunks, dim=2)
    assert cache.length == 6 and cache.k.shape[2] >= 6
    assert torch.equal(k, full) and torch.equal(v, -full)
    cache.cross_k = torch.randn(3, 2, 5, 4)
    cross = cache.cross_k.clone()
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    assert torch.equal(cache.k[:, :, :6], full[index])
    assert torch.equal(cache.cross_k, cross[index])
    cache.trim(4)
    assert cache.length == 4
    new = torch.randn(3, 2, 1, 4)
    k, _ = cache.append(new, new)
    assert torch.equal(k, torch.cat([full[index][:, :, :4], new], dim=2))
    with pytest.raises(ValueError, match="trim"):
        cache.trim(9)


def test_layer_cache_reorders_in_turn_as_beam_search_does():
    """Reorders after every append (rows grow 2 -> 6, stay, shrink to 3, grow again): the cache keeps
    exactly the rows a list of tensors would, though it copies only filled positions and reuses
    the buffer of the previous order."""
    g = torch.Generator().manual_seed(3)
    cache = LayerCache(capacity=8)
    expected = torch.empty(2, 2, 2, 0, 4)  # (B, K/V, H, T, d)
    for rows in ([0, 0, 0, 1, 1, 1], [5, 4, 3, 2, 1, 0], [1, 1, 4], [2, 0, 1], [0, 1, 2, 2, 1, 0], [3, 3]):
        new = torch.randn(expected.shape[0], 2, 2, 1, 4, generator=g)
        k, v = cache.append(*new.unbind(1))
        expected = torch.cat([expected, new], dim=3)
        assert torch.equal(k, expected[:, 0]) and torch.equal(v, expected[:, 1])
        index = torch.tensor(rows)
        cache.reorder(index)
        expected = expected[index]
        assert torch.equal(cache.k[:, :, : cache.length], expected[:, 0])
        assert torch.equal(cache.v[:, :, : cache.length], expected[:, 1])


def test_cross_keys_stored_per_sentence_follow_the_sentences():
    """With `sentences`, cross K/V (one row per source sentence) move only when a sentence leaves;
    the self-attention rows follow the beams as before."""
    cache = LayerCache(capacity=4)
    cache.append(*torch.randn(6, 2, 2, 1, 4).unbind(1))  # 3 sentences x 2 beams
    cache.cross_k, cache.cross_v = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    cross_k, cross_v = cache.cross_k, cache.cross_v
    cache.reorder(torch.tensor([1, 1, 2, 3, 5, 4]), sentences=torch.arange(3))
    assert cache.cross_k is cross_k and cache.cross_v is cross_v  # all three stayed: nothing copied
    cache.reorder(torch.tensor([0, 1, 4, 5]), sentences=torch.tensor([0, 2]))
    assert torch.equal(cache.cross_k, cross_k[[0, 2]]) and torch.equal(cache.cross_v, cross_v[[0, 2]])
    assert cache.kv.shape[0] == 4


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_cross_attention_of_beams_sharing_one_memory_equals_copies(impl):
    """Three beams per sentence reading one copy of the sentence's keys/values (group_queries) give
    what three copies give, outputs and weights, with a padded source."""
    torch.manual_seed(21)
    mha = MultiHeadAttention(8, 2, cross=True, impl=impl).eval()
    memory, x = torch.randn(2, 5, 8), torch.randn(6, 1, 8)
    mask = padding_mask(torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    shared = LayerCache(capacity=2)
    mha(x[::3], memory=memory, mask=mask, cache=shared)  # first step: one row per sentence
    out, weights = mha(x, mask=mask, cache=shared, need_weights=True)
    assert shared.cross_k.shape[0] == 2
    copies = LayerCache(capacity=2)
    ref, ref_weights = mha(x, memory=memory.repeat_interleave(3, 0), mask=mask.repeat_interleave(3, 0),
                           cache=copies, need_weights=True)
    assert (out - ref).abs().max() <= TOL and (weights - ref_weights).abs().max() <= TOL
    assert weights[:3, :, :, 3:].abs().max() == 0  # the padded source positions


def test_kv_cache_tracks_layers():
    cache = KVCache(n_layers=3, capacity=4)
    assert len(cache.layers) == 3 and cache.length == 0
    for layer in cache.layers:
        layer.append(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert cache.length == 2
    cache.trim(1)
    assert all(layer.length == 1 for layer in cache.layers)


@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_mha_cached_self_attention_equals_full(impl):
    torch.manual_seed(17)
    mha = MultiHeadAttention(8, 2, impl=impl).eval()
    x = torch.randn(2, 6, 8)
    full, _ = mha(x, causal=True)
    cache = LayerCache(capacity=3)
    outs = [mha(x[:, :2], causal=True, cache=cache)[0]]
    for t in range(2, 6):
        outs.append(mha(x[:, t : t + 1], causal=True, cache=cache)[0])
    assert (torch.cat(outs, dim=1) - full).abs().max() <= TOL
