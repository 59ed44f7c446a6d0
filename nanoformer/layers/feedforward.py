"""Position-wise feed-forward network: the same two-layer MLP applied to every position.

FFN(x) = W2 · act(W1 · x + b1) + b2, with d_ff usually 4 × d_model. Attention mixes information
across positions; the FFN then transforms each position on its own. SwiGLU (PaLM, LLaMA) gates the
hidden layer: W2 · (SiLU(W_gate · x) ⊙ W1 · x).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.config import ACTIVATIONS
from nanoformer.kernels.dropout import Dropout  # nn.Dropout, fast on the CPU: kernels/dropout.py
from nanoformer.kernels.gemm import Linear  # nn.Linear on this CPU's fast GEMM: kernels/gemm.py


def activation_fn(name: str):
    """The element-wise non-linearity called `name` ("swiglu" gates with SiLU)."""
    if name == "relu":
        return F.relu
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name in ("silu", "swiglu"):
        return F.silu
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


class FeedForward(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "relu",
        bias: bool = True,
        activation_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.act = activation_fn(activation)
        self.up = Linear(d_model, d_ff, bias=bias)
        self.gate = Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None
        self.down = Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(activation_dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is None:
            hidden = self.act(self.up(x))
        else:
            hidden = self.act(self.gate(x)) * self.up(x)
        if self.training:
            hidden = self.dropout(hidden)
        return self.down(hidden)
