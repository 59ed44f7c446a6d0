"""BERT's masking, drawn afresh for every batch (RoBERTa's dynamic masking)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from nanoformer.errors import UserError
from nanoformer.layers.losses import IGNORE_INDEX

if TYPE_CHECKING:
    from nanoformer.tokenizer import Tokenizer


class Masker:
    """BERT's masking of a batch of token ids (see the module docstring)."""

    def __init__(self, tokenizer: Tokenizer, mask_prob: float = 0.15, mask_token_prob: float = 0.8,
                 random_token_prob: float = 0.1, whole_word_mask: bool = False) -> None:
        self.mask_prob, self.mask_token_prob, self.random_token_prob = mask_prob, mask_token_prob, random_token_prob
        self.whole_word_mask = whole_word_mask
        self.mask_id = tokenizer.mask_id
        vocab_size = tokenizer.vocab_size
        specials = sorted(set(tokenizer.special_ids().values()))
        self.is_special = np.zeros(vocab_size, dtype=bool)
        self.is_special[specials] = True
        self.random_pool = np.flatnonzero(~self.is_special)
        if len(self.random_pool) == 0:
            raise UserError("the tokenizer has only special tokens; train it on more text")
        self.is_continuation = np.zeros(vocab_size, dtype=bool)
        if whole_word_mask:
            if tokenizer.kind != "wordpiece":
                raise UserError(f"whole-word masking needs a WordPiece tokenizer ('##' pieces); this one is {tokenizer.kind!r}")
            for token, index in tokenizer.hf.get_vocab(with_added_tokens=False).items():
                self.is_continuation[index] = token.startswith("##")

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(masked input ids, labels) for a (B, T) int array; labels are -100 where not selected."""
        special = self.is_special[ids]
        if self.whole_word_mask:
            starts = ~self.is_continuation[ids] | special
            starts[:, 0] = True
            previous_special = np.zeros_like(special)
            previous_special[:, 1:] = special[:, :-1]
            starts |= previous_special  # a piece right after [CLS] / [SEP] starts a word
            word = np.cumsum(starts.reshape(-1)) - 1
            chosen = rng.random(int(word[-1]) + 1) < self.mask_prob
            selected = chosen[word].reshape(ids.shape) & ~special
        else:
            selected = (rng.random(ids.shape) < self.mask_prob) & ~special
        # Every row with text predicts at least one token, so no row is wasted.
        empty = ~selected.any(axis=1) & (~special).any(axis=1)
        for row in np.flatnonzero(empty):
            candidates = np.flatnonzero(~special[row])
            selected[row, candidates[int(rng.integers(len(candidates)))]] = True
        action = rng.random(ids.shape)
        to_mask = selected & (action < self.mask_token_prob)
        to_random = selected & (action >= self.mask_token_prob) & (action < self.mask_token_prob + self.random_token_prob)
        inputs = ids.copy()
        inputs[to_mask] = self.mask_id
        inputs[to_random] = self.random_pool[rng.integers(len(self.random_pool), size=int(to_random.sum()))]
        labels = np.where(selected, ids, IGNORE_INDEX)
        return inputs, labels
