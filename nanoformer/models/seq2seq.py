"""The encoder-decoder Transformer of the paper, for translation ("나는 학교에 간다" → "I go to school").

The encoder reads the whole source sentence at once; the decoder writes the target one token at a
time, attending causally to what it has written and, through cross-attention, to the encoder's
states (queries from the decoder, keys and values from the encoder). In training, teacher forcing
feeds the whole shifted target at once, so every position trains in parallel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.layers.blocks import Decoder, Encoder, StackOutput
from nanoformer.layers.cache import KVCache
from nanoformer.layers.embedding import Embeddings
from nanoformer.layers.masks import padding_mask
from nanoformer.models.init import init_weights
from nanoformer.models.inputs import check_ids, check_length, check_mask, default_position_ids


class Seq2SeqTransformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "encoder-decoder":
            raise ValueError(f"Seq2SeqTransformer needs arch = 'encoder-decoder', got {config.arch!r}")
        self.config = config
        self.src_embeddings = Embeddings.from_config(config, config.vocab_size)
        self.tgt_embeddings = Embeddings.from_config(config, config.tgt_vocab_size)
        if config.share_embeddings:
            self.tgt_embeddings.tokens = self.src_embeddings.tokens
        self.encoder = Encoder(config, config.encoder_layers)
        self.decoder = Decoder(config, config.decoder_layers, cross=True)
        self.lm_head = nn.Linear(config.d_model, config.tgt_vocab_size, bias=config.output_bias)
        if config.tie_embeddings:
            self.lm_head.weight = self.tgt_embeddings.tokens.weight
        init_weights(self, config, config.encoder_layers + config.decoder_layers)

    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced logits (B, T_tgt, V) for target inputs tgt_ids (B, T_tgt).

        Masks follow Hugging Face's convention: (B, T), 1/True = real token.
        """
        memory = self.encode(src_ids, src_padding_mask)
        return self.decode(tgt_ids, memory, src_padding_mask, tgt_padding_mask)

    def run_encoder(self, src_ids: Tensor, src_padding_mask: Tensor | None = None, need_weights: bool = False) -> StackOutput:
        check_ids("src_ids", src_ids, self.config.vocab_size)
        check_length("src_ids", src_ids.shape[1], 0, self.config.max_positions)
        check_mask("src_padding_mask", src_padding_mask, src_ids)
        position_ids = default_position_ids(src_ids.shape[1], 0, None, src_ids.device)
        x = self.src_embeddings(src_ids, position_ids)
        mask = padding_mask(src_padding_mask) if src_padding_mask is not None else None
        return self.encoder(x, position_ids, mask=mask, need_weights=need_weights)

    def encode(self, src_ids: Tensor, src_padding_mask: Tensor | None = None) -> Tensor:
        """Encoder states (B, S, D): the memory the decoder's cross-attention reads."""
        return self.run_encoder(src_ids, src_padding_mask).hidden

    def run_decoder(
        self,
        tgt_ids: Tensor,
        memory: Tensor | None,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
        position_ids: Tensor | None = None,
        need_weights: bool = False,
    ) -> StackOutput:
        """Decoder states for new target tokens after `cache.length` cached ones.

        With a cache, `memory` is needed on the first call only (its keys/values are cached), and
        tgt_padding_mask covers the cached and new tokens: (B, cached + T).
        """
        offset = cache.length if cache is not None else 0
        check_ids("tgt_ids", tgt_ids, self.config.tgt_vocab_size)
        check_length("tgt_ids", tgt_ids.shape[1], offset, self.config.max_positions)
        check_mask("tgt_padding_mask", tgt_padding_mask, tgt_ids, offset + tgt_ids.shape[1])
        if memory is not None:
            check_mask("src_padding_mask", src_padding_mask, memory[..., 0])
        if position_ids is None:
            position_ids = default_position_ids(tgt_ids.shape[1], offset, tgt_padding_mask, tgt_ids.device)
        x = self.tgt_embeddings(tgt_ids, position_ids)
        return self.decoder(
            x,
            position_ids,
            self_mask=padding_mask(tgt_padding_mask) if tgt_padding_mask is not None else None,
            memory=memory,
            memory_mask=padding_mask(src_padding_mask) if src_padding_mask is not None else None,
            cache=cache,
            need_weights=need_weights,
        )

    def decode(
        self,
        tgt_ids: Tensor,
        memory: Tensor | None,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Logits (B, T, V) for target tokens given the encoder memory."""
        return self.lm_head(self.run_decoder(tgt_ids, memory, src_padding_mask, tgt_padding_mask, cache).hidden)

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty decoder cache with room for `capacity` target positions (default: max_positions)."""
        return self.decoder.new_cache(capacity or self.config.max_positions)

    @torch.no_grad()
    def decode_step(
        self,
        tgt_ids: Tensor,
        memory: Tensor | None,
        cache: KVCache,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Logits for the new target tokens, reading and extending the cache (cross K/V computed once)."""
        return self.decode(tgt_ids, memory, src_padding_mask, tgt_padding_mask, cache)

    def generate(
        self,
        src_ids: Tensor,
        max_new_tokens: int = 64,
        src_padding_mask: Tensor | None = None,
        **options,
    ) -> Tensor:
        """Translate src_ids (B, S): target ids (B, T_out), starting with the start token."""
        from nanoformer.generation.seq2seq import greedy_decode  # the generation floor sits above the models

        if options:
            raise ValueError(f"unsupported generate options {sorted(options)}")
        return greedy_decode(self, src_ids, src_padding_mask, max_new_tokens)
