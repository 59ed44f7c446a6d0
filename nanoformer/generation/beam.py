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
import torch.nn.functional as F
from torch import Tensor, nn

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
    vocab, eos, k = config.tgt_vocab_size, config.eos_id, beam_size
    check_beam_args(beam_size, num_return_sequences, early_stopping, vocab)
    penalty = length_penalty_fn(length_penalty_style, float(length_penalty))
    model.eval()
    device = src_ids.device
    batch = src_ids.shape[0]
    fill_id = config.pad_id if config.pad_id is not None else eos
    limits = length_limits(config, src_ids, src_padding_mask, max_new_tokens, max_len_a, max_len_b)
    max_steps = int(limits.max()) if batch else 0
    banned = banned_tensor(config, bad_ids, force_eos, device)
    if max_steps == 0:
        starts = torch.full((batch * num_return_sequences, 1), config.start_id, dtype=torch.long, device=device)
        return starts, torch.zeros(batch * num_return_sequences, device=device)
    # "never" with a penalty that grows with length: judge the best beam at its longest length.
    judge_at_limit = early_stopping == "never" and length_penalty > 0

    # Finished hypotheses, per original sentence: the k best so far (score -inf = empty slot).
    fin_tokens = torch.full((batch, k, max_steps + 1), fill_id, dtype=torch.long, device=device)
    fin_scores = torch.full((batch, k), float("-inf"), device=device)
    fin_lengths = torch.zeros((batch, k), dtype=torch.long, device=device)

    # Running state of the sentences still searching: `active` holds their original indices;
    # rows (cache, tokens) are sentence-major, `beams` rows per sentence; the memory and the source
    # mask have one row per sentence.
    active = torch.arange(batch, device=device)
    limit = limits
    beams = 1
    tokens = torch.full((batch, max_steps + 1), fill_id, dtype=torch.long, device=device)
    tokens[:, 0] = config.start_id
    run_scores = torch.zeros((batch, 1), device=device)
    src_mask = src_padding_mask
    memory = model.encode(src_ids, src_padding_mask)
    cache = model.new_cache(max_steps + 1)
    first_k = torch.arange(2 * k, device=device) < k

    for t in range(1, max_steps + 1):
        n = active.shape[0]
        logits = model.decode_step(tokens[:, t - 1 : t], memory if t == 1 else None, cache, src_mask)[:, -1, :]
        logp = F.log_softmax(logits.float(), dim=-1)
        if banned is not None:
            logp.index_fill_(1, banned, float("-inf"))
        at_limit = limit == t  # (n,)
        any_at_limit = bool(at_limit.any())
        if force_eos and any_at_limit:
            rows = at_limit.repeat_interleave(beams)
            logp[rows] = float("-inf")
            logp[rows, eos] = 0.0
        cand_scores, cand_index = best_continuations(logp, run_scores, 2 * k)  # (n, 2k), best first
        cand_beam = torch.div(cand_index, vocab, rounding_mode="floor")
        cand_token = cand_index - cand_beam * vocab
        ends = cand_token == eos
        if any_at_limit:
            ends |= at_limit[:, None]

        # 1. Candidates that end, among the top k, join the finished hypotheses.
        new_finished = ends & first_k & torch.isfinite(cand_scores)
        with_new = new_finished.any(dim=1)
        if bool(with_new.any()):
            local = with_new.nonzero().squeeze(1)
            sentence = active[local]
            scores = (cand_scores[local, :k] / penalty(t)).masked_fill(~new_finished[local, :k], float("-inf"))
            rows = local[:, None] * beams + cand_beam[local, :k]  # (m, k) rows the candidates extend
            candidates = tokens[rows]  # (m, k, T + 1)
            candidates[:, :, t] = cand_token[local, :k]
            merged_scores = torch.cat([fin_scores[sentence], scores], dim=1)
            best_scores, best = merged_scores.topk(k, dim=1)
            fin_scores[sentence] = best_scores
            merged = torch.cat([fin_tokens[sentence], candidates], dim=1)
            fin_tokens[sentence] = merged.gather(1, best[:, :, None].expand(-1, -1, merged.shape[2]))
            lengths = torch.cat([fin_lengths[sentence], torch.full_like(fin_lengths[sentence], t)], dim=1)
            fin_lengths[sentence] = lengths.gather(1, best)

        # 2. The best k candidates that do not end run on.
        chosen = cand_scores.masked_fill(ends, float("-inf")).topk(k, dim=1).indices
        run_scores = cand_scores.gather(1, chosen)
        next_beam = cand_beam.gather(1, chosen)
        next_token = cand_token.gather(1, chosen)

        # 3. Which sentences are done.
        worst = fin_scores[active].min(dim=1).values  # -inf until all k slots are filled
        full = torch.isfinite(worst)
        if early_stopping is True:
            done = full
        else:
            best_length = limit if judge_at_limit else t
            best_possible = run_scores[:, 0] / penalty(best_length)
            done = full & (best_possible <= worst)
        if any_at_limit:
            done |= at_limit
        if bool(done.all()):
            break

        # 4. Reorder the cache (and every per-row tensor) to the chosen beams of the sentences left.
        keep = (~done).nonzero().squeeze(1)
        rows = (keep[:, None] * beams + next_beam[keep]).view(-1)
        cache.reorder(rows, sentences=keep)
        tokens = tokens.index_select(0, rows)
        tokens[:, t] = next_token[keep].view(-1)
        if src_mask is not None and keep.shape[0] != n:
            src_mask = src_mask.index_select(0, keep)  # one per sentence, as its memory
        run_scores, active, limit = run_scores[keep], active[keep], limit[keep]
        beams = k

    n = num_return_sequences
    out_len = 1 + int(fin_lengths[:, :n].max())
    sequences = fin_tokens[:, :n, :out_len].reshape(batch * n, out_len)
    return sequences, fin_scores[:, :n].reshape(batch * n)


