"""Beam search as a group of sentences that advances one decoding step at a time.

`beam_search` (beam.py) runs one group from its first step to its last. A server runs one too,
but lets new sentences join it between steps (`merge`): continuous batching. A request that
arrives while others decode then starts at the next step, instead of waiting for the slowest
sentence of the batch before it to end.

Sentences that join form a group of their own first: their encoder runs there. Into an empty
server they take their first step as that group (one row each: every beam starts from the start
token). Into a running group they merge before it (`prime`: their cross-attention keys and
values are cached, and each gets k rows, all but the first at score -inf, which the first step
of beam search gives the same candidates as one row), so that the next step is one decoder call
for everyone rather than one for the group and another for the newcomers. Their self-attention
rows are left-padded to the group's length and their sources right-padded to the group's
longest, both masked, so every sentence decodes as it would alone (the padding properties of
tests/test_properties.py; tests/test_beam_group.py). Each sentence keeps its own step count,
length limit and finished hypotheses; the arithmetic of a step is that of the search it
replaced, sentence by sentence (see beam.py for the rules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHUNK = 64  # vocabulary entries per chunk in `best_continuations`


@dataclass(frozen=True)
class SearchRule:
    """What every sentence of a group shares: the beam width and the rules of beam.py."""

    k: int
    eos: int
    start_id: int
    fill_id: int  # written after a hypothesis' eos
    vocab: int
    penalty: Callable  # length -> normaliser (beam.length_penalty_fn)
    early_stopping: bool | str
    judge_at_limit: bool  # "never" with a penalty that grows with length
    banned: Tensor | None
    force_eos: bool
    num_return: int


@dataclass
class Finished:
    """A sentence whose search is over: its `num_return` best hypotheses, best first."""

    owner: int  # the caller's number for the sentence
    sequences: Tensor  # (num_return, 1 + longest): start token first, fill_id after eos
    scores: Tensor  # (num_return,) length-penalised log-probabilities


class BeamGroup:
    """The running state of the sentences searched together.

    Rows (the cache, `tokens`, `last`) are sentence-major, `beams` per sentence; the source mask,
    the cross-attention keys/values and every per-sentence tensor have one row per sentence.
    Column j of a row of `tokens` holds that hypothesis' token j (0: the start token).
    """

    def __init__(self, model: nn.Module, rule: SearchRule, src_ids: Tensor, src_mask: Tensor | None,
                 limits: Tensor, owners: Tensor) -> None:
        n, device = src_ids.shape[0], src_ids.device
        width = int(limits.max()) + 1
        self.rule = rule
        self.owners = owners
        self.limit = limits
        self.t = torch.ones(n, dtype=torch.long, device=device)  # the step each sentence takes next
        self.beams = 1
        self.tokens = torch.full((n, width), rule.fill_id, dtype=torch.long, device=device)
        self.tokens[:, 0] = rule.start_id
        self.last = self.tokens[:, :1].clone()  # each row's newest token, the next step's input
        self.run_scores = torch.zeros((n, 1), device=device)
        self.fin_tokens = torch.full((n, rule.k, width), rule.fill_id, dtype=torch.long, device=device)
        self.fin_scores = torch.full((n, rule.k), float("-inf"), device=device)  # -inf = empty slot
        self.fin_lengths = torch.zeros((n, rule.k), dtype=torch.long, device=device)
        self.src_mask = src_mask
        self.tgt_mask: Tensor | None = None  # (rows, cached): None while no row is left-padded
        self.memory: Tensor | None = model.encode(src_ids, src_mask)  # read by the first step only
        self.cache = model.new_cache(width)

    @property
    def size(self) -> int:
        """Sentences still searching."""
        return self.owners.shape[0]

    def prime(self, model: nn.Module) -> None:
        """Ready a group that has not stepped yet to `merge` into a running one (see the module's docstring)."""
        if self.beams != 1 or self.cache.length:
            raise ValueError("prime a group before its first step")
        if self.memory is not None:
            model.cache_memory(self.memory, self.cache)
            self.memory = None
        k = self.rule.k
        self.tokens = self.tokens.repeat_interleave(k, dim=0)
        self.last = self.last.repeat_interleave(k, dim=0)
        self.run_scores = torch.full((self.size, k), float("-inf"), device=self.last.device)
        self.run_scores[:, 0] = 0.0
        self.beams = k

    def _penalties(self, lengths: Tensor) -> Tensor:
        """The length normaliser of each sentence, as beam.py divides by it: a Python float per length."""
        return torch.tensor([self.rule.penalty(length) for length in lengths.tolist()], device=lengths.device)

    @torch.no_grad()
    def step(self, model: nn.Module) -> list[Finished]:
        """One decoding step for every sentence; returns those it finished (they leave the group)."""
        rule, k, t, beams = self.rule, self.rule.k, self.t, self.beams
        if self.tgt_mask is not None:
            self.tgt_mask = torch.cat([self.tgt_mask, self.tgt_mask.new_ones((self.tgt_mask.shape[0], 1))], dim=1)
        logits = model.decode_step(self.last, self.memory, self.cache, self.src_mask, self.tgt_mask)[:, -1, :]
        self.memory = None
        logp = F.log_softmax(logits.float(), dim=-1)
        if rule.banned is not None:
            logp.index_fill_(1, rule.banned, float("-inf"))
        at_limit = self.limit == t  # (n,)
        any_at_limit = bool(at_limit.any())
        if rule.force_eos and any_at_limit:
            rows = at_limit.repeat_interleave(beams)
            logp[rows] = float("-inf")
            logp[rows, rule.eos] = 0.0
        cand_scores, cand_index = best_continuations(logp, self.run_scores, 2 * k)  # (n, 2k), best first
        cand_beam = torch.div(cand_index, rule.vocab, rounding_mode="floor")
        cand_token = cand_index - cand_beam * rule.vocab
        ends = cand_token == rule.eos
        if any_at_limit:
            ends |= at_limit[:, None]
        penalties = self._penalties(t)

        # 1. Candidates that end, among the top k, join the finished hypotheses.
        first_k = torch.arange(2 * k, device=logp.device) < k
        new_finished = ends & first_k & torch.isfinite(cand_scores)
        with_new = new_finished.any(dim=1)
        if bool(with_new.any()):
            local = with_new.nonzero().squeeze(1)
            scores = (cand_scores[local, :k] / penalties[local, None]).masked_fill(~new_finished[local, :k], float("-inf"))
            rows = local[:, None] * beams + cand_beam[local, :k]  # (m, k) rows the candidates extend
            candidates = self.tokens[rows]  # (m, k, W)
            candidates.scatter_(2, t[local, None, None].expand(-1, k, 1), cand_token[local, :k, None])
            best_scores, best = torch.cat([self.fin_scores[local], scores], dim=1).topk(k, dim=1)
            self.fin_scores[local] = best_scores
            merged = torch.cat([self.fin_tokens[local], candidates], dim=1)
            self.fin_tokens[local] = merged.gather(1, best[:, :, None].expand(-1, -1, merged.shape[2]))
            lengths = torch.cat([self.fin_lengths[local], t[local, None].expand(-1, k)], dim=1)
            self.fin_lengths[local] = lengths.gather(1, best)

        # 2. The best k candidates that do not end run on.
        chosen = cand_scores.masked_fill(ends, float("-inf")).topk(k, dim=1).indices
        run_scores = cand_scores.gather(1, chosen)
        next_beam = cand_beam.gather(1, chosen)
        next_token = cand_token.gather(1, chosen)

        # 3. Which sentences are done.
        worst = self.fin_scores.min(dim=1).values  # -inf until all k slots are filled
        full = torch.isfinite(worst)
        if rule.early_stopping is True:
            done = full
        else:
            limit_penalty = rule.penalty(self.limit) if rule.judge_at_limit else penalties
            done = full & (run_scores[:, 0] / limit_penalty <= worst)
        if any_at_limit:
            done |= at_limit
        finished = self._finish(done.nonzero().squeeze(1).tolist()) if bool(done.any()) else []

        # 4. Keep the chosen beams of the sentences left, in their new order.
        keep = (~done).nonzero().squeeze(1)
        self._advance(keep, next_beam[keep], next_token[keep], run_scores[keep], dropped=bool(done.any()))
        return finished

    def _finish(self, sentences: list[int]) -> list[Finished]:
        n = self.rule.num_return
        out = []
        for i in sentences:
            length = 1 + int(self.fin_lengths[i, :n].max())
            out.append(Finished(int(self.owners[i]), self.fin_tokens[i, :n, :length].clone(), self.fin_scores[i, :n].clone()))
        return out

    def _advance(self, keep: Tensor, next_beam: Tensor, next_token: Tensor, run_scores: Tensor, dropped: bool) -> None:
        k = self.rule.k
        if keep.shape[0] == 0:
            self.owners = keep
            self.cache = None  # type: ignore[assignment]  # the group is over
            return
        rows = (keep[:, None] * self.beams + next_beam).view(-1)
        self.cache.reorder(rows, sentences=keep)
        self.tokens = self.tokens.index_select(0, rows)
        self.tokens.scatter_(1, self.t[keep].repeat_interleave(k)[:, None], next_token.view(-1, 1))
        self.last = next_token.reshape(-1, 1)
        if self.tgt_mask is not None:
            self.tgt_mask = self.tgt_mask.index_select(0, rows)
        self.run_scores, self.beams = run_scores, k
        self.t = self.t[keep] + 1
        if dropped:
            if self.src_mask is not None:
                self.src_mask = self.src_mask.index_select(0, keep)  # one per sentence, as its memory
            self.owners, self.limit = self.owners[keep], self.limit[keep]
            self.fin_tokens, self.fin_scores, self.fin_lengths = self.fin_tokens[keep], self.fin_scores[keep], self.fin_lengths[keep]
            self._drop_unread_positions()

    def keep_sentences(self, keep: Tensor) -> None:
        """Go on with sentences `keep` (ascending) only: the others are no longer wanted (a client left)."""
        if keep.shape[0] == self.size:
            return
        if keep.shape[0] == 0:
            self.owners, self.cache = keep, None  # type: ignore[assignment]
            return
        rows = (keep[:, None] * self.beams + torch.arange(self.beams, device=keep.device)).view(-1)
        self.cache.reorder(rows, sentences=keep)
        self.tokens, self.last = self.tokens.index_select(0, rows), self.last.index_select(0, rows)
        if self.tgt_mask is not None:
            self.tgt_mask = self.tgt_mask.index_select(0, rows)
        if self.src_mask is not None:
            self.src_mask = self.src_mask.index_select(0, keep)
        for name in ("owners", "limit", "t", "run_scores", "fin_tokens", "fin_scores", "fin_lengths"):
            setattr(self, name, getattr(self, name)[keep])
        self._drop_unread_positions()

    def _drop_unread_positions(self) -> None:
        """Forget the cached positions no row reads any more (the padding left by sentences that ended)."""
        if self.tgt_mask is None:
            return
        unread = int(self.tgt_mask.any(dim=0).long().argmax())  # the first position some row reads
        if unread:
            self.cache.drop_front(unread)
            self.tgt_mask = self.tgt_mask[:, unread:]
        if bool(self.tgt_mask.all()):
            self.tgt_mask = None

    def merge(self, other: BeamGroup) -> None:
        """Take in the sentences of `other` (after its first step, or primed), to search on with these."""
        if other.size == 0:
            return
        if other.rule is not self.rule or self.beams != other.beams or other.memory is not None:
            raise ValueError("only groups with the same search settings (one SearchRule), past their first step or primed, merge")
        rows_a, rows_b = self.last.shape[0], other.last.shape[0]
        length = max(self.cache.length, other.cache.length)
        device = self.last.device
        self.tgt_mask = torch.cat([_left_padded(self.tgt_mask, rows_a, self.cache.length, length, device),
                                   _left_padded(other.tgt_mask, rows_b, other.cache.length, length, device)], dim=0)
        if bool(self.tgt_mask.all()):
            self.tgt_mask = None
        width_a = self.src_width()
        width_b = other.src_width()
        if self.src_mask is not None or other.src_mask is not None or width_a != width_b:
            width = max(width_a, width_b)
            self.src_mask = torch.cat([_right_padded(self.src_mask, self.size, width_a, width, device),
                                       _right_padded(other.src_mask, other.size, width_b, width, device)], dim=0)
        self.cache.join(other.cache, rows_b)
        width = max(self.tokens.shape[1], other.tokens.shape[1])
        self.tokens = torch.cat([_widen(self.tokens, width, self.rule.fill_id), _widen(other.tokens, width, self.rule.fill_id)])
        self.fin_tokens = torch.cat([_widen(self.fin_tokens, width, self.rule.fill_id),
                                     _widen(other.fin_tokens, width, self.rule.fill_id)])
        for name in ("owners", "limit", "t", "last", "run_scores", "fin_scores", "fin_lengths"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))

    def src_width(self) -> int:
        """Source positions of the cached cross-attention keys (0 for a decoder without cross-attention)."""
        cross = self.cache.layers[0].cross_k
        return 0 if cross is None else cross.shape[2]


def _left_padded(mask: Tensor | None, rows: int, length: int, width: int, device: torch.device) -> Tensor:
    mask = mask if mask is not None else torch.ones((rows, length), dtype=torch.bool, device=device)
    return F.pad(mask.bool(), (width - length, 0), value=False)


def _right_padded(mask: Tensor | None, rows: int, length: int, width: int, device: torch.device) -> Tensor:
    mask = mask if mask is not None else torch.ones((rows, length), dtype=torch.bool, device=device)
    return F.pad(mask.bool(), (0, width - length), value=False)


def _widen(x: Tensor, width: int, fill: int) -> Tensor:
    return F.pad(x, (0, width - x.shape[-1]), value=fill)


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
