"""Masked-LM data: packing, BERT's 80/10/10 masking statistics, whole-word masking, special tokens,
determinism and exact resume; fill-mask input encoding; classification files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nanoformer.data.classification import encode_example, label_set, read_examples
from nanoformer.data.fill_mask import encode_masked_text
from nanoformer.data.masking import Masker
from nanoformer.data.mlm import MLMBatches, MLMDataConfig, assemble, build_sequences, sequences_from_config
from nanoformer.data.sequence_packing import pack_units
from nanoformer.data.units import read_units, split_sentences
from nanoformer.errors import UserError
from nanoformer.tokenizer import Tokenizer

WORDS = ("학교 학교에 학교를 학교가 밥 밥을 밥이 먹었다 갔다 좋아한다 나는 그는 우리는 친구는 "
         "the quick brown fox jumps over lazy dogs running quickly unbelievable").split()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=8)) + "." for _ in range(400)]
    return Tokenizer.train_wordpiece(texts=texts, vocab_size=120, bert_specials=True)


@pytest.fixture(scope="module")
def packed(tokenizer):
    rng = np.random.default_rng(1)
    units = [np.asarray(tokenizer.encode(" ".join(rng.choice(WORDS, size=int(rng.integers(3, 30))))), dtype=np.int32)
             for _ in range(3000)]
    return units, pack_units(units, max_length=128, pairs=True, rng=np.random.default_rng(2))


def test_bert_special_tokens_keep_our_ids(tokenizer):
    assert tokenizer.special_ids() == {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "mask": 4, "cls": 5, "sep": 6}
    assert [tokenizer.id_to_token(i) for i in (0, 1, 4, 5, 6)] == ["[PAD]", "[UNK]", "[MASK]", "[CLS]", "[SEP]"]
    # Hugging Face tools add [CLS] ... [SEP] through the saved template; our encode adds nothing.
    assert tokenizer.hf.encode("나는", add_special_tokens=True).tokens[0] == "[CLS]"
    assert tokenizer.encode("[MASK]") != [tokenizer.mask_id]  # user text is text


def test_wordpiece_training_is_reproducible():
    texts = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 5
    first = Tokenizer.train_wordpiece(texts=texts, vocab_size=90, bert_specials=True)
    for _ in range(3):  # the Rust trainer numbers pieces in hash order; we renumber them
        assert Tokenizer.train_wordpiece(texts=texts, vocab_size=90, bert_specials=True).fingerprint() == first.fingerprint()


def test_korean_survives_lowercasing_and_accent_stripping():
    tok = Tokenizer.train_wordpiece(texts=["나는 학교에 갔다 Café\n"] * 20, vocab_size=60)
    assert tok.decode(tok.encode("나는 학교에 갔다 Café")) == "나는 학교에 갔다 cafe"  # syllables, not jamo


def test_packing_keeps_every_token_in_order_within_max_length(tokenizer, packed):
    units, seqs = packed
    assert np.array_equal(seqs.tokens, np.concatenate(units))
    ids, mask, types = assemble(seqs, range(len(seqs)), tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    assert ids.shape[1] <= 128 and mask.mean() > 0.75  # packed: little padding
    row = int(np.flatnonzero(seqs.cuts >= 0)[0])
    n, cut = int(mask[row].sum()), int(seqs.cuts[row])
    assert ids[row, 0] == tokenizer.cls_id and ids[row, cut + 1] == tokenizer.sep_id and ids[row, n - 1] == tokenizer.sep_id
    assert types[row, :cut + 2].sum() == 0 and types[row, cut + 2:n].all() and not types[row, n:].any()
    # A unit longer than a sequence is cut into pieces.
    long = pack_units([np.arange(10, 310, dtype=np.int32)], 128, True, np.random.default_rng(0))
    assert len(long) == 3 and np.diff(long.starts).max() == 125


def test_masking_statistics_over_many_batches(tokenizer, packed):
    _, seqs = packed
    masker = Masker(tokenizer)
    batches = MLMBatches({"train": seqs, "val": seqs}, tokenizer, masker, batch_size=64, seed=3)
    special = torch.tensor(masker.is_special)
    counts = dict(candidates=0, selected=0, masked=0, random=0, kept=0)
    for _ in range(100):
        b = batches.next_batch("train")
        originals = b["input_ids"].clone()
        selected = b["labels"] != -100
        originals[selected] = b["labels"][selected]
        is_special = special[originals]
        assert not (selected & is_special).any()  # [CLS], [SEP], [PAD] are never selected
        assert torch.equal(b["input_ids"][~selected], originals[~selected])
        counts["candidates"] += int((~is_special).sum())
        counts["selected"] += int(selected.sum())
        inputs = b["input_ids"][selected]
        counts["masked"] += int((inputs == tokenizer.mask_id).sum())
        counts["kept"] += int((inputs == originals[selected]).sum())
        counts["random"] += int(((inputs != tokenizer.mask_id) & (inputs != originals[selected])).sum())
        assert not special[inputs[inputs != tokenizer.mask_id]].any()  # random tokens are ordinary ones
    assert counts["candidates"] > 500_000
    assert abs(counts["selected"] / counts["candidates"] - 0.15) <= 0.005
    for kind, share in (("masked", 0.8), ("random", 0.1), ("kept", 0.1)):
        assert abs(counts[kind] / counts["selected"] - share) <= 0.01, kind


def test_whole_word_masking_masks_whole_words(tokenizer):
    masker = Masker(tokenizer, whole_word_mask=True)
    text = " ".join(["unbelievable quickly 학교를 좋아한다 running"] * 20)
    ids = np.asarray([[tokenizer.cls_id, *tokenizer.encode(text), tokenizer.sep_id]] * 64)
    assert masker.is_continuation[ids].sum() > 100  # the text really has multi-piece words
    inputs, labels = masker(ids, np.random.default_rng(0))
    selected = labels != -100
    word = np.cumsum(~masker.is_continuation[ids], axis=1)
    words_selected = total_words = 0
    for row in range(ids.shape[0]):
        for w in np.unique(word[row, 1:-1]):
            members = selected[row][word[row] == w]
            assert members.all() or not members.any()  # all of a word's pieces, or none
            words_selected += int(members.all())
            total_words += 1
    assert abs(words_selected / total_words - 0.15) < 0.02


def test_masks_are_deterministic_redrawn_each_epoch_and_resume_exactly(tokenizer, packed):
    _, seqs = packed
    small = type(seqs)(seqs.tokens, seqs.starts[:9], seqs.cuts[:8])  # 8 sequences: one epoch = 2 batches

    def source():
        return MLMBatches({"train": small, "val": small}, tokenizer, Masker(tokenizer), batch_size=4, seed=5)

    a, b = source(), source()
    first = [a.next_batch("train") for _ in range(3)]
    state = a.state_dict()
    rest = [a.next_batch("train") for _ in range(3)]
    for x, y in zip(first, [b.next_batch("train") for _ in range(3)]):
        assert all(torch.equal(x[k], y[k]) for k in x)
    resumed = source()
    resumed.load_state_dict(state)
    for x, y in zip(rest, [resumed.next_batch("train") for _ in range(3)]):
        assert all(torch.equal(x[k], y[k]) for k in x)
    # Epoch 0 (batches 1-2) and epoch 1 (batches 3-4) mask the same sequences differently.
    def selections(batches):
        out = {}
        for b in batches:
            originals = torch.where(b["labels"] != -100, b["labels"], b["input_ids"])
            for row in range(len(originals)):
                real = b["attention_mask"][row].bool()
                out[tuple(originals[row][real].tolist())] = tuple((b["labels"][row][real] != -100).tolist())
        return out

    epoch0, epoch1 = selections(first[:2]), selections(first[2:] + rest[:1])
    assert epoch0.keys() == epoch1.keys() and epoch0 != epoch1
    # Validation batches are the same on every call.
    v1, v2 = list(a.eval_batches("val")), list(a.eval_batches("val"))
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(v1, v2))


def test_fill_mask_text_maps_mask_and_continues_glued_words(tokenizer):
    ids = encode_masked_text(tokenizer, "나는 [MASK]에 갔다")
    tokens = [tokenizer.id_to_token(i) for i in ids]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and tokens.count("[MASK]") == 1
    assert tokens[tokens.index("[MASK]") + 1] == "##에"  # "[MASK]에": the mask is a word's stem
    assert [tokenizer.id_to_token(i) for i in encode_masked_text(tokenizer, "[MASK] 에")].count("##에") == 0
    assert encode_masked_text(tokenizer, "[MASK] and [MASK]").count(tokenizer.mask_id) == 2
    char = Tokenizer.train_char(texts=["나는 학교에 갔다"])  # our own spelling <mask> works too
    assert encode_masked_text(char, "나는 <mask>에 [MASK]").count(char.mask_id) == 2


def test_units_from_each_format(tmp_path):
    (tmp_path / "a.txt").write_text("One sentence. Two sentences!\nstill two.\n\nNew paragraph?", encoding="utf-8")
    assert read_units(tmp_path / "a.txt") == ["One sentence.", "Two sentences!", "still two.", "New paragraph?"]
    (tmp_path / "b.json").write_text('{"data": [{"paragraphs": [{"context": "가. 나!", "qas": []}]}]}', encoding="utf-8")
    assert read_units(tmp_path / "b.json") == ["가.", "나!"]
    (tmp_path / "c.tsv").write_text("topic\tsentence\n0\t첫 문장\n1\t둘째\n", encoding="utf-8")
    assert read_units(tmp_path / "c.tsv") == ["첫 문장", "둘째"]
    (tmp_path / "d.jsonl").write_text('{"review": "좋아요"}\n{"review": "별로"}\n', encoding="utf-8")
    assert read_units(tmp_path / "d.jsonl") == ["좋아요", "별로"]
    assert split_sentences("끝났다. 다음!  그리고") == ["끝났다.", "다음!", "그리고"]


def test_label_first_files_join_the_corpus_without_their_labels(tmp_path, tokenizer):
    """Task-adaptive pre-training reads SST-2-style "<label> <text>" lines; the label never becomes a token."""
    (tmp_path / "book.txt").write_text("the quick brown fox. jumps over lazy dogs.", encoding="utf-8")
    (tmp_path / "task.train").write_text("1 나는 학교에 갔다\n0   그는 밥을 먹었다 \n\n7 the fox\n", encoding="utf-8")
    assert read_units(tmp_path / "task.train", label_first=True) == ["나는 학교에 갔다", "그는 밥을 먹었다", "the fox"]
    config = MLMDataConfig(path="book.txt", label_first=["task.train"], max_length=64, val_fraction=0.5)
    files = sequences_from_config(config, tmp_path)
    assert [f.name for f in files] == ["book.txt", "task.train"]
    labelled = sequences_from_config(MLMDataConfig(label_first=["task.train"]), tmp_path)  # the task's text alone
    assert [f.name for f in labelled] == ["task.train"]
    # named in path as well (or reached through a folder): read once, as labelled
    for path in (["book.txt", "task.train"], str(tmp_path)):
        twice = sequences_from_config(MLMDataConfig(path=path, label_first=["task.train"]), tmp_path)
        assert sorted(f.name for f in twice) == ["book.txt", "task.train"]
    splits = build_sequences(files, tokenizer, config, None, label_first=labelled)
    every = np.concatenate([splits["train"].tokens, splits["val"].tokens])
    expected = sum((tokenizer.encode(u) for u in ["the quick brown fox.", "jumps over lazy dogs.", "나는 학교에 갔다",
                                                  "그는 밥을 먹었다", "the fox"]), [])
    assert sorted(every.tolist()) == sorted(expected)  # every text token once, and no label
    plain = build_sequences(files, tokenizer, config, None)  # without label_first the digits are text
    assert plain["train"].num_tokens + plain["val"].num_tokens > len(expected)
    (tmp_path / "bad.train").write_text("1 fine\nlonely\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.train:2: expected '<label> <text>'"):
        read_units(tmp_path / "bad.train", label_first=True)
    with pytest.raises(UserError, match="label_first"):
        MLMDataConfig(path="book.txt", label_first=[3])


def test_classification_files_and_their_errors(tmp_path, tokenizer):
    tsv = tmp_path / "t.tsv"
    tsv.write_text("label\tsentence\nneg\t나는 학교를\npos\t밥을 먹었다\n", encoding="utf-8")
    examples = read_examples(tsv)
    assert [(e.text, e.label) for e in examples] == [("나는 학교를", "neg"), ("밥을 먹었다", "pos")]
    assert label_set(examples) == ["neg", "pos"]
    first = tmp_path / "sst"
    first.write_text("1 a fine film\n0 dull\n", encoding="utf-8")
    assert [(e.label, e.text) for e in read_examples(first, "label_first")] == [("1", "a fine film"), ("0", "dull")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\tsentence\npos\tok\npos\tone\textra\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.tsv:3: 3 fields, expected 2"):
        read_examples(bad)
    with pytest.raises(UserError, match="no column 'text'"):
        read_examples(tsv, text_column="text")
    with pytest.raises(UserError, match="cannot tell the format"):
        read_examples(first)
    ids, types = encode_example(tokenizer, "나는 학교를 " * 40, "밥을 먹었다 " * 40, 50)
    assert len(ids) == 50 and ids.count(tokenizer.sep_id) == 2 and types[-1] == 1
    with pytest.raises(UserError, match="more than the model's 50 positions"):
        encode_example(tokenizer, "나는 학교를 " * 40, None, 50, truncate=False)