CHUNK = 64  # vocabulary entries per chunk in `best_continuations`


def best_continuations(logp: Tensor, run_scores: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The `count` best continuations of each sentence over all its beams.

    logp (n·beams, V) holds each beam's next-token log-probs and run_scores (n, beams) the beams'
    running scores. Returns (scores, index) (n, count), best first, index = beam·V + token: what
    `(logp.view(n, beams, V) + run_scores[..., None]).view(n, -1).topk(count)` gives, in a
    fraction of its time (torch.topk reads a long row element by element, which cost more than the
    rest of a beam step but the output layer; docs/benchmarks.md, "Speed vs Hugging Face Marian").

    Each beam's vocabulary is cut into chunks of CHUNK entries. A continuation in chunk c of beam b
    scores at most max(c) + run_score(b), so the `count` best continuations of a sentence lie in
    the `count` chunks with the highest such bound (a chunk outside them is beaten, entry for
    entry, by `count` better ones), and a vectorised max per chunk is cheap. topk then runs on
    the bounds, and on the entries of the chunks they pick; the entries past the last whole chunk
    are always kept. The same floats as the one-topk form; equal scores may come out in another
    order (torch.topk does not define one either).
    """
    n, beams = run_scores.shape
    vocab = logp.shape[1]
    chunks = vocab // CHUNK
    if beams * chunks <= count:
        return (logp.view(n, beams, vocab) + run_scores[:, :, None]).view(n, beams * vocab).topk(count, dim=1)
    whole = logp.view(n, beams, vocab)[:, :, : chunks * CHUNK].unflatten(2, (chunks, CHUNK))
    bounds = (whole.amax(dim=3) + run_scores[:, :, None]).view(n, beams * chunks)
    best = bounds.topk(count, dim=1).indices  # (n, count): beam · chunks + chunk
    beam = torch.div(best, chunks, rounding_mode="floor")
    chunk = best - beam * chunks
    picked = whole[torch.arange(n, device=logp.device)[:, None], beam, chunk]  # (n, count, CHUNK)
    picked = (picked + run_scores.gather(1, beam)[:, :, None]).view(n, count * CHUNK)
    index = ((beam * vocab + chunk * CHUNK)[:, :, None] + torch.arange(CHUNK, device=logp.device)).view(n, -1)
    if chunks * CHUNK < vocab:
        tail = logp.view(n, beams, vocab)[:, :, chunks * CHUNK :] + run_scores[:, :, None]
        tail_index = torch.arange(beams, device=logp.device)[:, None] * vocab + torch.arange(
            chunks * CHUNK, vocab, device=logp.device
        )
        picked = torch.cat([picked, tail.reshape(n, -1)], dim=1)
        index = torch.cat([index, tail_index.view(1, -1).expand(n, -1)], dim=1)
    scores, where = picked.topk(count, dim=1)
    return scores, index.gather(1, where)


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
