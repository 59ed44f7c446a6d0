"""Batches of sentence pairs by token count, as fairseq's `max_tokens` makes them.

Sentences vary in length, so a fixed number of sentences per batch wastes compute on padding and
gives batches of very different sizes. Instead:

1. each epoch the pairs are shuffled (seeded by seed and epoch) and cut into large chunks;
2. within a chunk they are sorted by length (the longer side, then target, then source), so
   neighbours have similar lengths on both sides and need little padding (on Multi30k, ~96% of
   the padded positions of either side are real tokens);
3. consecutive sorted pairs are packed into a batch while `sentences x longest side` (padding
   included) stays within `max_tokens`;
4. the batches of the epoch are shuffled, so the model does not see short sentences first.

The plan of an epoch is a pure function of (seed, epoch), so the sampler's state is three
integers and a resumed run continues with exactly the batches it would have had. Under DDP every
rank plans the same epoch and takes every world_size-th batch.

Teacher forcing (`make_batch`): the decoder reads [bos] + y and is trained to predict y + [eos],
so position t learns the token after the first t target tokens; the source gets an [eos] so the
encoder sees where it ends. Padding is `pad_id` in the inputs and -100 in the labels (ignored by
the loss); `src_mask` (True = real token) is left out when a batch has no source padding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nanoformer.errors import UserError
from nanoformer.layers.losses import IGNORE_INDEX

Batch = dict[str, Tensor]


def pad(seqs: Sequence[Sequence[int]], pad_id: int, fill: int | None = None) -> tuple[Tensor, Tensor]:
    """Right-pad lists of ids into (B, T) int64 ids and a (B, T) bool mask, True = real token."""
    length = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), length), pad_id if fill is None else fill, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.bool)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = True
    return ids, mask


def make_batch(src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]], pad_id: int, bos_id: int, eos_id: int) -> Batch:
    """A teacher-forcing batch: src_ids (+ src_mask), tgt_in = [bos] + y, labels = y + [eos]."""
    src_ids, src_mask = pad([list(s) + [eos_id] for s in src], pad_id)
    tgt_in, _ = pad([[bos_id] + list(t) for t in tgt], pad_id)
    labels, _ = pad([list(t) + [eos_id] for t in tgt], pad_id, fill=IGNORE_INDEX)
    batch = {"src_ids": src_ids, "tgt_in": tgt_in, "labels": labels}
    if not bool(src_mask.all()):
        batch["src_mask"] = src_mask
    return batch


class TokenBatchSampler:
    """Plans batches of example indices under a token budget; resumable and deterministic.

    `src_lengths` / `tgt_lengths` are the lengths the batch will have per example (specials
    included). A batch's cost is its number of examples times its longest side. When the text
    is segmented anew each epoch (BPE-dropout), `epoch_lengths(epoch)` gives that epoch's lengths.
    """

    def __init__(
        self,
        src_lengths: Sequence[int],
        tgt_lengths: Sequence[int],
        max_tokens: int,
        seed: int = 0,
        chunk_size: int = 16384,
        rank: int = 0,
        world_size: int = 1,
        epoch_lengths: Callable[[int], tuple[Sequence[int], Sequence[int]]] | None = None,
    ) -> None:
        self.epoch_lengths = epoch_lengths
        self.src_lengths = np.asarray(src_lengths, dtype=np.int64)
        self.tgt_lengths = np.asarray(tgt_lengths, dtype=np.int64)
        if len(self.src_lengths) != len(self.tgt_lengths) or len(self.src_lengths) == 0:
            raise UserError("TokenBatchSampler needs one source and one target length per example, and at least one example")
        longest = int(np.maximum(self.src_lengths, self.tgt_lengths).max())
        if longest > max_tokens:
            raise UserError(f"an example of {longest} tokens does not fit in a batch of max_tokens = {max_tokens}; "
                            "raise max_tokens or lower max_length")
        self.max_tokens = max_tokens
        self.seed = seed
        self.chunk_size = chunk_size
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.position = 0  # batches of this rank already served in this epoch
        self._plan: list[np.ndarray] | None = None
        self._plan_epoch = -1

    def __len__(self) -> int:
        return len(self.rank_batches(self.epoch))

    def plan(self, epoch: int) -> list[np.ndarray]:
        """All batches of an epoch (every rank's), in the order they are served."""
        src_lengths, tgt_lengths = self.src_lengths, self.tgt_lengths
        if self.epoch_lengths is not None:
            src_lengths, tgt_lengths = (np.asarray(x, dtype=np.int64) for x in self.epoch_lengths(epoch))
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(src_lengths))
        batches: list[np.ndarray] = []
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            src, tgt = src_lengths[chunk], tgt_lengths[chunk]
            chunk = chunk[np.lexsort((src, tgt, np.maximum(src, tgt)))]  # by longest side, then target, source
            batches.extend(pack(chunk, np.maximum(src_lengths, tgt_lengths)[chunk], self.max_tokens))
        return [batches[i] for i in rng.permutation(len(batches))]

    def rank_batches(self, epoch: int) -> list[np.ndarray]:
        if self._plan_epoch != epoch:
            batches = self.plan(epoch)
            usable = len(batches) - len(batches) % self.world_size if len(batches) >= self.world_size else len(batches)
            self._plan = batches[:usable][self.rank :: self.world_size] or batches[:1]
            self._plan_epoch = epoch
        return self._plan

    def next(self) -> np.ndarray:
        """The next batch of indices, moving to a new epoch when this one is used up."""
        batches = self.rank_batches(self.epoch)
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
            batches = self.rank_batches(self.epoch)
        batch = batches[self.position]
        self.position += 1
        return batch

    def __iter__(self) -> Iterator[np.ndarray]:
        """One pass over the current epoch's remaining batches."""
        epoch = self.epoch
        while self.epoch == epoch and self.position < len(self.rank_batches(epoch)):
            yield self.next()

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "num_examples": len(self.src_lengths), "max_tokens": self.max_tokens}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["num_examples"]) != len(self.src_lengths) or int(state["max_tokens"]) != self.max_tokens:
            raise UserError(
                f"the saved batching state is for {state['num_examples']} training pairs in batches of "
                f"{state['max_tokens']} tokens, but this run has {len(self.src_lengths)} pairs and max_tokens = "
                f"{self.max_tokens}; resume with the same data, tokenizer and [data] settings"
            )
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])


