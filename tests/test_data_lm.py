"""Reading text, the token cache, and LM batches: errors, invalidation, reproducible batches."""

from __future__ import annotations

import io
import json
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nanoformer.data import lm, text
from nanoformer.data.lm import LMData, build_token_cache, open_token_cache
from nanoformer.data.text import find_data_file, read_text, resolve_text_files
from nanoformer.errors import UserError
from nanoformer.tokenizer import Tokenizer

ALPHABET = "abcdefghijklmnopqrstuvwxyz ,.\n나는학교에간다"


@pytest.fixture(scope="module")
def char() -> Tokenizer:
    return Tokenizer.train_char(texts=[ALPHABET])


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# ------------------------------------------------------------------------------ reading text
def test_invalid_utf8_names_the_file_and_byte_offset(tmp_path) -> None:
    path = write(tmp_path / "bad.txt", b"hello\nw\xf6rld\n")
    with pytest.raises(UserError, match=rf"{path}: invalid UTF-8 at byte offset 7 \(line 2, byte 0xf6\);.*iconv"):
        read_text(path)


def test_empty_file_is_an_error(tmp_path) -> None:
    path = write(tmp_path / "empty.txt", b"")
    with pytest.raises(UserError, match=rf"{path}: file is empty"):
        read_text(path)


def test_text_is_kept_byte_for_byte_except_a_bom(tmp_path) -> None:
    content = "line one\r\n  나는 학교에 간다\n\n"
    assert read_text(write(tmp_path / "a.txt", content)) == content
    assert read_text(write(tmp_path / "b.txt", "\ufeff" + content)) == content


