"""Key/value cache for incremental decoding.

Generating token t must not recompute the keys and values of tokens 0..t-1. Each decoder layer
keeps them in buffers allocated once for the whole generation and writes each step's new
keys/values in place (no `torch.cat` per step: that copies the whole past every step). The
cross-attention keys/values of the encoder memory never change during decoding, so they are
computed once per source sentence and kept here too.

Beam search reorders the batch dimension after each step (`reorder`), and drops finished
sentences the same way (an index tensor with fewer rows). It keeps the cross-attention K/V once
per source sentence rather than once per beam (the beams of a sentence share its encoder memory;
kernels/grouped_attention.py), so those follow the sentences, not the beams.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class LayerCache:
    """One layer's self-attention keys and values in one buffer (B, 2, H, capacity, d_head),
    and its cross-attention K/V. Keys and values share a buffer, batch first, so that beam
    search reorders one contiguous block per row."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.kv: Tensor | None = None
        self._spare: Tensor | None = None  # the other buffer of `reorder`
        self.length = 0
        self.cross_k: Tensor | None = None
        self.cross_v: Tensor | None = None

    @property
    def k(self) -> Tensor | None:
        return None if self.kv is None else self.kv[:, 0]

    @property
    def v(self) -> Tensor | None:
        return None if self.kv is None else self.kv[:, 1]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write new keys and values (B, H, T, d) after the cached ones; return views of all so far."""
        new_length = self.length + k.shape[2]
        if self.kv is None:
            batch, heads, _, d_head = k.shape
            self.kv = k.new_empty((batch, 2, heads, max(self.capacity, new_length), d_head))
        elif new_length > self.kv.shape[3]:
            # Rare: generation ran past the planned capacity. Grow geometrically, so appends stay
            # amortised O(1) per token.
            grow = max(new_length, 2 * self.kv.shape[3]) - self.kv.shape[3]
            self.kv = torch.nn.functional.pad(self.kv, (0, 0, 0, grow))
        new = self.kv.narrow(3, self.length, k.shape[2])
        new.select(1, 0).copy_(k)
        new.select(1, 1).copy_(v)
        self.length = new_length
        return self.kv.narrow(3, 0, new_length).unbind(1)

    def cross_kv(self, memory: Tensor | None, project: Callable[[Tensor], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """The cross-attention keys and values: `project(memory)` on the first call, kept for the rest.

        The encoder memory does not change while the target grows, so its projection is computed
        once per source sentence; later calls may pass memory=None.
        """
        if self.cross_k is None or self.cross_v is None:
            if memory is None:
                raise ValueError("cross-attention needs `memory` (the encoder output) on its first call")
            self.cross_k, self.cross_v = project(memory)
        return self.cross_k, self.cross_v

    def reorder(self, indices: Tensor, sentences: Tensor | None = None) -> None:
        """Keep batch rows `indices`, in that order (beam search; dropping finished rows).

        The cross-attention K/V follow the same rows, or, when given, `sentences`: the ascending
        indices of the source sentences kept, for K/V stored once per sentence (beam search). An
        unchanged count then means every sentence stayed, and nothing moves.

        Only the filled positions are copied (the buffer is sized for the whole generation, so
        copying all of it would move about twice the data on average), into a second buffer kept
        from the previous reorder: beam search reorders after every step, and the two buffers
        take turns. Views of keys/values taken before a reorder are therefore not kept valid.
        """
        if self.kv is not None:
            rows = indices.shape[0]
            spare = self._spare
            if spare is None or spare.shape[0] < rows or spare.shape[1:] != self.kv.shape[1:]:
                spare = self.kv.new_empty((rows, *self.kv.shape[1:]))
            target = spare[:rows]
            filled = self.length
            torch.index_select(self.kv[:, :, :, :filled], 0, indices, out=target[:, :, :, :filled])
            self._spare, self.kv = self.kv, target
        if self.cross_k is None or (sentences is not None and sentences.shape[0] == self.cross_k.shape[0]):
            return  # no cross-attention, or every sentence stayed
        cross = indices if sentences is None else sentences
        self.cross_k = self.cross_k.index_select(0, cross)
        if self.cross_v is not None:
            self.cross_v = self.cross_v.index_select(0, cross)

    def join(self, other: LayerCache, other_rows: int | None = None) -> None:
        """Append the rows of `other` after these (continuous batching, generation/beam_group.py).

        Both sides' positions end at the same column: the shorter side's first columns hold
        zeros, which the caller masks. `other` may have cached no position yet (sentences that
        join before their first step); `other_rows` then says how many rows it has. Cross-attention
        K/V are padded with zeros along the source axis to the longer of the two, masked by the
        caller's source mask.
        """
        length = max(self.length, other.length)
        rows_b = other.kv.shape[0] if other.kv is not None else (other_rows or 0)
        if self.kv is not None and rows_b:
            a = self.kv
            capacity = max(a.shape[3], other.kv.shape[3] if other.kv is not None else other.capacity, length)
            kv = a.new_zeros((a.shape[0] + rows_b, *a.shape[1:3], capacity, a.shape[4]))
            kv[: a.shape[0], :, :, length - self.length : length] = a[:, :, :, : self.length]
            if other.kv is not None:
                kv[a.shape[0] :, :, :, length - other.length : length] = other.kv[:, :, :, : other.length]
            self.kv, self._spare = kv, None
        self.length = length
        if self.cross_k is not None and other.cross_k is not None:
            width = max(self.cross_k.shape[2], other.cross_k.shape[2])
            self.cross_k, self.cross_v = (
                torch.cat([_pad_positions(mine, width), _pad_positions(theirs, width)])
                for mine, theirs in ((self.cross_k, other.cross_k), (self.cross_v, other.cross_v))
            )

    def drop_front(self, count: int) -> None:
        """Forget the first `count` positions of every row: columns no row reads any more."""
        if not 0 <= count <= self.length:
            raise ValueError(f"drop_front count must be in [0, {self.length}], got {count}")
        if self.kv is not None and count:
            kept = self.kv[:, :, :, count : self.length].clone()
            self.kv[:, :, :, : self.length - count] = kept
        self.length -= count

    def trim(self, length: int) -> None:
        """Forget positions from `length` on (e.g. to rewind a prompt)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"trim length must be in [0, {self.length}], got {length}")
        self.length = length


def _pad_positions(x: Tensor, width: int) -> Tensor:
    """Cross-attention keys or values (B, H, S, d) with zeros up to `width` source positions."""
    return torch.nn.functional.pad(x, (0, 0, 0, width - x.shape[2]))


class KVCache:
    """The caches of every layer of one decoder stack."""

    def __init__(self, n_layers: int, capacity: int) -> None:
        self.layers = [LayerCache(capacity) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Number of positions already cached (the offset of the next token)."""
        return self.layers[0].length

    def reorder(self, indices: Tensor, sentences: Tensor | None = None) -> None:
        """`LayerCache.reorder` on every layer."""
        for layer in self.layers:
            layer.reorder(indices, sentences)

    def trim(self, length: int) -> None:
        for layer in self.layers:
            layer.trim(length)

    def join(self, other: KVCache, other_rows: int | None = None) -> None:
        """`LayerCache.join` on every layer."""
        for mine, theirs in zip(self.layers, other.layers):
            mine.join(theirs, other_rows)

    def drop_front(self, count: int) -> None:
        for layer in self.layers:
            layer.drop_front(count)
