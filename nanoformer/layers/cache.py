"""Key/value cache for incremental decoding.

Generating token t must not recompute the keys and values of tokens 0..t-1. Each decoder layer
keeps them in buffers allocated once for the whole generation and writes each step's new
keys/values in place (no `torch.cat` per step: that copies the whole past every step). The
cross-attention keys/values of the encoder memory never change during decoding, so they are
computed once per source sentence and kept here too.

Beam search reorders the batch dimension after each step (`reorder`), and drops finished
sentences the same way (an index tensor with fewer rows).
"""

from __future__ import annotations

import torch
from torch import Tensor


class LayerCache:
    """One layer's self-attention buffers (B, H, capacity, d_head) and its cross-attention K/V."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0
        self.cross_k: Tensor | None = None
        self.cross_v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write new keys/values (B, H, T, d) after the cached ones; return views of all so far."""
        new_length = self.length + k.shape[2]
        if self.k is None:
            shape = (k.shape[0], k.shape[1], max(self.capacity, new_length), k.shape[3])
            self.k = k.new_empty(shape)
            self.v = v.new_empty(shape)
        elif new_length > self.k.shape[2]:
            # Rare: generation ran past the planned capacity. Grow geometrically, so appends stay
            # amortised O(1) per token.
            grow = max(new_length, 2 * self.k.shape[2]) - self.k.shape[2]
            pad = (0, 0, 0, grow)
            self.k = torch.nn.functional.pad(self.k, pad)
            self.v = torch.nn.functional.pad(self.v, pad)
        self.k[:, :, self.length : new_length] = k
        self.v[:, :, self.length : new_length] = v
        self.length = new_length
        return self.k[:, :, :new_length], self.v[:, :, :new_length]

    def reorder(self, indices: Tensor) -> None:
        """Keep batch rows `indices`, in that order (beam search; dropping finished rows)."""
        for name in ("k", "v", "cross_k", "cross_v"):
            tensor = getattr(self, name)
            if tensor is not None:
                setattr(self, name, tensor.index_select(0, indices))

    def trim(self, length: int) -> None:
        """Forget positions from `length` on (e.g. to rewind a prompt)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"trim length must be in [0, {self.length}], got {length}")
        self.length = length


class KVCache:
    """The caches of every layer of one decoder stack."""

    def __init__(self, n_layers: int, capacity: int) -> None:
        self.layers = [LayerCache(capacity) for _ in range(n_layers)]

    @property
    def length(self) -> int:
        """Number of positions already cached (the offset of the next token)."""
        return self.layers[0].length

    def reorder(self, indices: Tensor) -> None:
        for layer in self.layers:
            layer.reorder(indices)

    def trim(self, length: int) -> None:
        for layer in self.layers:
            layer.trim(length)
