"""Translation data: parallel corpora and their checks, token-count batching, teacher forcing,
joint tokenizers. Everything on tiny files in tmp_path (plus Multi30k when $NANOFORMER_DATA has it)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoformer.data.batching import TokenBatchSampler, TranslationBatches, fixed_batches, make_batch, pack
from nanoformer.data.parallel import (
    TranslationDataConfig,
    default_test_splits,
    filter_pairs,
    read_split,
    resolve_splits,
)
from nanoformer.errors import UserError
from nanoformer.run_config import build_run_config
from nanoformer.tokenizer import Tokenizer
from nanoformer.layers.losses import IGNORE_INDEX


def write_pair(folder: Path, split: str, src: list[str], tgt: list[str], langs=("de", "en")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.{langs[0]}").write_text("".join(s + "\n" for s in src), encoding="utf-8")
    (folder / f"{split}.{langs[1]}").write_text("".join(t + "\n" for t in tgt), encoding="utf-8")


def config(folder: Path, **kw) -> TranslationDataConfig:
    return TranslationDataConfig(path=str(folder), **kw)


# --------------------------------------------------------------------------- corpora


def test_folder_of_file_pairs_gives_its_splits(tmp_path):
    write_pair(tmp_path, "train", ["ein Hund", "eine Katze"], ["a dog", "a cat"])
    write_pair(tmp_path, "val", ["ein Mann"], ["a man"])
    write_pair(tmp_path, "test_a", ["rot"], ["red"])
    (tmp_path / "notes.md").write_text("not a split\n")
    splits = resolve_splits(config(tmp_path))
    assert sorted(splits) == ["test_a", "train", "val"]
    assert default_test_splits(config(tmp_path), splits) == ["test_a"]
    train = read_split(splits["train"])
    assert (train.src, train.tgt) == (["ein Hund", "eine Katze"], ["a dog", "a cat"])
    assert train.where(1, "tgt") == f"{tmp_path / 'train.en'}:2"


def test_mismatched_line_counts_name_both_files_and_the_first_unmatched_line(tmp_path):
    write_pair(tmp_path, "train", ["a", "b", "c"], ["x", "y"])
    with pytest.raises(UserError) as error:
        read_split(resolve_splits(config(tmp_path))["train"])
    message = str(error.value)
    assert "train.de has 3 lines" in message and "train.en has 2" in message
    assert f"{tmp_path / 'train.de'}:3" in message and "\n" not in message


def test_empty_side_is_an_error_with_file_and_line_unless_skipped(tmp_path):
    write_pair(tmp_path, "train", ["ein Hund", "", "ein Mann"], ["a dog", "a cat", "a man"])
    split = resolve_splits(config(tmp_path))["train"]
    with pytest.raises(UserError, match=r"train\.de:2: empty source side .*train\.en:2.*skip_empty"):
        read_split(split)
    with pytest.warns(UserWarning, match=r"left out 1 pair.*train\.de:2"):
        text = read_split(split, skip_empty=True)
    assert text.src == ["ein Hund", "ein Mann"] and text.where(1) == f"{tmp_path / 'train.de'}:3"


def test_lines_split_on_newline_only_and_crlf_is_stripped(tmp_path):
    (tmp_path / "train.de").write_bytes("eins\u2028zwei\r\ndrei\r\n".encode())
    (tmp_path / "train.en").write_bytes(b"one two\nthree\n")
    text = read_split(resolve_splits(config(tmp_path))["train"])
    assert text.src == ["eins\u2028zwei", "drei"] and text.tgt == ["one two", "three"]


def test_missing_files_and_folders_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="no such file or folder"):
        resolve_splits(config(tmp_path / "nowhere"))
    (tmp_path / "train.de").write_text("nur Deutsch\n")
    with pytest.raises(UserError, match=r"no training files for de-en.*train\.en"):
        resolve_splits(config(tmp_path))
    monkeypatch.setenv("NANOFORMER_DATA", str(tmp_path))
    (tmp_path / "ko-en").mkdir()
    splits = resolve_splits(TranslationDataConfig(name="ko-en", src_lang="ko", tgt_lang="en"))
    with pytest.raises(UserError, match=r"kor\.ko: no such file"):
        read_split(splits["train"])


def test_unknown_sets_and_language_pairs_are_refused():
    with pytest.raises(UserError, match="multi30k has no 'ko' side; it pairs en-de"):
        TranslationDataConfig(name="multi30k", src_lang="ko", tgt_lang="en")
    with pytest.raises(UserError, match="not a standard translation set"):
        TranslationDataConfig(name="wmt14")
    with pytest.raises(UserError, match="both 'en'"):
        TranslationDataConfig(path="x", src_lang="en", tgt_lang="en")
    with pytest.raises(UserError, match="exactly one of"):
        TranslationDataConfig(name="multi30k", path="x")
    with pytest.raises(UserError, match="max_tokens"):
        TranslationDataConfig(path="x", max_length=200, max_tokens=100)


def test_run_config_reports_data_mistakes_with_the_file(tmp_path):
    sections = {"model": {"preset": "tiny-seq2seq"}, "data": {"kind": "translation", "name": "multi30k",
                                                              "src_lang": "de", "tgt_lang": "xx"}}
    with pytest.raises(UserError, match=r"my\.toml: \[data\] tgt_lang = 'xx'"):
        build_run_config(sections, source=Path("my.toml"))
    sections["data"] = {"kind": "translation", "name": "multi30k", "max_tokens": "4k"}
    with pytest.raises(UserError, match="max_tokens = '4k' is a str; expected a int"):
        build_run_config(sections, source=Path("my.toml"))


def test_tsv_file_holds_out_its_tail_for_validation(tmp_path):
    lines = [f"Satz {i}\tsentence {i}\tCC-BY attribution" for i in range(40)]
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    splits = resolve_splits(config(path))
    train, val = read_split(splits["train"]), read_split(splits["val"])
    assert len(train) == 38 and len(val) == 2
    assert val.src == ["Satz 38", "Satz 39"] and val.tgt == ["sentence 38", "sentence 39"]
    path.write_text("Satz ohne Tab\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"pairs\.tsv:1: expected source<TAB>target"):
        read_split(resolve_splits(config(path))["train"])


def test_invalid_utf8_names_file_and_byte(tmp_path):
    (tmp_path / "train.de").write_bytes(b"gut\nschl\xe9cht\n")
    (tmp_path / "train.en").write_bytes(b"good\nbad\n")
    with pytest.raises(UserError, match=r"train\.de: invalid UTF-8 at byte offset 8 \(line 2, byte 0xe9\)"):
        read_split(resolve_splits(config(tmp_path))["train"])


def test_length_and_ratio_filters_report_file_and_line(tmp_path):
    write_pair(tmp_path, "train", ["a", "b", "c"], ["x", "y", "z"])
    text = read_split(resolve_splits(config(tmp_path))["train"])
    src, tgt = [[1] * 3, [1] * 9, [1] * 2], [[1] * 3, [1] * 2, [1] * 8]
    with pytest.warns(UserWarning) as record:
        keep = filter_pairs(text, src, tgt, max_length=8, max_length_ratio=3.0)
    assert keep == [0]
    messages = " ".join(str(w.message) for w in record)
    assert "longer than max_length = 8" in messages and f"{tmp_path / 'train.de'}:2" in messages
    assert "max_length_ratio = 3.0" in messages and f"{tmp_path / 'train.de'}:3" in messages


@pytest.mark.skipif(not Path(os.environ.get("NANOFORMER_DATA", "/nonexistent"), "multi30k", "train.en").is_file(),
                    reason="needs $NANOFORMER_DATA/multi30k")
def test_multi30k_and_ko_en_standard_sets():
    data = TranslationDataConfig(name="multi30k", src_lang="de", tgt_lang="en")
    splits = resolve_splits(data)
    assert default_test_splits(data, splits) == ["test_2016_flickr", "test_2017_flickr"]
    assert len(read_split(splits["val"])) == 1014
    cs = resolve_splits(TranslationDataConfig(name="multi30k", src_lang="cs", tgt_lang="en"))
    assert "test_2017_flickr" not in cs  # there is no Czech 2017 test set
    ko = TranslationDataConfig(name="ko-en", src_lang="ko", tgt_lang="en")
    ko_splits = resolve_splits(ko)
    assert len(read_split(ko_splits["test"])) == 2000 and len(read_split(ko_splits["val"])) == 720


# --------------------------------------------------------------------------- batching


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=120),
    max_tokens=st.integers(30, 200),
    seed=st.integers(0, 5),
    chunk=st.integers(1, 64),
)
def test_token_batches_fit_cover_every_pair_once_and_are_deterministic(lengths, max_tokens, seed, chunk):
    src, tgt = zip(*lengths)
    sampler = TokenBatchSampler(src, tgt, max_tokens, seed=seed, chunk_size=chunk)
    epoch = list(sampler)
    for batch in epoch:
        assert len(batch) * max(max(src[i], tgt[i]) for i in batch) <= max_tokens
    assert sorted(np.concatenate(epoch).tolist()) == list(range(len(lengths)))
    again = TokenBatchSampler(src, tgt, max_tokens, seed=seed, chunk_size=chunk)
    assert [b.tolist() for b in again] == [b.tolist() for b in epoch]


def test_batches_group_similar_lengths_and_epochs_differ():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 40, 2000)
    tgt = np.clip(src + rng.integers(-3, 4, 2000), 1, None)  # lengths of translations correlate
    sampler = TokenBatchSampler(src, tgt, 1024, seed=1)
    first, second = sampler.plan(0), sampler.plan(1)
    for side in (src, tgt):
        padded = sum(len(b) * int(side[b].max()) for b in first)
        assert side.sum() / padded > 0.9  # little padding on either side
    assert [b.tolist() for b in first] != [b.tolist() for b in second]
    with pytest.raises(UserError, match="does not fit in a batch of max_tokens = 30"):
        TokenBatchSampler([40], [3], 30)


def test_sampler_resumes_exactly_and_crosses_epochs():
    src, tgt = list(range(1, 51)), list(range(50, 0, -1))
    a = TokenBatchSampler(src, tgt, 120, seed=3)
    n = len(a)
    for _ in range(n - 2):
        a.next()
    state = a.state_dict()
    expected = [a.next().tolist() for _ in range(5)]  # crosses into epoch 1
    assert a.epoch == 1
    b = TokenBatchSampler(src, tgt, 120, seed=3)
    b.load_state_dict(state)
    assert [b.next().tolist() for _ in range(5)] == expected
    with pytest.raises(UserError, match="resume with the same data"):
        TokenBatchSampler(src[:-1], tgt[:-1], 120).load_state_dict(state)


def test_ranks_take_disjoint_shares_of_one_plan():
    src = tgt = [5] * 100
    ranks = [TokenBatchSampler(src, tgt, 50, seed=0, rank=r, world_size=2) for r in range(2)]
    shares = [set(np.concatenate(list(s)).tolist()) for s in ranks]
    assert not shares[0] & shares[1] and len(shares[0]) == len(shares[1]) == 50


def test_pack_and_fixed_batches():
    assert [b.tolist() for b in pack(np.arange(5), np.array([2, 2, 3, 3, 9]), 9)] == [[0, 1, 2], [3], [4]]
    batches = fixed_batches([3, 1, 2, 8], [3, 1, 2, 8], 8)
    assert sorted(np.concatenate(batches).tolist()) == [0, 1, 2, 3]
    assert [b.tolist() for b in batches] == [b.tolist() for b in fixed_batches([3, 1, 2, 8], [3, 1, 2, 8], 8)]


def test_teacher_forcing_batch_shapes_and_padding():
    batch = make_batch([[5, 6, 7], [8]], [[9], [10, 11, 12, 13]], pad_id=0, bos_id=2, eos_id=3)
    assert batch["src_ids"].tolist() == [[5, 6, 7, 3], [8, 3, 0, 0]]
    assert batch["src_mask"].tolist() == [[True] * 4, [True, True, False, False]]
    assert batch["tgt_in"].tolist() == [[2, 9, 0, 0, 0], [2, 10, 11, 12, 13]]
    assert batch["labels"].tolist() == [[9, 3, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX], [10, 11, 12, 13, 3]]
    assert batch["tgt_in"].shape == batch["labels"].shape and batch["src_ids"].dtype == torch.long
    assert "src_mask" not in make_batch([[5], [6]], [[7], [8]], 0, 2, 3)  # no padding, no mask


def test_translation_batches_follow_the_trainer_protocol():
    train = ([[4] * (i % 7 + 1) for i in range(60)], [[5] * (i % 5 + 1) for i in range(60)])
    val = ([[4, 4]] * 10, [[5]] * 10)
    source = TranslationBatches(train, val, max_tokens=40, pad_id=0, bos_id=2, eos_id=3, seed=0)
    batch = source.next_batch("train")
    assert batch["src_ids"].numel() <= 40 and batch["labels"].numel() <= 40
    assert source.tokens_per_batch(batch) == int((batch["labels"] != IGNORE_INDEX).sum())
    first = [b["src_ids"].tolist() for b in source.eval_batches("val")]
    assert first == [b["src_ids"].tolist() for b in source.eval_batches("val")]
    state = source.state_dict()
    following = source.next_batch("train")["src_ids"].tolist()
    other = TranslationBatches(train, val, max_tokens=40, pad_id=0, bos_id=2, eos_id=3, seed=0)
    other.load_state_dict(state)
    assert other.next_batch("train")["src_ids"].tolist() == following


# --------------------------------------------------------------------------- tokenizers


def test_joint_unigram_round_trips_korean_and_unseen_text():
    texts = ["나는 학교에 간다", "I go to school.", "Ein Mann geht zur Schule.", "오늘 날씨가 좋네요"] * 30
    tok = Tokenizer.train("unigram", texts=texts, vocab_size=400)
    assert tok.kind == "unigram" and (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    for text in ["나는 학교에 간다", "무엇을 먹었니? 😀", "  two  spaces\tand <0x41> <s>", ""]:
        ids = tok.encode(text)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bpe = Tokenizer.train("bpe", texts=texts, vocab_size=300)
    assert bpe.decode(bpe.encode("무엇을 먹었니?")) == "무엇을 먹었니?"
    with pytest.raises(UserError, match="unknown tokenizer kind"):
        Tokenizer.train("sentencepiece", texts=texts)
