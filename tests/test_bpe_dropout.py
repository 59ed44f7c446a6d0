"""BPE-dropout: lossless, seeded segmentations that fall back to the tokenizer's own."""

from __future__ import annotations

import numpy as np
import pytest

from nanoformer.data.batching import TranslationBatches
from nanoformer.data.bpe_dropout import BpeDropoutText, BpeMerges
from nanoformer.data.parallel import TranslationDataConfig
from nanoformer.errors import UserError
from nanoformer.tokenizer import Tokenizer

TEXTS = [
    "Ein Mann fährt Fahrrad auf einer Straße.",
    "Zwei junge Männer sind im Freien in der Nähe vieler Büsche.",
    "Eine Frau   mit einem großen Hut liest ein Buch!",
    "나는 학교에 간다",
    "Kinder spielen im Park, während ihre Eltern zusehen.",
    "",
    "Der Hund läuft über die Wiese, der Hund bellt.",
] * 8


@pytest.fixture(scope="module", params=[True, False], ids=["byte-level", "sentencepiece-style"])
def tokenizer(request) -> Tokenizer:
    return Tokenizer.train_bpe(texts=TEXTS, vocab_size=400, byte_level=request.param)


def test_without_dropout_the_merges_reproduce_the_tokenizer(tokenizer):
    merges = BpeMerges(tokenizer)
    unseen = ["Fahrräder und Straßenbahnen", "학교 간다!", "x  y\tz"]
    for text in TEXTS + unseen:
        rebuilt = [t for word in merges.words(text) for t in merges.segment(word)]
        assert rebuilt == tokenizer.encode(text), text


def test_every_epoch_is_lossless_seeded_and_different(tokenizer):
    ids = tokenizer.encode_batch(TEXTS)
    text = BpeDropoutText(TEXTS, ids, tokenizer, p=0.3, max_length=1000, variants=8, seed=5)
    assert not text.fixed.any()
    epochs = [text.epoch(e) for e in range(3)]
    for segmented in epochs:
        assert [tokenizer.decode(s) for s in segmented] == TEXTS
        assert all(len(s) >= len(r) for s, r in zip(segmented, ids))  # dropped merges only split
    assert epochs[0] != epochs[1] != epochs[2]
    assert sum(map(len, epochs[0])) > sum(map(len, ids))
    again = BpeDropoutText(TEXTS, ids, tokenizer, p=0.3, max_length=1000, variants=8, seed=5)
    assert again.epoch(1) == epochs[1]
    assert BpeDropoutText(TEXTS, ids, tokenizer, p=0.3, max_length=1000, variants=8, seed=6).epoch(1) != epochs[1]
    assert BpeDropoutText(TEXTS, ids, tokenizer, p=0.0, max_length=1000).epoch(3) == ids


def test_long_draws_and_unreproducible_sentences_keep_the_regular_ids(tokenizer):
    ids = tokenizer.encode_batch(TEXTS)
    cap = max(map(len, ids))
    text = BpeDropoutText(TEXTS, ids, tokenizer, p=0.5, max_length=cap, variants=4, seed=0)
    segmented = text.epoch(0)
    assert all(len(s) <= cap for s in segmented)
    assert any(s == r and len(r) == cap for s, r in zip(segmented, ids))
    wrong = [list(r) for r in ids]
    wrong[0] = wrong[0][::-1]  # ids this module cannot rebuild: that sentence is left alone
    text = BpeDropoutText(TEXTS, wrong, tokenizer, p=0.5, max_length=1000, variants=4, seed=0)
    assert text.fixed.tolist() == [i == 0 for i in range(len(TEXTS))]
    assert all(text.epoch(e)[0] == wrong[0] for e in range(3))


def test_translation_batches_resegment_each_epoch_and_resume_exactly(tokenizer):
    src = tokenizer.encode_batch(TEXTS)
    tgt = [list(reversed(s)) for s in src]
    dropout = BpeDropoutText(TEXTS, src, tokenizer, p=0.3, max_length=1000, variants=8, seed=1)
    calls = []

    def resegment(epoch):
        calls.append(epoch)
        return dropout.epoch(epoch), tgt

    def make():
        return TranslationBatches((src, tgt), (src[:4], tgt[:4]), max_tokens=120, pad_id=0, bos_id=2, eos_id=3,
                                  seed=0, resegment=resegment)

    a = make()
    n = len(a.sampler)
    first = [a.next_batch("train") for _ in range(n)]
    state = a.state_dict()
    later = [a.next_batch("train") for _ in range(3)]
    assert a.sampler.epoch == 1 and calls[-1] == 1
    seen = sorted(int(i) for p in a.sampler.rank_batches(0) for i in p)
    assert seen == list(range(len(TEXTS)))
    epoch0 = dropout.epoch(0)
    for batch in first:  # every source row is one of epoch 0's segmentations, then [eos] and padding
        for row in batch["src_ids"].tolist():
            real = row[: row.index(3)] if 3 in row else row
            assert real in epoch0
    b = make()
    b.load_state_dict(state)
    for x, y in zip(later, [b.next_batch("train") for _ in range(3)]):
        assert all(np.array_equal(x[k], y[k]) for k in x)


def test_config_checks_the_probability_and_the_tokenizer():
    with pytest.raises(UserError, match="bpe_dropout = 1.5"):
        TranslationDataConfig(name="multi30k", bpe_dropout=1.5)
    with pytest.raises(UserError, match="needs tokenizer = \"bpe\""):
        TranslationDataConfig(name="multi30k", bpe_dropout=0.1, tokenizer="unigram")
    unigram = Tokenizer.train_unigram(texts=TEXTS, vocab_size=500)
    with pytest.raises(UserError, match="needs a BPE tokenizer"):
        BpeMerges(unigram)

