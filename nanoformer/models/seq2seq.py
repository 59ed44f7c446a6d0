"""The encoder-decoder Transformer of the paper, for translation ("나는 학교에 간다" → "I go to school").

The encoder reads the whole source sentence at once; the decoder writes the target one token at a
time, attending causally to what it has written and, through cross-attention, to the encoder's
states (queries from the decoder, keys and values from the encoder). In training, teacher forcing
feeds the whole shifted target at once, so every position trains in parallel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.layers.blocks import Decoder, Encoder, StackOutput
from nanoformer.layers.cache import KVCache
from nanoformer.layers.embedding import Embeddings
from nanoformer.kernels.gemm import Linear  # nn.Linear on this CPU's fast GEMM: kernels/gemm.py
from nanoformer.layers.masks import padding_mask
from nanoformer.models.init import init_weights
from nanoformer.models.inputs import check_ids, check_length, check_mask, default_position_ids
from nanoformer.layers.losses import IGNORE_INDEX, head_loss
from nanoformer.kernels.packing import TokenPacking, through_last  # padding-free training: kernels/packing.py


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
        self.lm_head = Linear(config.d_model, config.tgt_vocab_size, bias=config.output_bias)
        if config.tie_embeddings:
            self.lm_head.weight = self.tgt_embeddings.tokens.weight
        init_weights(self, config, config.encoder_layers + config.decoder_layers)

    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
        targets: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """Teacher-forced logits (B, T_tgt, V) for target inputs tgt_ids (B, T_tgt).

        Masks follow Hugging Face's convention: (B, T), 1/True = real token. With targets
        (B, T_tgt), the token each position should predict (-100 = not counted), returns the mean
        (label-smoothed) cross-entropy instead, computed without materialising the logits.
        """
        memory = self.encode(src_ids, src_padding_mask)
        packing = None
        if targets is not None and self.training and targets.shape == tgt_ids.shape:
            # The loss reads no position in the trailing run of ignored targets (the padding),
            # and causal attention lets no earlier position read them: skip their token-wise work.
            packing = TokenPacking.worth_it(through_last(targets != IGNORE_INDEX))
        hidden = self.run_decoder(tgt_ids, memory, src_padding_mask, tgt_padding_mask, packing=packing).hidden
        if targets is None:
            return self.lm_head(hidden)
        return head_loss(self.lm_head, hidden, targets, label_smoothing)

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
        packing: TokenPacking | None = None,
    ) -> StackOutput:
        """Decoder states for new target tokens after `cache.length` cached ones.

        With a cache, `memory` is needed on the first call only (its keys/values are cached), and
        tgt_padding_mask covers the cached and new tokens: (B, cached + T). packing: see `Decoder`.
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
            packing=packing,
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
    def cache_memory(self, memory: Tensor, cache: KVCache) -> None:
        """Put the cross-attention keys/values of `memory` in `cache`, before any decoding step.

        Steps then need no memory: sentences can join a running search on their first step
        (continuous batching, generation/beam_group.py) without the others passing one.
        """
        for layer, layer_cache in zip(self.decoder.layers, cache.layers):
            layer_cache.cross_kv(memory, layer.cross_attn.memory_kv)

    def decoding(self) -> contextlib.AbstractContextManager[None]:
        """The block generation loops run in: one-token steps skip the module machinery (`Decoder.decoding`)."""
        return self.decoder.decoding()

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
        beam_size: int = 1,
        length_penalty: float = 1.0,
        length_penalty_style: str = "hf",
        num_return_sequences: int = 1,
        max_len_a: float = 0.0,
        max_len_b: float | None = None,
        return_attentions: bool = False,
        *,
        early_stopping: bool | str = False,
        bad_ids: Sequence[int] | None = None,
        force_eos: bool = False,
        return_scores: bool = False,
        attention_layers: str = "last",
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ):
        """Translate src_ids (B, S) (src_padding_mask (B, S), 1 = real token).

        Returns target ids (B, T_out), starting with the start token, pad_id after eos: the best
        hypothesis of each sentence; (B·n, T_out) with num_return_sequences = n, the n best of a
        sentence in consecutive rows, best first. With return_scores or return_attentions, a
        `GenerationOutput(sequences, scores, cross_attentions)` instead.

        beam_size 1 is greedy decoding; more runs beam search (`nanoformer.generation.beam`).
        length_penalty α divides a finished hypothesis' log-prob by length**α ("hf", Hugging
        Face's convention) or ((5 + length) / 6)**α ("gnmt"); length counts generated tokens, eos
        included. early_stopping: False, True or "never", Hugging Face's meanings (see beam.py).
        A sentence generates at most max_new_tokens, and at most floor(max_len_a · source
        length + max_len_b) when max_len_b is given (within max_positions). bad_ids are never
        generated; force_eos makes eos the last token of a sentence that reaches its limit.
        For an opus-mt model imported from Hugging Face, its generation config corresponds to
        bad_ids=[pad_id], force_eos=True, beam_size=4 (or 6), length_penalty=1.0.
        do_sample (with beam_size 1) draws each token instead of taking the most likely one, from
        the distribution scaled by temperature and cut to top_k / top_p (back-translation).
        cross_attentions (return_attentions): per generated token, the cross-attention weights
        over the source, averaged over heads of the last decoder layer (attention_layers="last")
        or of all layers ("all").
        """
        # the generation floor sits above the models
        from nanoformer.generation.beam import (
            GenerationOutput,
            beam_search,
            check_beam_args,
            cross_attention_weights,
            length_penalty_fn,
        )
        from nanoformer.generation.greedy import greedy_decode

        check_beam_args(beam_size, num_return_sequences, early_stopping, self.config.tgt_vocab_size)
        length_penalty_fn(length_penalty_style, length_penalty)  # checks the style
        if attention_layers not in ("last", "all"):
            raise ValueError(f"attention_layers must be 'last' or 'all', got {attention_layers!r}")
        limits = dict(max_len_a=max_len_a, max_len_b=max_len_b, bad_ids=bad_ids, force_eos=force_eos)
        if do_sample and (beam_size != 1 or return_scores):
            raise ValueError("do_sample draws one translation per sentence: use beam_size = 1 and no return_scores")
        scores = None
        if beam_size == 1 and not return_scores:
            sampling = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            sequences = greedy_decode(self, src_ids, src_padding_mask, max_new_tokens, **limits, **sampling)
        else:
            sequences, scores = beam_search(
                self, src_ids, src_padding_mask, beam_size=beam_size, max_new_tokens=max_new_tokens,
                length_penalty=length_penalty, length_penalty_style=length_penalty_style,
                num_return_sequences=num_return_sequences, early_stopping=early_stopping, **limits,
            )
        if not (return_scores or return_attentions):
            return sequences
        attentions = None
        if return_attentions:
            attentions = cross_attention_weights(self, src_ids, src_padding_mask, sequences, attention_layers)
        return GenerationOutput(sequences, scores, attentions)
