"""Decoding an encoder-decoder model: the source is encoded once, the target grows one token a step.

The decoder's self-attention keys/values live in the KV cache and its cross-attention keys/values
(a projection of the encoder memory) are computed on the first step and reused afterwards.
Sentences that finished are dropped from the batch, so the work shrinks as they end.

This module holds greedy decoding and what it shares with beam search (`beam.py`): the
per-sentence length limit (max_new_tokens, or a + b·source length, within max_positions), the
banned tokens and the eos forced at the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nanoformer.generation.loop import generation_loop


def length_limits(
    config,
    src_ids: Tensor,
    src_padding_mask: Tensor | None,
    max_new_tokens: int,
    max_len_a: float = 0.0,
    max_len_b: float | None = None,
) -> Tensor:
    """How many tokens each sentence may generate (eos included): (B,) long.

    max_new_tokens caps every sentence (and max_positions - 1 caps it in turn: the start token
    takes a position). With max_len_b (or a non-zero max_len_a), the limit of a source of n real
    tokens is also floor(max_len_a · n + max_len_b), at least 1 (fairseq's rule).
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    cap = min(max_new_tokens, config.max_positions - 1)
    batch, width = src_ids.shape
    limits = torch.full((batch,), cap, dtype=torch.long, device=src_ids.device)
    if max_len_b is None and not max_len_a:
        return limits
    if max_len_a < 0:
        raise ValueError(f"max_len_a must be >= 0, got {max_len_a}")
    if src_padding_mask is not None:
        src_len = src_padding_mask.to(torch.long).sum(dim=1)
    else:
        src_len = torch.full((batch,), width, dtype=torch.long, device=src_ids.device)
    own = torch.floor(src_len.double() * float(max_len_a) + float(max_len_b or 0.0)).long()
    return torch.minimum(limits, own.clamp(min=min(1, cap)))


def banned_tensor(config, bad_ids: Sequence[int] | None, force_eos: bool, device: torch.device) -> Tensor | None:
    """The ids never to generate, checked against the target vocabulary (None for none).

    Banning eos is allowed (every sentence then runs to its limit), but not with force_eos."""
    if not bad_ids:
        return None
    vocab = config.tgt_vocab_size
    ids = sorted({int(i) for i in bad_ids})
    if ids[0] < 0 or ids[-1] >= vocab:
        raise ValueError(f"bad_ids must be target token ids in [0, {vocab}), got {ids}")
    if force_eos and config.eos_id in ids:
        raise ValueError(f"bad_ids holds eos_id = {config.eos_id} while force_eos asks for it; drop one of the two")
    if len(ids) >= vocab:
        raise ValueError("bad_ids bans the whole vocabulary; ban fewer tokens")
    return torch.tensor(ids, dtype=torch.long, device=device)


def check_special_ids(config, what: str) -> None:
    if config.start_id is None or config.eos_id is None:
        raise ValueError(f"{what} needs the config's bos_id (or decoder_start_id) and eos_id")


@torch.no_grad()
@generation_loop
def greedy_decode(
    model: nn.Module,
    src_ids: Tensor,
    src_padding_mask: Tensor | None = None,
    max_new_tokens: int = 64,
    *,
    max_len_a: float = 0.0,
    max_len_b: float | None = None,
    bad_ids: Sequence[int] | None = None,
    force_eos: bool = False,
) -> Tensor:
    """Most likely token at each step. Returns (B, T_out) target ids starting with the start token.

    Finished rows are padded with pad_id (eos_id if the config has no pad) after their eos.
    bad_ids are never chosen; with force_eos a sentence that reaches its length limit ends with
    eos (Hugging Face's `forced_eos_token_id`), otherwise it is cut there.
    """
    config = model.config
    check_special_ids(config, "greedy decoding")
    model.eval()
    device = src_ids.device
    batch = src_ids.shape[0]
    limits = length_limits(config, src_ids, src_padding_mask, max_new_tokens, max_len_a, max_len_b)
    max_steps = int(limits.max()) if batch else 0
    banned = banned_tensor(config, bad_ids, force_eos, device)
    per_row_limits = bool((limits != max_steps).any()) if batch else False
    fill_id = config.pad_id if config.pad_id is not None else config.eos_id
    out = torch.full((batch, max_steps + 1), fill_id, dtype=torch.long, device=device)
    out[:, 0] = config.start_id
    if max_steps == 0:
        return out
    memory = model.encode(src_ids, src_padding_mask)
    cache = model.new_cache(max_steps + 1)
    alive = torch.arange(batch, device=device)  # original row of each row still decoding
    step_ids = out[:, :1]
    src_mask = src_padding_mask
    for t in range(1, max_steps + 1):
        logits = model.decode_step(step_ids, memory if t == 1 else None, cache, src_mask)[:, -1, :]
        if banned is not None:
            logits = logits.index_fill(1, banned, float("-inf"))
        next_ids = logits.argmax(dim=-1)
        at_limit = limits[alive] == t if per_row_limits else None
        if force_eos:
            if at_limit is None:
                if t == max_steps:
                    next_ids.fill_(config.eos_id)
            else:
                next_ids = next_ids.masked_fill(at_limit, config.eos_id)
        out[alive, t] = next_ids
        keep = next_ids != config.eos_id
        if at_limit is not None:
            keep &= ~at_limit
        if not bool(keep.any()):
            return out[:, : t + 1]
        if not bool(keep.all()):
            index = keep.nonzero().squeeze(-1)
            cache.reorder(index)
            alive, next_ids = alive[index], next_ids[index]
            src_mask = src_mask.index_select(0, index) if src_mask is not None else None
        step_ids = next_ids[:, None]
    return out


def length_penalty_fn(style: str, alpha: float):
    """The length normaliser of a finished hypothesis of `length` generated tokens (eos included).

    "hf":   length ** alpha                  (Hugging Face `generate`; alpha = 0 is the raw log-prob)
    "gnmt": ((5 + length) / 6) ** alpha      (Wu et al. 2016, GNMT)
    Works on ints and on tensors of lengths.
    """
    if style == "hf":
        return lambda length: length**alpha
    if style == "gnmt":
        return lambda length: ((5 + length) / 6) ** alpha
    raise ValueError(f"length_penalty_style must be 'hf' or 'gnmt', got {style!r}")


__all__ = ["banned_tensor", "check_special_ids", "greedy_decode", "length_limits", "length_penalty_fn"]
