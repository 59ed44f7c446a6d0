"""BPE-dropout (Provilkov et al., 2020): a new segmentation of the training text every epoch.

Plain BPE splits a word the same way every time, so the model only ever sees "Fahrrad" as one
token and never learns what its pieces mean. BPE-dropout skips each applicable merge with
probability p while segmenting, so a word is sometimes cut into smaller pieces of the same
vocabulary. On small corpora this regularises the model (the paper reports up to +2.3 BLEU);
at test time the text is segmented as usual.

Drawing a fresh segmentation of every word occurrence each epoch in Python would cost seconds
per epoch. Instead every distinct word of the corpus is segmented `variants` times once, up
front, and each epoch every occurrence picks one of its word's variants at random (a vectorised
gather). Both draws are seeded, so the text of epoch e is a pure function of (seed, e) and
resumed runs see the same segmentations.

A sentence whose regular segmentation this module cannot reproduce exactly (e.g. text that
contains a special token's spelling) keeps the tokenizer's own ids in every epoch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

import numpy as np

from nanoformer.errors import UserError
from nanoformer.tokenizer import Tokenizer


NO_MERGE = 1 << 62  # rank of a pair that has no merge (or whose merge was dropped)


class BpeMerges:
    """A BPE tokenizer's merge table, applied to one pre-tokenized word with optional dropout."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        spec = json.loads(tokenizer.to_json())
        model = spec["model"]
        if model.get("type") != "BPE":
            raise UserError(f"BPE-dropout needs a BPE tokenizer, but this one is {model.get('type')!r}; "
                            "set [data] tokenizer = \"bpe\" or bpe_dropout = 0")
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
            raise UserError("BPE-dropout supports BPE tokenizers without subword prefixes or suffixes "
                            "(nanoformer's own); set bpe_dropout = 0")
        self.vocab: dict[str, int] = model["vocab"]
        self.unk_id = self.vocab.get(model["unk_token"]) if model.get("unk_token") else None
        self.rank: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(model["merges"]):
            left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
            self.rank.setdefault((left, right), rank)
        self.pre_tokenizer = tokenizer.hf.pre_tokenizer

    def words(self, text: str) -> list[str]:
        """The pre-tokenizer's words (byte-level symbols for a byte-level tokenizer)."""
        return [word for word, _ in self.pre_tokenizer.pre_tokenize_str(text)] if self.pre_tokenizer else [text]

    def segment(self, word: str, p: float = 0.0, rng: random.Random | None = None) -> list[int]:
        """Token ids of one word: repeatedly apply the best-ranked merge among adjacent symbols;
        with p > 0 every candidate merge is dropped with probability p at each step, and the
        word is done when all are dropped (the paper's rule)."""
        symbols = list(word)
        rank_of, draw = self.rank.get, rng.random if p > 0.0 else None
        while len(symbols) > 1:
            ranks = [rank_of(pair, NO_MERGE) for pair in zip(symbols, symbols[1:])]
            if draw is not None:
                ranks = [NO_MERGE if draw() < p else rank for rank in ranks]
            best = min(ranks)
            if best == NO_MERGE:
                break
            where = ranks.index(best)  # the leftmost of equal pairs first, as the tokenizer does
            symbols[where : where + 2] = [symbols[where] + symbols[where + 1]]
        ids = [self.vocab.get(s, self.unk_id) for s in symbols]
        return ids if None not in ids else []


class BpeDropoutText:
    """One side of a training corpus, re-segmented with BPE-dropout for every epoch.

    `ids` are the tokenizer's regular ids of `texts` (what training would use without dropout);
    `max_length` caps a sentence's sampled length (a longer draw keeps its regular ids).
    """

    def __init__(self, texts: Sequence[str], ids: Sequence[Sequence[int]], tokenizer: Tokenizer, p: float,
                 max_length: int, variants: int = 32, seed: int = 0) -> None:
        if not 0.0 <= p < 1.0:
            raise UserError(f"[data] bpe_dropout = {p!r}; expected a probability in [0, 1), e.g. 0.1")
        if len(texts) != len(ids):
            raise ValueError("one list of ids per text")
        self.p, self.variants, self.seed, self.max_length = p, variants, seed, max_length
        self.regular = [list(s) for s in ids]
        merges = BpeMerges(tokenizer)

        word_index: dict[str, int] = {}
        occurrences: list[int] = []
        sentence_words = np.zeros(len(texts), dtype=np.int64)
        for n, text in enumerate(texts):
            words = merges.words(text)
            sentence_words[n] = len(words)
            occurrences.extend(word_index.setdefault(w, len(word_index)) for w in words)
        self.distinct_words = len(word_index)
        self.occurrences = np.asarray(occurrences, dtype=np.int64)
        self.sentence_words = sentence_words

        # Segmentation table: row (word * variants + v) holds the word's v-th draw; `plain` holds
        # each word's regular segmentation ([] if a symbol is not in the vocabulary).
        rng = random.Random(seed)
        pieces: list[list[int]] = []
        plain: list[list[int]] = []
        for word in word_index:
            plain.append(merges.segment(word))
            pieces.extend(merges.segment(word, p, rng) for _ in range(variants))
        self.lengths = np.fromiter((len(s) for s in pieces), dtype=np.int64, count=len(pieces))
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.table = np.fromiter((t for s in pieces for t in s), dtype=np.int64, count=int(self.lengths.sum()))

        # Sentences whose regular ids this module does not reproduce (an unknown symbol, or text
        # the tokenizer treats specially) keep them in every epoch.
        bounds = np.concatenate([[0], np.cumsum(sentence_words)])
        self.fixed = np.array([
            [t for w in occurrences[bounds[n] : bounds[n + 1]] for t in plain[w]] != self.regular[n]
            for n in range(len(texts))
        ], dtype=bool)

    def epoch(self, epoch: int) -> list[list[int]]:
        """The corpus segmented for `epoch`: a pure function of (seed, epoch)."""
        if self.p == 0.0:
            return self.regular
        rng = np.random.default_rng([self.seed, epoch])
        rows = self.occurrences * self.variants + rng.integers(self.variants, size=len(self.occurrences))
        lengths = self.lengths[rows]
        total = int(lengths.sum())
        out_starts = np.cumsum(lengths) - lengths
        flat = self.table[np.repeat(self.starts[rows] - out_starts, lengths) + np.arange(total)]
        word_ends = np.cumsum(lengths)
        sentence_ends = np.cumsum(self.sentence_words)
        token_ends = np.where(sentence_ends > 0, word_ends[np.maximum(sentence_ends - 1, 0)], 0)
        sentences = np.split(flat, token_ends[:-1])
        return [
            regular if fixed or len(sampled) > self.max_length else sampled.tolist()
            for sampled, regular, fixed in zip(sentences, self.regular, self.fixed)
        ]


__all__ = ["BpeDropoutText", "BpeMerges"]
