"""Greedy decoding for encoder-decoder models: the most likely token at each step (or a sampled one).

Sampling (`do_sample`, with temperature, top-k and top-p as for GPT, `generation.sampling`) is what
back-translation wants on its synthetic side: Edunov et al. (2018) found sampled sources teach
the forward model more than beam-search ones, which are too regular.

The source is encoded once; the decoder's self-attention keys/values live in the KV cache and its
cross-attention keys/values are computed on the first step and reused afterwards. Sentences that
finished are dropped from the batch, so the work shrinks as they end.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nanoformer.generation.limits import banned_tensor, check_special_ids, length_limits
from nanoformer.generation.loop import generation_loop
from nanoformer.generation.sampling import check_sampling_args, choose_next


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
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Most likely token at each step. Returns (B, T_out) target ids starting with the start token.

    Finished rows are padded with pad_id (eos_id if the config has no pad) after their eos.
    bad_ids are never chosen; with force_eos a sentence that reaches its length limit ends with
    eos (Hugging Face's `forced_eos_token_id`), otherwise it is cut there. With do_sample each
    token is drawn from the (temperature-scaled, top-k / top-p filtered) distribution instead.
    """
    if do_sample:
        check_sampling_args(temperature, top_k, top_p, 1.0)
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
        next_ids = choose_next(logits, do_sample, temperature, top_k, top_p, generator)
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