def test_missing_path_names_where_it_looked(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NANOFORMER_DATA", str(tmp_path / "data"))
    with pytest.raises(UserError, match=rf"nope.txt: no such file or folder \(looked in: {tmp_path}/cfg/nope.txt, "
                                        rf"{tmp_path}/data/nope.txt\)"):
        resolve_text_files("nope.txt", base_dir=tmp_path / "cfg")
    with pytest.raises(UserError, match="list of files is empty"):
        resolve_text_files([])
    # a file named on the command line (--data, --input, --src): no corpus names offered
    with pytest.raises(UserError, match=r"no such file or folder .*; check the path$"):
        find_data_file("nope.tsv")


def test_folders_contribute_their_text_files_recursively(tmp_path) -> None:
    a = write(tmp_path / "corpus" / "a.txt", "a")
    c = write(tmp_path / "corpus" / "sub" / "c.text", "c")
    write(tmp_path / "corpus" / "README.md", "notes")
    write(tmp_path / "corpus" / "data.csv", "x,y")
    write(tmp_path / "corpus" / ".git" / "x.txt", "hidden")
    write(tmp_path / "corpus" / ".hidden.txt", "hidden")
    assert resolve_text_files(tmp_path / "corpus") == [a, c]
    explicit = write(tmp_path / "train.en", "named files may have any suffix")
    assert resolve_text_files([explicit, tmp_path / "corpus"]) == [explicit, a, c]


def test_folder_without_text_files_is_an_error(tmp_path) -> None:
    write(tmp_path / "corpus" / "README.md", "notes")
    with pytest.raises(UserError, match=rf"{tmp_path / 'corpus'}: folder has no \*.txt or \*.text files"):
        resolve_text_files(tmp_path / "corpus")


def test_relative_paths_try_base_dir_then_nanoformer_data(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NANOFORMER_DATA", str(tmp_path / "data"))
    in_data = write(tmp_path / "data" / "x.txt", "from data")
    assert resolve_text_files("x.txt", base_dir=tmp_path / "cfg") == [in_data]
    beside_config = write(tmp_path / "cfg" / "x.txt", "beside the config")
    assert resolve_text_files("x.txt", base_dir=tmp_path / "cfg") == [beside_config]


def test_standard_corpus_from_nanoformer_data(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NANOFORMER_DATA", str(tmp_path))
    path = write(tmp_path / "tinyshakespeare" / "input.txt", "First Citizen:\n")
    write(tmp_path / "tinyshakespeare" / "SOURCE.md", "not text")
    assert resolve_text_files("tinyshakespeare") == [path]


def test_standard_corpus_offline_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NANOFORMER_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(text.urllib.request, "urlopen", offline)
    with pytest.raises(UserError, match=r"could not download https://raw.githubusercontent.com/.*"
                                        r"\(Name or service not known\).*tinyshakespeare/input.txt"):
        resolve_text_files("tinyshakespeare")


def test_standard_corpus_downloads_once_into_the_cache(tmp_path, monkeypatch) -> None:
    import hashlib
    content = b"Before we proceed any further, hear me speak.\n"
    spec = text.StandardText("tiny/input.txt", "https://example.invalid/input.txt",
                             hashlib.sha256(content).hexdigest())
    monkeypatch.setitem(text.STANDARD_TEXTS, "tiny", spec)
    monkeypatch.delenv("NANOFORMER_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        return io.BytesIO(content)

    monkeypatch.setattr(text.urllib.request, "urlopen", fake_urlopen)
    expected = tmp_path / "cache" / "nanoformer" / "tiny" / "input.txt"
    assert resolve_text_files("tiny") == [expected]
    assert resolve_text_files("tiny") == [expected]
    assert calls == [spec.url] and expected.read_bytes() == content
    monkeypatch.setitem(text.STANDARD_TEXTS, "tiny", spec.__class__(spec.relpath, spec.url, "0" * 64))
    expected.unlink()
    with pytest.raises(UserError, match="does not match its expected sha256"):
        resolve_text_files("tiny")
    assert not expected.exists()


# ------------------------------------------------------------------------------ token cache
def test_cache_holds_the_ids_with_eos_between_files(char: Tokenizer, tmp_path) -> None:
    a = write(tmp_path / "a.txt", "hello world.\n")
    b = write(tmp_path / "b.txt", "나는 학교에 간다")
    bin_path = build_token_cache([a, b], char, tmp_path / "cache")
    ids = open_token_cache(bin_path)
    assert ids.dtype == np.uint16
    assert ids.tolist() == char.encode("hello world.\n") + [char.eos_id] + char.encode("나는 학교에 간다")
    manifest = json.loads(bin_path.with_suffix(".json").read_text())
    assert manifest["num_tokens"] == len(ids) and manifest["dtype"] == "uint16"
    assert manifest["tokenizer_sha256"] == char.fingerprint()
    assert [s["path"] for s in manifest["sources"]] == [str(a), str(b)]
    assert manifest["sources"][1]["size"] == len("나는 학교에 간다".encode())
    assert {"mtime", "sha256"} <= set(manifest["sources"][0])
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary files left


class CountingTokenizer:
    """Wraps a tokenizer to count how often text gets tokenized."""

    def __init__(self, inner: Tokenizer) -> None:
        self.inner, self.calls = inner, 0
        self.vocab_size, self.eos_id = inner.vocab_size, inner.eos_id

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def encode_batch(self, texts):
        self.calls += 1
        return self.inner.encode_batch(texts)


def test_unchanged_cache_is_reused_and_a_changed_source_rebuilds_it(char: Tokenizer, tmp_path) -> None:
    source = write(tmp_path / "a.txt", "abc abc\n")
    counting = CountingTokenizer(char)
    bin_path = build_token_cache([source], counting, tmp_path / "cache")
    assert build_token_cache([source], counting, tmp_path / "cache") == bin_path
    assert counting.calls == 1
    os.utime(source, (0, 0))  # a touch alone does not invalidate: contents are compared
    build_token_cache([source], counting, tmp_path / "cache")
    assert counting.calls == 1
    write(source, "xyz xyz\n")  # same size, new content
    assert build_token_cache([source], counting, tmp_path / "cache") == bin_path
    assert counting.calls == 2
    assert open_token_cache(bin_path).tolist() == char.encode("xyz xyz\n")


def test_a_changed_tokenizer_rebuilds_the_cache(char: Tokenizer, tmp_path) -> None:
    source = write(tmp_path / "a.txt", "abc abc\n")
    bin_path = build_token_cache([source], char, tmp_path / "cache")
    other = Tokenizer.train_char(texts=["cba \n"])
    assert build_token_cache([source], other, tmp_path / "cache") == bin_path
    assert open_token_cache(bin_path).tolist() == other.encode("abc abc\n")


def test_large_vocabularies_use_uint32(char: Tokenizer, tmp_path) -> None:
    big = CountingTokenizer(char)
    big.vocab_size = 70_000
    bin_path = build_token_cache([write(tmp_path / "a.txt", "abc")], big, tmp_path / "cache")
    assert open_token_cache(bin_path).dtype == np.uint32


def test_chunked_encoding_equals_whole_encoding(tmp_path, monkeypatch) -> None:
    tricky = "Speak,  speak.\n\n  indented\nline\r\nnext \nword\n나는\n학교에 간다\n" * 30
    bpe = Tokenizer.train_bpe(texts=[tricky], vocab_size=300)
    assert "".join(lm._chunks(tricky, size=40)) == tricky
    assert len(list(lm._chunks(tricky, size=40))) > 10
    monkeypatch.setattr(lm, "CHUNK_CHARS", 40)
    bin_path = build_token_cache([write(tmp_path / "a.txt", tricky)], bpe, tmp_path / "cache")
    assert open_token_cache(bin_path).tolist() == bpe.encode(tricky)


def test_cache_errors(char: Tokenizer, tmp_path) -> None:
    with pytest.raises(UserError, match=rf"{tmp_path / 'missing.txt'}: no such file"):
        build_token_cache([tmp_path / "missing.txt"], char, tmp_path / "cache")
    bad = write(tmp_path / "bad.txt", b"ok\xff")
    with pytest.raises(UserError, match=rf"{bad}: invalid UTF-8 at byte offset 2"):
        build_token_cache([bad], char, tmp_path / "cache")
    with pytest.raises(UserError, match="no token cache here"):
        open_token_cache(tmp_path / "cache" / "tokens-none.bin")


# ------------------------------------------------------------------------------ batches
STREAM = np.arange(1000, dtype=np.uint16) % 500


def test_validation_is_the_last_fraction_of_the_stream() -> None:
    data = LMData(STREAM, val_fraction=0.1)
    assert len(data.splits["train"]) == 900 and len(data.splits["val"]) == 100
    assert data.splits["val"].tolist() == STREAM[900:].tolist()


def test_batches_are_shifted_windows_of_their_split() -> None:
    data = LMData(np.arange(1000, dtype=np.uint16), val_fraction=0.1)
    x, y = data.get_batch("train", batch_size=8, block_size=16)
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # consecutive ids: y is x shifted by one token
    assert int(y.max()) < 900
    xv, _ = data.get_batch("val", batch_size=8, block_size=16)
    assert int(xv.min()) >= 900


def test_batches_are_deterministic_given_the_seed() -> None:
    a, b, c = LMData(STREAM, seed=1), LMData(STREAM, seed=1), LMData(STREAM, seed=2)
    for _ in range(3):
        xa, ya = a.get_batch("train", 4, 8)
        xb, yb = b.get_batch("train", 4, 8)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a.get_batch("train", 4, 8)[0], c.get_batch("train", 4, 8)[0])


def test_validation_draws_do_not_shift_training_batches() -> None:
    a, b = LMData(STREAM, seed=3), LMData(STREAM, seed=3)
    a.get_batch("val", 4, 8)
    list(a.eval_batches("val", 2, 4, 8))
    assert torch.equal(a.get_batch("train", 4, 8)[0], b.get_batch("train", 4, 8)[0])


def test_eval_batches_are_the_same_whatever_the_training_state() -> None:
    data = LMData(STREAM, seed=5)
    first = list(data.eval_batches("val", 3, 4, 8))
    data.get_batch("train", 4, 8)
    data.get_batch("val", 4, 8)
    again = list(data.eval_batches("val", 3, 4, 8))
    assert len(first) == 3
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, again))


def test_saved_state_resumes_the_exact_next_batches(tmp_path) -> None:
    data = LMData(STREAM, seed=7)
    for _ in range(5):
        data.get_batch("train", 4, 8)
    state = data.state_dict()
    # The state survives a pickle-free round trip: tensors to safetensors, the rest to JSON.
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    plain = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    save_file(tensors, tmp_path / "state.safetensors")
    (tmp_path / "state.json").write_text(json.dumps(plain))
    expected = [data.get_batch("train", 4, 8) for _ in range(3)] + [data.get_batch("val", 4, 8)]

    resumed = LMData(STREAM, seed=0)
    resumed.load_state_dict({**load_file(tmp_path / "state.safetensors"),
                             **json.loads((tmp_path / "state.json").read_text())})
    got = [resumed.get_batch("train", 4, 8) for _ in range(3)] + [resumed.get_batch("val", 4, 8)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(expected, got))


def test_state_from_other_data_is_refused() -> None:
    state = LMData(STREAM).state_dict()
    with pytest.raises(UserError, match="train split of 900 tokens, but this one has 450"):
        LMData(STREAM[:500]).load_state_dict(state)


def test_batch_errors_name_the_sizes_and_the_fix() -> None:
    data = LMData(STREAM[:100], val_fraction=0.1)
    with pytest.raises(UserError, match=r"the val split has 10 tokens but block_size=16 needs at least 17; "
                                        r"use block_size <= 9"):
        data.get_batch("val", 2, 16)
    with pytest.raises(UserError, match="val split has 0 tokens.*set val_fraction > 0"):
        LMData(STREAM, val_fraction=0.0).get_batch("val", 2, 8)
    with pytest.raises(UserError, match="val_fraction=1.5 must be in"):
        LMData(STREAM, val_fraction=1.5)
    with pytest.raises(UserError, match="unknown split 'test'"):
        data.get_batch("test", 2, 8)


def test_from_files_end_to_end(char: Tokenizer, tmp_path) -> None:
    source = write(tmp_path / "a.txt", "hello world, 나는 학교에 간다.\n" * 20)
    data = LMData.from_files([source], char, tmp_path / "cache", seed=0)
    x, y = data.get_batch("train", 2, 8)
    assert char.decode(x[0].tolist() + y[0, -1:].tolist()) in source.read_text()


@pytest.mark.skipif(not os.environ.get("NANOFORMER_DATA") or not (
    Path(os.environ.get("NANOFORMER_DATA", "")) / "tinyshakespeare" / "input.txt").is_file(),
    reason="needs $NANOFORMER_DATA/tinyshakespeare/input.txt")
def test_real_tinyshakespeare_char_level(tmp_path) -> None:
    files = resolve_text_files("tinyshakespeare")
    tok = Tokenizer.train_char(files)
    assert tok.vocab_size == 7 + 65  # nanoGPT's shakespeare_char has 65 characters
    data = LMData.from_files(files, tok, tmp_path / "cache")
    assert len(data) == 1_115_394 and data.tokens.dtype == np.uint16
    assert tok.decode(data.tokens[:14].tolist()) == "First Citizen:"


def test_tokenizing_progress_counts_file_bytes_to_the_end(tmp_path, char, monkeypatch) -> None:
    """A JSONL file's text is a fraction of its bytes; the bar must still end at 100%."""

    class Bar:
        instances: list["Bar"] = []

        def __init__(self, total, **kwargs):
            self.total, self.n = total, 0
            Bar.instances.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            assert n >= 0
            self.n += n

    monkeypatch.setattr(lm, "tqdm", Bar)
    rows = [json.dumps({"text": "abc " * 50, "id": i, "meta": "x" * 200}) for i in range(300)]
    files = [write(tmp_path / "a.jsonl", "\n".join(rows) + "\n"), write(tmp_path / "b.txt", "hello world\n" * 500)]
    build_token_cache(files, char, tmp_path / "cache", progress=True)
    (bar,) = Bar.instances
    assert bar.n == bar.total == sum(f.stat().st_size for f in files)
