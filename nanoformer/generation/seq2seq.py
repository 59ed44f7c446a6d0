"""Decoding an encoder-decoder model: the source is encoded once, the target grows one token a step.

The decoder's self-attention keys/values live in the KV cache and its cross-attention keys/values
(a projection of the encoder memory) are computed on the first step and reused afterwards.
Sentences that finished are dropped from the batch, so the work shrinks as they end.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def greedy_decode(
    model: nn.Module,
    src_ids: Tensor,
    src_padding_mask: Tensor | None = None,
    max_new_tokens: int = 64,
) -> Tensor:
    """Most likely token at each step. Returns (B, T_out) target ids starting with the start token.

    Finished rows are padded with pad_id (eos_id if the config has no pad) after their eos.
    """
    config = model.config
    if config.start_id is None or config.eos_id is None:
        raise ValueError("greedy decoding needs the config's bos_id (or decoder_start_id) and eos_id")
    model.eval()
    device = src_ids.device
    batch = src_ids.shape[0]
    max_new_tokens = min(max_new_tokens, config.max_positions - 1)
    fill_id = config.pad_id if config.pad_id is not None else config.eos_id
    memory = model.encode(src_ids, src_padding_mask)
    cache = model.new_cache(max_new_tokens + 1)
    out = torch.full((batch, max_new_tokens + 1), fill_id, dtype=torch.long, device=device)
    out[:, 0] = config.start_id
    alive = torch.arange(batch, device=device)  # original row of each row still decoding
    step_ids = out[:, :1]
    src_mask = src_padding_mask
    for t in range(1, max_new_tokens + 1):
        logits = model.decode_step(step_ids, memory if t == 1 else None, cache, src_mask)[:, -1, :]
        next_ids = logits.argmax(dim=-1)
        out[alive, t] = next_ids
        keep = next_ids != config.eos_id
        if not bool(keep.any()):
            return out[:, : t + 1]
        if not bool(keep.all()):
            index = keep.nonzero().squeeze(-1)
            cache.reorder(index)
            alive, next_ids = alive[index], next_ids[index]
            src_mask = src_mask.index_select(0, index) if src_mask is not None else None
        step_ids = next_ids[:, None]
    return out
