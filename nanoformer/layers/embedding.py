"""Input embeddings: token vectors plus (absolute) positions and segments.

x = E[token] · (√d_model if scaled) + P[position] (+ S[segment]), then an optional LayerNorm
(BERT) and dropout. Relative positions (RoPE, ALiBi) are applied inside attention instead, so
for them this adds nothing.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.kernels.dropout import Dropout  # nn.Dropout, fast on the CPU: kernels/dropout.py
from nanoformer.layers.norms import make_norm
from nanoformer.layers.positional import LearnedPositions, SinusoidalPositions


class Embeddings(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        *,
        positional: str,
        max_positions: int,
        sinusoidal_layout: str = "interleaved",
        type_vocab_size: int = 0,
        scale: bool = False,
        norm: str | None = None,
        norm_eps: float = 1e-5,
        norm_bias: bool = True,
        dropout: float = 0.0,
        padding_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        self.scale = math.sqrt(d_model) if scale else 1.0
        self.positions: nn.Module | None = None
        if positional == "learned":
            self.positions = LearnedPositions(max_positions, d_model)
        elif positional == "sinusoidal":
            self.positions = SinusoidalPositions(max_positions, d_model, sinusoidal_layout)
        self.token_types = nn.Embedding(type_vocab_size, d_model) if type_vocab_size else None
        self.norm = make_norm(norm, d_model, norm_eps, norm_bias) if norm else None
        self.dropout = Dropout(dropout)

    @classmethod
    def from_config(cls, config: ModelConfig, vocab_size: int, type_vocab_size: int = 0) -> "Embeddings":
        return cls(
            vocab_size,
            config.d_model,
            positional=config.positional,
            max_positions=config.max_positions,
            sinusoidal_layout=config.sinusoidal_layout,
            type_vocab_size=type_vocab_size,
            scale=config.scale_embeddings,
            norm=config.norm if config.embedding_norm else None,
            norm_eps=config.norm_eps,
            norm_bias=config.bias,
            dropout=config.dropout,
            padding_idx=config.pad_id if config.pad_id is not None and config.pad_id < vocab_size else None,
        )

    def forward(self, input_ids: Tensor, position_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        x = self.tokens(input_ids)
        if self.scale != 1.0:
            x = x * self.scale
        if self.positions is not None:
            x = x + self.positions(position_ids)
        if self.token_types is not None:
            x = x + (self.token_types(token_type_ids) if token_type_ids is not None else self.token_types.weight[0])
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x) if self.training else x
