"""Batched beam search for encoder-decoder models, on the KV cache.

Each source sentence keeps `k` running hypotheses (beams). A step scores every continuation of
every beam, log p(token | beam) + the beam's running log-prob, and keeps the best 2k candidates
per sentence. Among them:
- a candidate that ends the sentence (eos, or the sentence's length limit) and ranks in the top k
  becomes a finished hypothesis, scored with the length penalty (see `length_penalty_fn`), and
  joins the sentence's k best finished ones;
- the best k candidates that do not end go on running.
Taking 2k candidates guarantees k running beams even if every beam chose eos.

The work stays on the KV cache:
- the first step runs one row per sentence (all beams start from the same start token); its
  cross-attention keys/values are computed there, once per source sentence, and stay that way:
  the k beams of a sentence attend to one copy (kernels/grouped_attention.py), so a step
  reads its encoder memory once, not k times, and reordering beams never moves it;
- after each step `cache.reorder(rows, sentences)` keeps the self-attention rows of the chosen
  beams in their new order;
- a sentence that is done leaves the batch in that same reorder (its rows, its memory and its
  source mask), so later steps only compute the sentences still searching.

When a sentence is done (`early_stopping`, Hugging Face's semantics):
- False (default, HF's default): when it has k finished hypotheses and the best running beam,
  scored with the penalty of its current length, cannot beat the worst of them. A heuristic:
  with length_penalty > 0 a longer hypothesis could still overtake; HF stops there too.
- True: as soon as it has k finished hypotheses.
- "never": when it has k finished hypotheses and the best running beam could not beat the worst
  even at its longest possible length (the exact rule for length_penalty > 0).
- always at its length limit; there every top-k candidate counts as finished, eos or not,
  unless force_eos makes the last token eos (as opus-mt's `forced_eos_token_id` does).

Scores are log-probabilities over the full vocabulary; banned tokens (bad_ids) get -inf after
the softmax (no renormalisation), and a forced eos adds log-prob 0: both as Hugging Face does, so
that results and `scores` match its `generate(num_beams=k)` and `sequences_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nanoformer.generation.beam_group import BeamGroup, Finished, SearchRule, best_continuations  # noqa: F401
from nanoformer.generation.limits import banned_tensor, check_special_ids, length_limits
from nanoformer.generation.loop import generation_loop


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


@dataclass
class GenerationOutput:
    """What `Seq2SeqTransformer.generate(..., return_scores=True or return_attentions=True)` returns.

    sequences: (B·n, T_out) hypotheses, start token first, pad after eos; the n of a sentence
        are consecutive rows, best first.
    scores: (B·n,) length-penalised log-probabilities (Hugging Face's `sequences_scores`).
    cross_attentions: (B·n, T_out - 1, S) when asked for: row j is where the decoder looked in the
        source (cross-attention weights averaged over heads, of the last decoder layer or averaged
        over all layers) when it produced token j + 1; rows after the hypothesis' eos are zero.
    """

    sequences: Tensor
    scores: Tensor | None = None
    cross_attentions: Tensor | None = None


def check_beam_args(beam_size: int, num_return_sequences: int, early_stopping, vocab: int) -> None:
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"beam_size must be an integer >= 1, got {beam_size!r}")
    if not isinstance(num_return_sequences, int) or not 1 <= num_return_sequences <= beam_size:
        raise ValueError(
            f"num_return_sequences must be between 1 and beam_size = {beam_size}, got {num_return_sequences!r}; "
            "raise beam_size or ask for fewer hypotheses"
        )
    if not (early_stopping is True or early_stopping is False or early_stopping == "never"):
        raise ValueError(f"early_stopping must be False, True or 'never', got {early_stopping!r}")
    if 2 * beam_size > vocab:
        raise ValueError(f"beam_size = {beam_size} needs a target vocabulary of at least {2 * beam_size} tokens, got {vocab}")


@torch.no_grad()
@generation_loop
def beam_search(
    model: nn.Module,
    src_ids: Tensor,
    src_padding_mask: Tensor | None = None,
    *,
    beam_size: int = 4,
    max_new_tokens: int = 64,
    length_penalty: float = 1.0,
    length_penalty_style: str = "hf",
    num_return_sequences: int = 1,
    early_stopping: bool | str = False,
    max_len_a: float = 0.0,
    max_len_b: float | None = None,
    bad_ids: Sequence[int] | None = None,
    force_eos: bool = False,
) -> tuple[Tensor, Tensor]:
    """Beam search over src_ids (B, S) with padding mask (B, S), 1 = real token.

    Returns (sequences (B·n, T_out), scores (B·n,)), n = num_return_sequences, best first per
    sentence; T_out = 1 + the longest returned hypothesis; pad_id after eos.
    """
    config = model.config
    check_special_ids(config, "beam search")
    check_beam_args(beam_size, num_return_sequences, early_stopping, config.tgt_vocab_size)
    penalty = length_penalty_fn(length_penalty_style, float(length_penalty))
    model.eval()
    device = src_ids.device
    batch = src_ids.shape[0]
    limits = length_limits(config, src_ids, src_padding_mask, max_new_tokens, max_len_a, max_len_b)
    n = num_return_sequences
    rule = search_rule(config, beam_size, penalty, early_stopping, length_penalty, bad_ids, force_eos, n, device)
    if batch == 0 or int(limits.max()) == 0:
        starts = torch.full((batch * n, 1), config.start_id, dtype=torch.long, device=device)
        return starts, torch.zeros(batch * n, device=device)
    group = BeamGroup(model, rule, src_ids, src_padding_mask, limits, torch.arange(batch, device=device))
    finished: list[Finished | None] = [None] * batch
    while group.size:
        for sentence in group.step(model):
            finished[sentence.owner] = sentence
    out_len = max(f.sequences.shape[1] for f in finished)
    sequences = torch.full((batch, n, out_len), rule.fill_id, dtype=torch.long, device=device)
    for i, f in enumerate(finished):
        sequences[i, :, : f.sequences.shape[1]] = f.sequences
    scores = torch.stack([f.scores for f in finished])
    return sequences.view(batch * n, out_len), scores.view(batch * n)


def search_rule(config, beam_size: int, penalty, early_stopping, length_penalty: float, bad_ids, force_eos: bool,
                num_return_sequences: int, device: torch.device) -> SearchRule:
    """The settings a group of sentences searches with (generation/beam_group.py)."""
    return SearchRule(
        k=beam_size, eos=config.eos_id, start_id=config.start_id,
        fill_id=config.pad_id if config.pad_id is not None else config.eos_id, vocab=config.tgt_vocab_size,
        penalty=penalty, early_stopping=early_stopping,
        # "never" with a penalty that grows with length: judge the best beam at its longest length.
        judge_at_limit=early_stopping == "never" and length_penalty > 0,
        banned=banned_tensor(config, bad_ids, force_eos, device), force_eos=force_eos,
        num_return=num_return_sequences,
    )


@torch.no_grad()
def cross_attention_weights(
    model: nn.Module,
    src_ids: Tensor,
    src_padding_mask: Tensor | None,
    sequences: Tensor,
    layers: str = "last",
) -> Tensor:
    """Cross-attention weights (N, T_out - 1, S) of each generated token of `sequences` (N, T_out).

    The rows of sequences belong to the sources in order, N / B consecutive rows per source. The
    weights come from one teacher-forced pass through the explicit ("math") attention path over
    the finished hypotheses, so decoding itself keeps the fast path. Averaged over heads, of the
    last decoder layer (layers="last") or averaged over all layers ("all"). Rows after a
    hypothesis' eos are zero.
    """
    if layers not in ("last", "all"):
        raise ValueError(f"attention_layers must be 'last' or 'all', got {layers!r}")
    config = model.config
    if sequences.shape[1] < 2:  # nothing generated
        return torch.zeros(sequences.shape[0], 0, src_ids.shape[1], device=src_ids.device)
    per_source = sequences.shape[0] // src_ids.shape[0]
    src = src_ids.repeat_interleave(per_source, dim=0)
    mask = src_padding_mask.repeat_interleave(per_source, dim=0) if src_padding_mask is not None else None
    memory = model.encode(src, mask)
    inputs = sequences[:, :-1]
    out = model.run_decoder(inputs, memory, mask, need_weights=True)
    per_layer = out.cross_attentions if layers == "all" else out.cross_attentions[-1:]
    weights = torch.stack([w.mean(dim=1) for w in per_layer]).mean(dim=0)  # (N, T_out - 1, S)
    # A generated token j + 1 exists while no eos came before it.
    generated = sequences[:, 1:]
    before_eos = torch.cumsum((generated == config.eos_id).long(), dim=1) - (generated == config.eos_id).long()
    exists = before_eos == 0
    return weights * exists[:, :, None]
