"""Positional encodings as pictures, drawn from the library's own tables.

- sinusoidal (the paper): the (position × dimension) table of `sinusoidal_table`, a few of its
  dimensions as waves (each pair of dimensions has its own period, from 2π up to 2π·10000), and
  the dot product of every two positions' vectors, which depends on their distance;
- RoPE: the rotation each pair of dimensions of a head gets at each position (`RotaryEmbedding`),
  a few pairs as waves, and the score between one query and one key placed at every two
  positions (`apply_rotary`), constant along each diagonal: it depends only on the offset.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from nanoformer.errors import UserError
from nanoformer.layers.positional import RotaryEmbedding, apply_rotary, sinusoidal_table
from nanoformer.viz.plotting import pyplot, save

KINDS = ("sinusoidal", "rope")


def _check(d_model: int, length: int) -> None:
    if d_model < 4 or d_model % 2:
        raise UserError(f"--d-model {d_model}: give an even number of dimensions, at least 4")
    if not 2 <= length <= 10000:
        raise UserError(f"--length {length}: give between 2 and 10000 positions")


def _curve_dims(half: int, length: int, base: float = 10000.0) -> list[int]:
    """Dimension pairs whose waves read well over `length` positions: periods near length/8,
    length/3, length and 4·length (pair i has period 2π·base^(i/half))."""
    periods = [2 * math.pi * base ** (i / half) for i in range(half)]
    chosen = []
    for goal in (length / 8, length / 3, length, 4 * length):
        best = min(range(half), key=lambda i: abs(math.log(periods[i] / goal)))
        if best not in chosen:
            chosen.append(best)
    return sorted(chosen)


def plot_sinusoidal(d_model: int, length: int, path: str | Path) -> Path:
    _check(d_model, length)
    plt = pyplot()
    table = sinusoidal_table(length, d_model)  # (length, d_model), interleaved sin/cos
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    image = axes[0].imshow(table.numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    axes[0].set_xlabel("dimension")
    axes[0].set_ylabel("position")
    axes[0].set_title(f"sinusoidal table PE[pos, dim] (d_model = {d_model})")
    fig.colorbar(image, ax=axes[0], shrink=0.85)
    positions = torch.arange(length)
    for n, i in enumerate(_curve_dims(d_model // 2, length)):
        period = 2 * math.pi * 10000 ** (2 * i / d_model)
        line, = axes[1].plot(positions, table[:, 2 * i].numpy(), label=f"dim {2 * i}: sin, period {period:,.0f}")
        if n == 0:
            axes[1].plot(positions, table[:, 2 * i + 1].numpy(), "--", color=line.get_color(), lw=1,
                         label=f"dim {2 * i + 1}: its cos partner")
    axes[1].set_xlabel("position")
    axes[1].set_ylabel("value")
    axes[1].set_ylim(-1.1, 1.6)
    axes[1].set_title("a few dimensions: waves of growing period")
    axes[1].legend(fontsize=7, loc="upper right", ncol=2)
    similarity = table @ table.T
    image = axes[2].imshow(similarity.numpy(), cmap="viridis", aspect="auto")
    axes[2].set_xlabel("position")
    axes[2].set_ylabel("position")
    axes[2].set_title("PE[p] · PE[q]: depends on the distance |p − q|")
    fig.colorbar(image, ax=axes[2], shrink=0.85)
    fig.tight_layout()
    return save(fig, path, dpi=85)


def plot_rope(d_head: int, length: int, path: str | Path, base: float = 10000.0, seed: int = 0) -> Path:
    _check(d_head, length)
    plt = pyplot()
    rotary = RotaryEmbedding(d_head, base)
    positions = torch.arange(length).unsqueeze(0)
    cos, sin = rotary(positions)  # (1, 1, length, d_head), the two halves repeat
    half = d_head // 2
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    image = axes[0].imshow(cos[0, 0, :, :half].numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto",
                           interpolation="nearest")
    axes[0].set_xlabel("dimension pair i (dims i and i + d_head/2)")
    axes[0].set_ylabel("position p")
    axes[0].set_title(f"RoPE: cos of the rotation angle p·θ_i (d_head = {d_head})")
    fig.colorbar(image, ax=axes[0], shrink=0.85)
    for i in _curve_dims(half, length, base):
        period = 2 * math.pi * base ** (2 * i / d_head)
        axes[1].plot(positions[0], cos[0, 0, :, i].numpy(), label=f"pair {i}: period {period:,.0f}")
    axes[1].set_xlabel("position p")
    axes[1].set_ylabel("cos of the angle")
    axes[1].set_ylim(-1.1, 1.6)
    axes[1].set_title("a few pairs: each turns at its own speed")
    axes[1].legend(fontsize=7, loc="upper right", ncol=2)
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(d_head, generator=generator).expand(1, 1, length, d_head)
    k = torch.randn(d_head, generator=generator).expand(1, 1, length, d_head)
    scores = apply_rotary(q, cos, sin)[0, 0] @ apply_rotary(k, cos, sin)[0, 0].T  # (query pos, key pos)
    image = axes[2].imshow(scores.numpy(), cmap="viridis", aspect="auto")
    axes[2].set_xlabel("key position n")
    axes[2].set_ylabel("query position m")
    axes[2].set_title("q·k after rotation: depends only on m − n")
    fig.colorbar(image, ax=axes[2], shrink=0.85)
    fig.tight_layout()
    return save(fig, path, dpi=85)


def plot_positions(kind: str, d_model: int, length: int, path: str | Path) -> Path:
    if kind not in KINDS:
        raise UserError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    return (plot_sinusoidal if kind == "sinusoidal" else plot_rope)(d_model, length, path)
