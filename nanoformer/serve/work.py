"""What a batch does with a model, run in the model thread: generate, translate, or one call.

The request handlers (app.py) check and tokenise a request before it is queued, so a batch only
computes. Generation batches rows of several requests, each row with its own token limit, stop
strings and (when sampling) its own seeded generator, so a row gets what it would get alone.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import torch

from nanoformer.generation.text import Continuation, generate_rows
from nanoformer.generation.translation import decode_translation, translate_ids
from nanoformer.serve.batching import Job
from nanoformer.serve.registry import ServedModel
from nanoformer.viz.attention import extract_attention


@dataclass
class Sampling:
    """The settings every row of a generation batch shares (they form the batch key)."""

    do_sample: bool
    temperature: float
    top_k: int | None
    top_p: float | None
    repetition_penalty: float


@dataclass
class CompletionWork:
    prompts: list[list[int]]  # token ids, each repeated n times as rows
    n: int
    max_tokens: int
    stop: list[str]
    sampling: Sampling
    seed: int | None

    def rows(self) -> int:
        return len(self.prompts) * self.n


@dataclass
class TranslationWork:
    texts: list[str]
    sources: list[list[int]]  # encoded, [] for an empty text
    beam_size: int
    length_penalty: float
    max_tokens: int | None
    attention: tuple[str, str] | None  # (layers "last"|"all", heads "mean"|"all") when asked for


def run_batch(served: ServedModel, jobs: list[Job]) -> list[Any]:
    first = jobs[0].payload
    if isinstance(first, CompletionWork):
        return run_completions(served, jobs)
    if isinstance(first, TranslationWork):
        return run_translations(served, jobs)
    return [job.payload() for job in jobs]  # a callable: one request, alone


def _generator(seed: int | None) -> torch.Generator:
    return torch.Generator().manual_seed(seed if seed is not None else secrets.randbits(63))


def run_completions(served: ServedModel, jobs: list[Job]) -> list[list[Continuation]]:
    """Every row of every job in one `generate` call; each job gets its rows back in order."""
    prompts, limits, stops, generators, owners = [], [], [], [], []
    for job in jobs:
        work: CompletionWork = job.payload
        for p, prompt in enumerate(work.prompts):
            for copy in range(work.n):
                index = p * work.n + copy  # OpenAI's choice index
                prompts.append(prompt)
                limits.append(work.max_tokens)
                stops.append(work.stop)
                generators.append(_generator(None if work.seed is None else work.seed + index))
                owners.append((job, index))
    sampling: Sampling = jobs[0].payload.sampling

    def on_text(row: int, piece: str) -> None:
        job, index = owners[row]
        if job.on_piece is not None:
            job.on_piece(index, piece)

    rows = generate_rows(
        served.model, served.tokenizer, prompts, limits, stops, on_text=on_text,
        cancelled=lambda row: owners[row][0].given_up(),
        generator=generators if sampling.do_sample else None,
        do_sample=sampling.do_sample, temperature=sampling.temperature,
        top_k=sampling.top_k, top_p=sampling.top_p, repetition_penalty=sampling.repetition_penalty,
    )
    out: dict[int, list[Continuation]] = {id(job): [] for job in jobs}
    for (job, _), row in zip(owners, rows):
        out[id(job)].append(row)
    return [out[id(job)] for job in jobs]


def run_translations(served: ServedModel, jobs: list[Job]) -> list[list[dict]]:
    """Every sentence of every job through one `translate_ids` call (sorted by length inside)."""
    first: TranslationWork = jobs[0].payload
    sources = [s for job in jobs for s in job.payload.sources]
    tok = served.tokenizer
    saved = served.generation  # the checkpoint's length limits and banned / forced tokens, as `translate` uses them
    limits = {name: saved[name] for name in ("max_len_a", "max_len_b") if name in saved}
    outputs = translate_ids(served.model, sources, tok.pad_id, tok.eos_id, first.beam_size, first.length_penalty,
                            batch_size=max(1, len(sources)), max_new_tokens=first.max_tokens,
                            bad_ids=saved.get("bad_ids") or None, force_eos=bool(saved.get("force_eos")), **limits)
    results, at = [], 0
    for job in jobs:
        work: TranslationWork = job.payload
        results.append(translation_entries(served, work, outputs[at : at + len(work.sources)]))
        at += len(work.sources)
    return results


def translation_entries(served: ServedModel, work: TranslationWork, outputs: list[list[int]]) -> list[dict]:
    """A request's answer: one entry per text, from the target ids of its sentences (in order)."""
    entries = []
    for text, ids in zip(work.texts, outputs):
        entry: dict = {"text": decode_translation(served.tokenizer, ids), "tokens": len(ids)}
        if work.attention is not None and ids:
            entry.update(cross_attention(served, text, ids, *work.attention))
        entries.append(entry)
    return entries


def cross_attention(served: ServedModel, text: str, target_ids: list[int], layers: str, heads: str) -> dict:
    """Each target token's cross-attention over the source tokens, through the explicit attention path.

    Row i is the decoder reading target token i (the first is the start token), i.e. the weights
    with which it predicts token i + 1.
    """
    result = extract_attention(served.model, served.tokenizer, text, target=decode_translation(served.tokenizer,
                               target_ids), source_tokenizer=served.source_tokenizer, target_ids=target_ids)
    cross = result.get("cross")
    weights = cross.weights.double()  # (layers, heads, targets, sources)
    if layers == "last":
        weights = weights[-1]
    if heads == "mean":
        weights = weights.mean(dim=-3)  # the heads' axis, with or without the layers'
    return {"source_tokens": cross.key_tokens, "target_tokens": cross.query_tokens, "attention": weights.tolist(),
            "attention_layers": layers, "attention_heads": heads}
