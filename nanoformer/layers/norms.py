"""Normalisation: LayerNorm (the paper, BERT, GPT-2) and RMSNorm (T5, LLaMA).

LayerNorm re-centres and re-scales each position's vector to zero mean and unit variance, then
applies a learned gain and bias; it keeps activations in a steady range layer after layer.
RMSNorm skips the centring (and the bias): cheaper, and works as well in practice.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nanoformer.config import NORMS


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        variance = x.float().pow(2).mean(dim=-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).type_as(x) * self.weight


def make_norm(kind: str, d_model: int, eps: float, bias: bool = True) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(d_model, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")
