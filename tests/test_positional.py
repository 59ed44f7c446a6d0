"""Positional encodings against their papers' formulas, computed independently here."""

from __future__ import annotations

import math

import pytest
import torch

from nanoformer.layers.positional import (
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    sinusoidal_table,
)


def paper_sinusoid(n_positions: int, d: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), one entry at a time."""
    table = torch.empty(n_positions, d, dtype=torch.float64)
    for pos in range(n_positions):
        for dim in range(d):
            two_i = dim - dim % 2
            angle = pos / 10000 ** (two_i / d)
            table[pos, dim] = math.sin(angle) if dim % 2 == 0 else math.cos(angle)
    return table


def marian_sinusoid(n_positions: int, d: int) -> torch.Tensor:
    """Marian's layout: the ceil(d/2) sine columns first, then the floor(d/2) cosine columns."""
    n_sin = (d + 1) // 2
    table = torch.empty(n_positions, d, dtype=torch.float64)
    for pos in range(n_positions):
        for j in range(n_sin):
            table[pos, j] = math.sin(pos / 10000 ** (2 * j / d))
        for j in range(d // 2):
            table[pos, n_sin + j] = math.cos(pos / 10000 ** (2 * j / d))
    return table


@pytest.mark.parametrize("d", [16, 7, 2])
def test_sinusoidal_interleaved_is_the_paper_formula(d):
    ours = sinusoidal_table(50, d)
    assert ours.shape == (50, d) and ours.dtype == torch.float32
    assert (ours.double() - paper_sinusoid(50, d)).abs().max() <= 1e-6


@pytest.mark.parametrize("d", [16, 7])
def test_sinusoidal_half_is_marian_layout(d):
    ours = sinusoidal_table(40, d, layout="half")
    assert (ours.double() - marian_sinusoid(40, d)).abs().max() <= 1e-6
    # the same waves as the interleaved layout, only the columns are permuted
    interleaved = sinusoidal_table(40, d)
    order = list(range(0, d, 2)) + list(range(1, d, 2))
    assert torch.equal(ours, interleaved[:, order])


def test_sinusoidal_half_matches_hugging_face_marian():
    marian = pytest.importorskip("transformers.models.marian.modeling_marian")
    module = marian.MarianSinusoidalPositionalEmbedding(30, 12)
    if hasattr(module, "create_weight"):  # recent versions build the table on demand
        hf = module.create_weight()
    else:
        hf = module.weight.detach()
    ours = sinusoidal_table(30, 12, layout="half")
    assert (ours - hf).abs().max() <= 1e-6


def test_sinusoidal_rejects_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        sinusoidal_table(4, 4, layout="spiral")


def test_sinusoidal_module_looks_up_positions():
    module = SinusoidalPositions(20, 8)
    assert list(module.parameters()) == []
    ids = torch.tensor([[0, 3, 19], [5, 5, 1]])
    assert torch.equal(module(ids), sinusoidal_table(20, 8)[ids])
    assert "table" not in module.state_dict()  # rebuilt, not stored in checkpoints


def test_learned_positions_are_trainable():
    module = LearnedPositions(10, 4)
    assert module.weight.shape == (10, 4) and module.weight.requires_grad


# -- RoPE ------------------------------------------------------------------------------------------


def test_rope_position_zero_is_identity_and_norms_are_kept():
    torch.manual_seed(0)
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 3, 6, 8)
    cos, sin = rope(torch.arange(6).unsqueeze(0))
    assert cos.shape == (1, 1, 6, 8)
    rotated = apply_rotary(x, cos, sin)
    assert torch.allclose(rotated[:, :, 0], x[:, :, 0])
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    assert (rotated[:, :, 1:] - x[:, :, 1:]).abs().max() > 1e-2


def test_rope_matches_complex_rotation():
    """Pair (i, i + d/2) is the complex number x_i + j x_{i+d/2}, turned by pos · base^(-2i/d)."""
    torch.manual_seed(1)
    d, base = 8, 100.0
    rope = RotaryEmbedding(d, base=base)
    x = torch.randn(1, 1, 5, d, dtype=torch.float64)
    cos, sin = rope(torch.arange(5).unsqueeze(0))
    ours = apply_rotary(x, cos.double(), sin.double())
    half = d // 2
    z = torch.complex(x[..., :half], x[..., half:])
    freqs = torch.tensor([base ** (-2 * i / d) for i in range(half)], dtype=torch.float64)
    angles = torch.arange(5, dtype=torch.float64).view(5, 1) * freqs
    turned = z * torch.polar(torch.ones_like(angles), angles)
    expected = torch.cat([turned.real, turned.imag], dim=-1)
    assert (ours - expected).abs().max() <= 1e-5


def test_rope_dot_product_depends_only_on_offset():
    torch.manual_seed(2)
    d = 16
    rope = RotaryEmbedding(d)
    q = torch.randn(d)
    k = torch.randn(d)

    def score(m: int, n: int) -> float:
        cos, sin = rope(torch.tensor([[m, n]]))
        qm = apply_rotary(q.view(1, 1, 1, d), cos[:, :, :1], sin[:, :, :1])
        kn = apply_rotary(k.view(1, 1, 1, d), cos[:, :, 1:], sin[:, :, 1:])
        return float((qm * kn).sum())

    for m, n, shift in [(3, 1, 7), (0, 5, 11), (9, 9, 20)]:
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-4)
    assert abs(score(3, 1) - score(1, 3)) > 1e-3  # but it does depend on the offset


def test_rope_per_batch_positions():
    rope = RotaryEmbedding(4)
    cos, sin = rope(torch.tensor([[0, 1, 2], [5, 6, 7]]))
    assert cos.shape == (2, 1, 3, 4)
    single_cos, _ = rope(torch.tensor([[5, 6, 7]]))
    assert torch.equal(cos[1:], single_cos)


def test_rope_needs_even_head_size():
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(5)


# -- ALiBi -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_heads, expected",
    [
        (8, [2.0**-k for k in range(1, 9)]),
        (4, [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]),
        (1, [2.0**-8]),
        # not a power of two: the 4-head slopes, then every other slope of the 8-head sequence
        (6, [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]),
        # 12 heads: the 8-head slopes, then slopes 1, 3, 5, 7 of the 16-head sequence 2^(-k/2)
        (12, [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]),
    ],
)
def test_alibi_slopes_are_the_paper_sequence(n_heads, expected):
    slopes = alibi_slopes(n_heads)
    assert slopes.shape == (n_heads,)
    assert torch.allclose(slopes.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)


def test_alibi_bias_is_minus_slope_times_distance():
    slopes = alibi_slopes(4)
    bias = alibi_bias(slopes, 2, 5, offset=3)
    assert bias.shape == (1, 4, 2, 5)
    for h in range(4):
        for i in range(2):
            for j in range(5):
                assert float(bias[0, h, i, j]) == pytest.approx(-float(slopes[h]) * abs(3 + i - j), rel=1e-6)
    full = alibi_bias(slopes, 5, 5)
    assert torch.equal(bias, full[:, :, 3:])  # cached queries see the same bias as the full forward
