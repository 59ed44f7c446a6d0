"""BERT-style encoder: every position attends to the whole sentence, both sides at once.

Trained by masked-language modelling ("나는 [MASK]에 갔다": predict the hidden word from its left
and right context). The MLM head is BERT's: dense + activation + LayerNorm, then a projection
onto the vocabulary tied to the token embeddings, plus a bias.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.layers.blocks import Encoder, StackOutput
from nanoformer.layers.embedding import Embeddings
from nanoformer.layers.feedforward import activation_fn
from nanoformer.layers.masks import padding_mask
from nanoformer.layers.norms import make_norm
from nanoformer.models.init import init_weights
from nanoformer.models.inputs import check_ids, check_length, check_mask, check_same_shape, default_position_ids


class MaskedLMHead(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.act = activation_fn("gelu" if config.activation == "swiglu" else config.activation)
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.decoder = nn.Linear(config.d_model, config.vocab_size, bias=config.output_bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))


class EncoderModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "encoder":
            raise ValueError(f"EncoderModel needs arch = 'encoder', got {config.arch!r}")
        self.config = config
        self.embeddings = Embeddings.from_config(config, config.vocab_size, config.type_vocab_size)
        self.encoder = Encoder(config, config.n_layers)
        self.mlm_head = MaskedLMHead(config)
        if config.tie_embeddings:
            self.mlm_head.decoder.weight = self.embeddings.tokens.weight
        init_weights(self, config, config.n_layers)

    def run(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        need_weights: bool = False,
    ) -> StackOutput:
        check_ids("input_ids", input_ids, self.config.vocab_size)
        check_length("input_ids", input_ids.shape[1], 0, self.config.max_positions)
        check_mask("attention_mask", attention_mask, input_ids)
        check_same_shape("token_type_ids", token_type_ids, input_ids)
        if token_type_ids is not None:
            check_ids("token_type_ids", token_type_ids, max(self.config.type_vocab_size, 1))
        position_ids = default_position_ids(input_ids.shape[1], 0, None, input_ids.device)
        x = self.embeddings(input_ids, position_ids, token_type_ids)
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        return self.encoder(x, position_ids, mask=mask, need_weights=need_weights)

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Contextual hidden states (B, T, D)."""
        return self.run(input_ids, attention_mask, token_type_ids).hidden

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Masked-LM logits (B, T, V)."""
        return self.mlm_head(self.encode(input_ids, attention_mask, token_type_ids))

    def embed(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, normalize: bool = True
    ) -> Tensor:
        """Sentence vectors (B, D): the mean of the real tokens' hidden states, L2-normalised."""
        hidden = self.encode(input_ids, attention_mask)
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1) if normalize else pooled