def pack(sorted_indices: np.ndarray, sizes: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Cut consecutive indices into batches with len(batch) x max(size) <= max_tokens."""
    batches, start, longest = [], 0, 0
    for i in range(len(sorted_indices)):
        candidate = max(longest, int(sizes[i]))
        if (i - start + 1) * candidate > max_tokens and i > start:
            batches.append(sorted_indices[start:i])
            start, candidate = i, int(sizes[i])
        longest = candidate
    if start < len(sorted_indices):
        batches.append(sorted_indices[start:])
    return batches


def fixed_batches(src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_tokens: int, seed: int = 0) -> list[np.ndarray]:
    """Batches for evaluation: packed by length, then put in a fixed shuffled order, so that the
    first few batches are a fair sample of the whole set (the trainer may evaluate only some)."""
    src, tgt = np.asarray(src_lengths), np.asarray(tgt_lengths)
    order = np.lexsort((src, tgt, np.maximum(src, tgt)))
    batches = pack(order, np.maximum(src, tgt)[order], max_tokens)
    rng = np.random.default_rng([seed, 1_000_003])
    return [batches[i] for i in rng.permutation(len(batches))]


class TranslationBatches:
    """The trainer's batch source for translation: token-count batches of encoded pairs.

    `train` and `val` are (source ids, target ids) lists without specials; the sampler sees
    lengths with the [eos] / [bos] each side gets. `resegment(epoch)`, when given, returns the
    training pairs' ids for that epoch (BPE-dropout; see `data/bpe_dropout.py`).
    """

    def __init__(
        self,
        train: tuple[list[list[int]], list[list[int]]],
        val: tuple[list[list[int]], list[list[int]]],
        max_tokens: int,
        pad_id: int,
        bos_id: int,
        eos_id: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        resegment: Callable[[int], tuple[list[list[int]], list[list[int]]]] | None = None,
    ) -> None:
        self.splits = {"train": train, "val": val}
        self.ids = (pad_id, bos_id, eos_id)
        self.resegment = resegment
        self._train_epoch = -1
        lengths = {name: _lengths(src, tgt) for name, (src, tgt) in self.splits.items()}
        epoch_lengths = (lambda epoch: _lengths(*self.train_pairs(epoch))) if resegment else None
        self.sampler = TokenBatchSampler(*lengths["train"], max_tokens, seed=seed, rank=rank, world_size=world_size,
                                         epoch_lengths=epoch_lengths)
        self.val_batches = fixed_batches(*lengths["val"], max_tokens, seed=seed)

    def train_pairs(self, epoch: int) -> tuple[list[list[int]], list[list[int]]]:
        """The training ids of `epoch` (the same every epoch without `resegment`)."""
        if self.resegment is not None and self._train_epoch != epoch:
            self.splits["train"], self._train_epoch = self.resegment(epoch), epoch
        return self.splits["train"]

    def _batch(self, split: str, indices: np.ndarray) -> Batch:
        src, tgt = self.splits[split]
        return make_batch([src[i] for i in indices], [tgt[i] for i in indices], *self.ids)

    def next_batch(self, split: str) -> Batch:
        if split != "train":
            raise UserError(f"training batches come from the train split, not {split!r}")
        indices = self.sampler.next()
        self.train_pairs(self.sampler.epoch)
        return self._batch("train", indices)

    def eval_batches(self, split: str) -> Iterator[Batch]:
        if split not in ("val", "validation"):
            raise UserError(f"evaluation batches come from the validation split, not {split!r}")
        for indices in self.val_batches:
            yield self._batch("val", indices)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)

    def tokens_per_batch(self, batch: Batch) -> int:
        """Target tokens the loss is computed on (padding excluded)."""
        return int((batch["labels"] != IGNORE_INDEX).sum())


def _lengths(src: Sequence[Sequence[int]], tgt: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Per-pair lengths as batched: the source gets an [eos], the target a [bos] (or [eos])."""
    return [len(s) + 1 for s in src], [len(t) + 1 for t in tgt]
