"""Packing text units into model-length sequences, once per corpus, cached.

Consecutive units are packed into sequences of at most `max_length` tokens, [CLS] and [SEP]
included, so little is spent on padding; a unit longer than that is cut into pieces. With
`pairs`, a sequence of two or more units is cut at a unit boundary into segments A and B
("[CLS] A [SEP] B [SEP]"), so the segment embeddings are trained for sentence-pair tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PackedSequences:
    """Sequences without their special tokens: `tokens[starts[i]:starts[i+1]]` is sequence i,
    segment B begins at offset `cuts[i]` of it (-1: one segment)."""

    tokens: np.ndarray
    starts: np.ndarray
    cuts: np.ndarray

    def __len__(self) -> int:
        return len(self.starts) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.starts[-1])


def pack_units(units: list[np.ndarray], max_length: int, pairs: bool, rng: np.random.Generator) -> PackedSequences:
    """Greedily pack consecutive units into sequences that fit `max_length` with their specials."""
    budget = max_length - (3 if pairs else 2)
    pieces: list[np.ndarray] = []
    starts, cuts = [0], []
    group: list[np.ndarray] = []
    used = 0

    def flush() -> None:
        nonlocal group, used
        if not group:
            return
        cut = -1
        if pairs and len(group) >= 2:
            k = int(rng.integers(1, len(group)))
            cut = sum(len(u) for u in group[:k])
        pieces.extend(group)
        starts.append(starts[-1] + used)
        cuts.append(cut)
        group, used = [], 0

    for unit in units:
        if len(unit) == 0:
            continue
        if len(unit) > budget:  # too long for one sequence: its own pieces
            flush()
            for i in range(0, len(unit), budget):
                group, used = [unit[i:i + budget]], len(unit[i:i + budget])
                flush()
            continue
        if used + len(unit) > budget:
            flush()
        group.append(unit)
        used += len(unit)
    flush()
    tokens = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, dtype=np.int32)
    return PackedSequences(tokens, np.asarray(starts, dtype=np.int64), np.asarray(cuts, dtype=np.int64))
