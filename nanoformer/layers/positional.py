"""Positional information: attention alone cannot tell "나는 학교에 간다" from "학교에 나는 간다".

Absolute encodings are added to the token embeddings:
- sinusoidal (the paper): PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(same);
  each pair of dimensions is a wave of its own period, so every position gets a unique pattern.
  Marian stores the same waves "half-split": all sines first, then all cosines.
- learned: one trained vector per position (GPT-2, BERT).
Relative methods act inside attention instead:
- RoPE rotates each (query, key) pair of dimensions by an angle proportional to the position, so
  q·k depends only on the offset between the two positions;
- ALiBi adds -slope_h · |i - j| to the scores, with one geometric slope per head.
All take explicit positions, so they work unchanged with a KV cache (positions start at its offset).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nanoformer.config import SINUSOIDAL_LAYOUTS


def sinusoidal_table(n_positions: int, d_model: int, layout: str = "interleaved") -> Tensor:
    """The (n_positions, d_model) table of sines and cosines, exactly the paper's formula."""
    if layout not in SINUSOIDAL_LAYOUTS:
        raise ValueError(f"sinusoidal layout must be one of {SINUSOIDAL_LAYOUTS}, got {layout!r}")
    position = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angles = position / torch.pow(10000.0, two_i / d_model)  # (n_positions, ceil(d/2))
    table = torch.zeros(n_positions, d_model, dtype=torch.float64)
    n_cos = d_model // 2
    if layout == "interleaved":
        table[:, 0::2] = torch.sin(angles)
        table[:, 1::2] = torch.cos(angles[:, :n_cos])
    else:
        n_sin = angles.shape[1]
        table[:, :n_sin] = torch.sin(angles)
        table[:, n_sin:] = torch.cos(angles[:, :n_cos])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal encodings, looked up by position id (no parameters)."""

    def __init__(self, max_positions: int, d_model: int, layout: str = "interleaved") -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_positions, d_model, layout), persistent=False)

    def forward(self, position_ids: Tensor) -> Tensor:
        return self.table[position_ids]


class LearnedPositions(nn.Embedding):
    """One trained vector per position, as GPT-2 and BERT do."""

    def __init__(self, max_positions: int, d_model: int) -> None:
        super().__init__(max_positions, d_model)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, d_head) by the angles whose cos/sin are (B or 1, 1, T, d_head)."""
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """RoPE angles: dimension pair i of position p turns by p · base^(-2i/d_head).

    Uses the half-split pairing (dimension i with i + d_head/2), as GPT-NeoX and LLaMA do.
    """

    def __init__(self, d_head: int, base: float = 10000.0) -> None:
        super().__init__()
        if d_head % 2 != 0:
            raise ValueError(f"RoPE needs an even head dimension, got d_head = {d_head}")
        inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2, dtype=torch.float32) / d_head))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """position_ids (B or 1, T) -> (cos, sin), each (B or 1, 1, T, d_head)."""
        angles = position_ids.float().unsqueeze(-1) * self.inv_freq  # (B, T, d_head/2)
        angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)
        return angles.cos(), angles.sin()


def alibi_slopes(n_heads: int) -> Tensor:
    """Per-head slopes: the geometric sequence 2^(-8/n), 2^(-16/n), ... of the ALiBi paper.

    For a head count that is not a power of two, the paper takes the slopes of the closest power
    of two below, then every other slope of the next power of two.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_two(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: Tensor, query_len: int, key_len: int, offset: int = 0) -> Tensor:
    """(1, H, Tq, Tk) bias -slope · |i - j| for query positions offset.. and key positions 0..

    Symmetric, so the same bias serves an encoder; a decoder's causal mask hides the future half.
    """
    q_pos = torch.arange(query_len, device=slopes.device).unsqueeze(1) + offset
    k_pos = torch.arange(key_len, device=slopes.device).unsqueeze(0)
    distance = (q_pos - k_pos).abs().float()
    return (-slopes.view(-1, 1, 1) * distance).unsqueeze(0)
