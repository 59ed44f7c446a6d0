"""GPT-style decoder-only language model: predict the next token from the ones before it.

Token + position embeddings, a stack of masked self-attention layers (no cross-attention), and a
linear head over the vocabulary, usually tied to the token embeddings. The causal mask lets all
positions train in parallel while each one only sees its past.
"""

from __future__ import annotations

import contextlib
import torch
from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.layers.blocks import Decoder, StackOutput
from nanoformer.layers.cache import KVCache
from nanoformer.layers.embedding import Embeddings
from nanoformer.kernels.gemm import Linear  # nn.Linear on this CPU's fast GEMM: kernels/gemm.py
from nanoformer.layers.masks import padding_mask
from nanoformer.models.init import init_weights
from nanoformer.models.inputs import check_ids, check_length, check_mask, default_position_ids
from nanoformer.layers.losses import head_loss


class DecoderModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "decoder":
            raise ValueError(f"DecoderModel needs arch = 'decoder', got {config.arch!r}")
        self.config = config
        self.embeddings = Embeddings.from_config(config, config.vocab_size)
        self.decoder = Decoder(config, config.n_layers, cross=False)
        self.lm_head = Linear(config.d_model, config.vocab_size, bias=config.output_bias)
        if config.tie_embeddings:
            self.lm_head.weight = self.embeddings.tokens.weight
        init_weights(self, config, config.n_layers)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> Tensor:
        """input_ids (B, T) -> next-token logits (B, T, V). attention_mask: (B, T), 1 = real token.

        With targets (B, T), the token each position should predict (the next one; -100 = not
        counted; unlike Hugging Face's `labels`, not shifted here), returns the mean
        cross-entropy instead, computed without materialising the logits (`head_loss`).
        """
        hidden = self.run(input_ids, attention_mask, position_ids).hidden
        if targets is None:
            return self.lm_head(hidden)
        return head_loss(self.lm_head, hidden, targets)

    def run(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> StackOutput:
        """The decoder stack's output for new tokens after `cache.length` cached ones.

        With a cache, attention_mask covers the cached and the new tokens: (B, cached + T).
        """
        offset = cache.length if cache is not None else 0
        check_ids("input_ids", input_ids, self.config.vocab_size)
        check_length("input_ids", input_ids.shape[1], offset, self.config.max_positions)
        check_mask("attention_mask", attention_mask, input_ids, offset + input_ids.shape[1])
        if position_ids is None:
            position_ids = default_position_ids(input_ids.shape[1], offset, attention_mask, input_ids.device)
        x = self.embeddings(input_ids, position_ids)
        mask = padding_mask(attention_mask) if attention_mask is not None else None
        return self.decoder(x, position_ids, self_mask=mask, cache=cache, need_weights=need_weights)

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache with room for `capacity` positions (default: max_positions)."""
        return self.decoder.new_cache(capacity or self.config.max_positions)

    def decoding(self) -> contextlib.AbstractContextManager[None]:
        """The block generation loops run in: one-token steps skip the module machinery (`Decoder.decoding`)."""
        return self.decoder.decoding()

    @torch.no_grad()
    def decode_step(
        self,
        input_ids: Tensor,
        cache: KVCache,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Logits (B, T, V) for new tokens (B, T), reading and extending the cache."""
        return self.lm_head(self.run(input_ids, attention_mask, position_ids, cache=cache).hidden)

    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        **options,
    ) -> Tensor:
        """Continue input_ids (B, T) on the KV cache: (B, T + new). See `nanoformer.generation.sampling`."""
        from nanoformer.generation.sampling import generate

        options.setdefault("eos_id", self.config.eos_id)
        options.setdefault("pad_id", self.config.pad_id)
        return generate(self, input_ids, max_new_tokens, do_sample, temperature, top_k, top_p, **options)
