"""Property tests (hypothesis) over random sizes, masks and lengths: attention paths agree, weights
are distributions, models are causal, padding-invariant and cache-consistent, and the closed-form
parameter count matches the built model for random configs."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoformer.config import ModelConfig, closed_form_parameter_count
from nanoformer.layers.attention import scaled_dot_product_attention
from nanoformer.layers.positional import alibi_bias, alibi_slopes
from nanoformer.models import build_model

TOL = 1e-5
POSITIONALS = ["sinusoidal", "learned", "rope", "alibi", "none"]
# Derandomised: the same examples on every run; no example database written to disk.
FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
MODELS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


# -- the attention function ------------------------------------------------------------------------


@st.composite
def attention_case(draw):
    batch = draw(st.integers(1, 3))
    heads = draw(st.integers(1, 3))
    tq = draw(st.integers(1, 6))
    tk = draw(st.integers(tq, tq + 4))
    d = draw(st.sampled_from([1, 2, 4, 8]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, t, d, generator=g) * 2 for t in (tq, tk, tk))
    kind = draw(st.sampled_from(["none", "padding", "random"]))
    mask = None
    if kind == "padding":
        lengths = torch.tensor(draw(st.lists(st.integers(0, tk), min_size=batch, max_size=batch)))
        mask = (torch.arange(tk) < lengths[:, None])[:, None, None, :]
    elif kind == "random":
        p = draw(st.floats(0.0, 1.0))
        per_head = draw(st.booleans())
        shape = (batch, heads if per_head else 1, tq, tk)
        mask = torch.rand(shape, generator=g) < p
    causal = draw(st.booleans())
    bias = alibi_bias(alibi_slopes(heads), tq, tk, offset=tk - tq) if draw(st.booleans()) else None
    return q, k, v, dict(mask=mask, causal=causal, bias=bias)


def visible(q, k, mask, causal):
    """(B, H or 1, Tq, Tk) bool: which keys each query may see."""
    tq, tk = q.shape[-2], k.shape[-2]
    allowed = torch.ones(1, 1, tq, tk, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & mask
    if causal:
        allowed = allowed & (torch.arange(tk)[None, :] <= torch.arange(tq)[:, None] + tk - tq)
    return allowed


@FAST
@given(attention_case())
def test_attention_paths_agree(case):
    q, k, v, kwargs = case
    outputs, grads = [], []
    for impl in ("math", "sdpa"):
        qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
        out, _ = scaled_dot_product_attention(qq, kk, vv, impl=impl, **kwargs)
        upstream = torch.linspace(-1, 1, out.numel()).view(out.shape)
        (out * upstream).sum().backward()
        outputs.append(out.detach())
        grads.append([t.grad for t in (qq, kk, vv)])
    assert torch.isfinite(outputs[0]).all() and torch.isfinite(outputs[1]).all()
    assert (outputs[0] - outputs[1]).abs().max() <= TOL
    for gm, gs in zip(*grads):
        assert torch.isfinite(gm).all() and torch.isfinite(gs).all()
        assert (gm - gs).abs().max() <= TOL * max(1.0, float(gm.abs().max()))
    empty = ~visible(q, k, kwargs["mask"], kwargs["causal"]).any(-1)  # rows that see no key
    empty = empty.expand(outputs[0].shape[:-1])
    assert (outputs[0][empty] == 0).all() and (outputs[1][empty] == 0).all()


@FAST
@given(attention_case())
def test_attention_weights_are_distributions_over_visible_keys(case):
    q, k, v, kwargs = case
    out, weights = scaled_dot_product_attention(q, k, v, need_weights=True, **kwargs)
    assert weights.shape == q.shape[:-1] + (k.shape[-2],)
    allowed = visible(q, k, kwargs["mask"], kwargs["causal"]).expand(weights.shape)
    assert (weights[~allowed] == 0).all()
    assert (weights >= 0).all()
    sums = weights.sum(-1)
    nonempty = allowed.any(-1)
    assert torch.allclose(sums[nonempty], torch.ones_like(sums[nonempty]), atol=1e-5)
    assert (sums[~nonempty] == 0).all()
    assert (out - weights @ v).abs().max() <= TOL


# -- models ----------------------------------------------------------------------------------------

V = 17


def tiny(arch: str, positional: str, norm_position: str, heads: int, head_size: int, seed: int):
    config = ModelConfig(
        arch=arch, vocab_size=V, d_model=head_size * heads, n_heads=heads, n_layers=2, d_ff=16, max_positions=16,
        dropout=0.0, positional=positional, norm_position=norm_position, pad_id=0,
        type_vocab_size=2 if arch == "encoder" else 0,
    )
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


model_params = dict(
    positional=st.sampled_from(POSITIONALS),
    norm_position=st.sampled_from(["pre", "post"]),
    heads=st.sampled_from([1, 2, 3]),
    head_size=st.sampled_from([2, 4, 6]),
    seed=st.integers(0, 1000),
)


@MODELS
@given(
    arch=st.sampled_from(["decoder", "encoder-decoder"]),
    length=st.integers(2, 9),
    cut=st.data(),
    **model_params,
)
def test_decoders_are_causal(arch, length, cut, positional, norm_position, heads, head_size, seed):
    model = tiny(arch, positional, norm_position, heads, head_size, seed)
    t = cut.draw(st.integers(0, length - 2))
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (2, length), generator=g)
    changed = tokens.clone()
    changed[:, t + 1 :] = torch.randint(1, V, (2, length - t - 1), generator=g)
    if arch == "decoder":
        a, b = model(tokens), model(changed)
    else:
        src = torch.randint(1, V, (2, 5), generator=g)
        a, b = model(src, tokens), model(src, changed)
    assert (a[:, : t + 1] - b[:, : t + 1]).abs().max() <= TOL


@MODELS
@given(
    arch=st.sampled_from(["decoder", "encoder", "encoder-decoder"]),
    lengths=st.lists(st.integers(1, 8), min_size=1, max_size=4),
    left=st.booleans(),
    **model_params,
)
def test_padding_invariance(arch, lengths, left, positional, norm_position, heads, head_size, seed):
    model = tiny(arch, positional, norm_position, heads, head_size, seed)
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(1, V, (n,), generator=g) for n in lengths]
    width = max(lengths)
    batch = torch.randint(1, V, (len(seqs), width), generator=g)  # garbage in the padding
    mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    left = left and arch == "decoder"  # left padding is for decoder prompts
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        batch[i, span], mask[i, span] = s, True
    if arch == "encoder-decoder":  # padded sources and padded targets
        tgt_lengths = torch.randint(1, 6, (len(seqs),), generator=g)
        tgt = torch.randint(1, V, (len(seqs), int(tgt_lengths.max())), generator=g)
        tgt_mask = torch.arange(tgt.shape[1])[None, :] < tgt_lengths[:, None]
        out = model(batch, tgt, src_padding_mask=mask, tgt_padding_mask=tgt_mask)
        for i, s in enumerate(seqs):
            n = int(tgt_lengths[i])
            assert (out[i, :n] - model(s[None], tgt[i : i + 1, :n])[0]).abs().max() <= TOL
        return
    out = model(batch, attention_mask=mask)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        assert (out[i, span] - model(s[None])[0]).abs().max() <= TOL


@MODELS
@given(
    arch=st.sampled_from(["decoder", "encoder-decoder"]),
    chunks=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    capacity=st.integers(1, 16),
    **model_params,
)
def test_cache_matches_full_forward_for_any_chunking(arch, chunks, capacity, positional, norm_position, heads, head_size, seed):
    model = tiny(arch, positional, norm_position, heads, head_size, seed)
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (2, sum(chunks)), generator=g)
    cache = model.new_cache(capacity)
    outs, start = [], 0
    if arch == "decoder":
        full = model(tokens)
        for n in chunks:
            outs.append(model.decode_step(tokens[:, start : start + n], cache))
            start += n
    else:
        src = torch.randint(1, V, (2, 5), generator=g)
        src_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
        full = model(src, tokens, src_padding_mask=src_mask)
        memory = model.encode(src, src_mask)
        for n in chunks:
            outs.append(model.decode_step(tokens[:, start : start + n], memory if start == 0 else None, cache,
                                          src_padding_mask=src_mask))
            start += n
    assert (torch.cat(outs, dim=1) - full).abs().max() <= TOL


# -- closed-form parameter count -------------------------------------------------------------------


@FAST
@given(
    arch=st.sampled_from(["decoder", "encoder", "encoder-decoder"]),
    heads=st.sampled_from([1, 2, 4]),
    head_size=st.sampled_from([2, 4]),
    d_ff=st.integers(1, 40),
    n_layers=st.integers(1, 3),
    extra_decoder_layers=st.integers(0, 2),
    vocab=st.integers(5, 60),
    separate_target_vocab=st.booleans(),
    positional=st.sampled_from(POSITIONALS),
    activation=st.sampled_from(["relu", "gelu", "gelu_tanh", "silu", "swiglu"]),
    norm=st.sampled_from(["layernorm", "rmsnorm"]),
    norm_position=st.sampled_from(["pre", "post"]),
    final_norm=st.sampled_from([None, True, False]),
    bias=st.booleans(),
    tie=st.booleans(),
    share=st.booleans(),
    output_bias=st.booleans(),
    embedding_norm=st.booleans(),
    types=st.integers(0, 3),
)
def test_closed_form_parameter_count_matches_built_model(
    arch, heads, head_size, d_ff, n_layers, extra_decoder_layers, vocab, separate_target_vocab, positional,
    activation, norm, norm_position, final_norm, bias, tie, share, output_bias, embedding_norm, types,
):
    seq2seq = arch == "encoder-decoder"
    config = ModelConfig(
        arch=arch, vocab_size=vocab, d_model=heads * head_size, n_heads=heads, n_layers=n_layers,
        n_decoder_layers=n_layers + extra_decoder_layers if seq2seq else None,
        target_vocab_size=vocab + 3 if seq2seq and separate_target_vocab and not share else None,
        d_ff=d_ff, max_positions=11, positional=positional, activation=activation, norm=norm,
        norm_position=norm_position, final_norm=final_norm, bias=bias, tie_embeddings=tie,
        share_embeddings=share and seq2seq, output_bias=output_bias, embedding_norm=embedding_norm,
        type_vocab_size=types if arch == "encoder" else 0, pad_id=0,
    )
    with torch.device("meta"):
        model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == closed_form_parameter_count(config)
