"""The limits every encoder-decoder search obeys: how long each sentence may grow, which tokens are banned.

The per-sentence length limit is max_new_tokens, or a + b·source length (fairseq's rule), within
max_positions; banned tokens are never generated, and with force_eos a sentence that reaches its
limit ends with eos (Hugging Face's `forced_eos_token_id`). Greedy decoding and beam search share them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


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
