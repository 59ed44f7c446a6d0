"""Sentences in, translations out: tokenize, batch by length, decode, restore the input order.

`translate_texts` is what `nanoformer translate`, `nanoformer evaluate` and the benchmarks call.
Sentences are sorted by length so a batch holds sentences of similar length (little padding, and
the decoder stops when the batch's longest translation ends), then put back in the input order.
An empty (or all-space) sentence translates to an empty string without running the model.
A source longer than the model's positions is cut to fit, with a warning, unless
`truncate=False`, which refuses it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from nanoformer.errors import UserError
from nanoformer.generation.loop import generating

# fairseq's length rule, floor(a * source length + b) new tokens at most, with its usual a and b
DEFAULT_MAX_LEN_A, DEFAULT_MAX_LEN_B = 1.5, 10


def encode_sources(
    texts: Sequence[str], tokenizer, max_positions: int, truncate: bool = True, where: Callable[[int], str] | None = None
) -> list[list[int]]:
    """Source ids (each ending with eos) that fit in `max_positions`; [] for an empty sentence."""
    room = max_positions
    stripped = [t.strip() for t in texts]
    encoded = tokenizer.encode_batch([t for t in stripped if t]) if any(stripped) else []
    out, it = [], iter(encoded)
    long_ones = []
    for i, text in enumerate(stripped):
        if not text:
            out.append([])
            continue
        ids = list(next(it))
        if len(ids) + 1 > room:
            name = where(i) if where else f"sentence {i + 1}"
            if not truncate:
                raise UserError(f"{name}: the source has {len(ids)} tokens, more than the {room - 1} this model reads; "
                                "shorten it, or allow truncation (drop --no-truncate)")
            long_ones.append(f"{name} ({len(ids)} tokens)")
            ids = ids[: room - 1]
        out.append(ids + [tokenizer.eos_id])
    if long_ones:
        shown = ", ".join(long_ones[:3]) + (f" and {len(long_ones) - 3} more" if len(long_ones) > 3 else "")
        warnings.warn(f"{len(long_ones)} source(s) longer than the model's {room - 1} tokens were truncated: {shown}",
                      stacklevel=2)
    return out


@torch.no_grad()
def translate_ids(
    model: nn.Module,
    sources: Sequence[Sequence[int]],
    pad_id: int,
    eos_id: int,
    beam_size: int = 1,
    length_penalty: float = 1.0,
    batch_size: int = 32,
    max_len_a: float = DEFAULT_MAX_LEN_A,
    max_len_b: int = DEFAULT_MAX_LEN_B,
    on_batch: Callable[[int], None] | None = None,
    max_new_tokens: int | None = None,
    bad_ids: Sequence[int] | None = None,
    force_eos: bool = False,
    sampling: dict | None = None,
) -> list[list[int]]:
    """Target ids (no start token, cut at eos) for each non-empty source; [] for empty ones.

    A sentence of n source tokens gets at most floor(max_len_a * n + max_len_b) new tokens (the
    fairseq rule), within the model's positions and `max_new_tokens` when given. `on_batch(n)` is
    told after each n sentences. bad_ids are never generated; force_eos ends a sentence that
    reaches its limit with eos (Hugging Face's `bad_words_ids`, `forced_eos_token_id`).
    sampling: `Seq2SeqTransformer.generate`'s do_sample, temperature, top_k, top_p and generator.
    """
    model.eval()
    device = next(model.parameters()).device
    max_positions = model.config.max_positions
    todo = sorted((i for i, s in enumerate(sources) if s), key=lambda i: len(sources[i]), reverse=True)
    results: list[list[int]] = [[] for _ in sources]
    options = {"beam_size": beam_size, "length_penalty": length_penalty, "max_len_a": max_len_a, "max_len_b": max_len_b,
               "bad_ids": bad_ids, "force_eos": force_eos, **(sampling or {})}
    with generating(model):  # weights packed once for all the batches, not once per batch
        for start in range(0, len(todo), batch_size):
            rows = todo[start : start + batch_size]
            longest = max(len(sources[i]) for i in rows)
            ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), longest), dtype=torch.bool)
            for r, i in enumerate(rows):
                ids[r, : len(sources[i])] = torch.as_tensor(sources[i])
                mask[r, : len(sources[i])] = True
            max_new = max(1, min(max_positions - 1, math.ceil(max_len_a * longest + max_len_b)))
            if max_new_tokens is not None:
                max_new = max(1, min(max_new, max_new_tokens))
            out = model.generate(ids.to(device), max_new_tokens=max_new,
                                 src_padding_mask=None if bool(mask.all()) else mask.to(device), **options)
            for r, i in enumerate(rows):
                tokens = out[r, 1:].tolist()
                results[i] = tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens
            if on_batch is not None:
                on_batch(len(rows))
    return results


def translate_texts(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    source_tokenizer=None,
    beam_size: int = 1,
    length_penalty: float = 1.0,
    batch_size: int = 32,
    max_len_a: float = DEFAULT_MAX_LEN_A,
    max_len_b: int = DEFAULT_MAX_LEN_B,
    truncate: bool = True,
    progress: bool = False,
    where: Callable[[int], str] | None = None,
    bad_ids: Sequence[int] | None = None,
    force_eos: bool = False,
    sampling: dict | None = None,
) -> list[str]:
    """Translate each text; one output string per input, in the input order, never with newlines.

    `tokenizer` decodes the target; `source_tokenizer` encodes the source when the model has
    separate vocabularies (default: `tokenizer`). `where(i)` names sentence i in messages.
    """
    from tqdm.auto import tqdm

    if beam_size < 1:
        raise UserError(f"beam size {beam_size}: use 1 (greedy) or more")
    if batch_size < 1:
        raise UserError(f"batch size {batch_size}: use 1 or more")
    src_tok = source_tokenizer or tokenizer
    sources = encode_sources(texts, src_tok, model.config.max_positions, truncate, where)
    bar = tqdm(total=sum(1 for s in sources if s), unit="sent", desc="translating", disable=not progress,
               dynamic_ncols=True)
    try:
        outputs = translate_ids(model, sources, tokenizer.pad_id, tokenizer.eos_id, beam_size, length_penalty,
                                batch_size, max_len_a, max_len_b, on_batch=bar.update, bad_ids=bad_ids,
                                force_eos=force_eos, sampling=sampling)
    finally:
        bar.close()
    return [decode_translation(tokenizer, ids) for ids in outputs]


def decode_translation(tokenizer, ids: Sequence[int]) -> str:
    """A translation's text: its tokens decoded, on one line with single spaces."""
    return " ".join(tokenizer.decode(list(ids)).split()) if ids else ""
