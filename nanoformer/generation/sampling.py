"""Continuing a prompt with a decoder-only model: greedy, or sampling reshaped by temperature, top-k, top-p.

`generate` runs the prompt once through the model (filling the KV cache); each new token then
costs one position's worth of computation. Prompts of different lengths are left-padded into one
batch; the padding mask keeps them out of attention and the position ids count real tokens only,
so each row generates exactly what it would alone. The next token is chosen by `choose_next`:

- temperature T divides the logits: T < 1 sharpens the distribution, T > 1 flattens it;
- top-k keeps the k most likely tokens; top-p (nucleus) keeps the smallest set whose
  probability reaches p;
- the repetition penalty (CTRL) makes tokens already present less likely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from nanoformer.generation.loop import generation_loop
from nanoformer.kernels.argmax import last_dim_argmax


def apply_repetition_penalty(logits: Tensor, previous_ids: Tensor, penalty: float) -> Tensor:
    """Divide positive logits (multiply negative ones) of tokens seen in previous_ids (B, T)."""
    if penalty == 1.0:
        return logits
    seen = torch.gather(logits, 1, previous_ids)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, previous_ids, seen)


def filter_top_k(logits: Tensor, k: int) -> Tensor:
    k = min(k, logits.shape[-1])
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def filter_top_p(logits: Tensor, p: float) -> Tensor:
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens ranked above it already reach p (the top one always stays).
    drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def choose_next(
    logits: Tensor,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Next token ids (B,) from last-position logits (B, V).

    generator: one for the batch, or one per row (a server batching seeded requests together:
    each row then draws exactly what it would draw alone).
    """
    if not do_sample:
        return last_dim_argmax(logits)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    logits = logits / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = logits.float().softmax(dim=-1)
    if isinstance(generator, Sequence):
        if len(generator) != probs.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {probs.shape[0]} rows")
        return torch.cat([torch.multinomial(row[None], 1, generator=g)[0] for row, g in zip(probs, generator)])
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (or None), got {top_p}")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {repetition_penalty}")


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token lists of different lengths -> (ids, attention_mask), both (B, T_max), padded on the left."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. start generation from a BOS token)")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = True
    return ids, mask


@torch.inference_mode()
@generation_loop
def generate(
    model: nn.Module,
    input_ids: Tensor,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    attention_mask: Tensor | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    on_tokens: Callable[[Tensor], bool | None] | None = None,
) -> Tensor:
    """Continue each prompt of input_ids (B, T) by up to max_new_tokens; returns (B, T + new).

    Generation may run past the model's context (max_positions): when it is full, decoding goes
    on from the latest max_positions/2 tokens, as a sliding window that moves in half-steps.

    attention_mask (B, T), 1 = real token, for left-padded prompts. A row that produces eos_id
    is finished: later positions are filled with pad_id (eos_id if there is no pad). on_tokens
    receives each step's new tokens (B,) and may return True to stop early (stop strings).
    """
    check_sampling_args(temperature, top_k, top_p, repetition_penalty)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    model.eval()
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    batch, prompt_len = input_ids.shape
    max_positions = model.config.max_positions
    if prompt_len > max_positions:
        raise ValueError(
            f"the prompt has {prompt_len} tokens, more than max_positions = {max_positions}; keep its last tokens"
        )
    # Only left padding needs a mask: tokens after a row's eos are never read by that row.
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None
    if attention_mask is not None:
        attention_mask = attention_mask.to(device).bool()
    fill_id = pad_id if pad_id is not None else eos_id

    cache = model.new_cache(min(prompt_len + max_new_tokens, max_positions))
    sequence = input_ids
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    step_ids = input_ids
    for _ in range(max_new_tokens):
        if cache.length + step_ids.shape[1] > max_positions:
            # The context is full: continue from a fresh cache holding the latest half of the text
            # (one prefill per max_positions/2 tokens, instead of recomputing a window every step).
            keep = max_positions // 2
            step_ids = sequence[:, -keep:]
            attention_mask = attention_mask[:, -keep:] if attention_mask is not None else None
            cache = model.new_cache(max_positions)
        logits = model.decode_step(step_ids, cache, attention_mask=attention_mask)[:, -1, :].float()
        logits = apply_repetition_penalty(logits, sequence, repetition_penalty)
        next_ids = choose_next(logits, do_sample, temperature, top_k, top_p, generator)
        if fill_id is not None:
            next_ids = torch.where(finished, torch.full_like(next_ids, fill_id), next_ids)
        sequence = torch.cat([sequence, next_ids[:, None]], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
        if eos_id is not None:
            finished |= next_ids == eos_id
        step_ids = next_ids[:, None]
        if on_tokens is not None and on_tokens(next_ids):
            break
        if eos_id is not None and bool(finished.all()):
            break
    return sequence
