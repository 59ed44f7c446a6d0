"""Fuzzed inputs (hypothesis, bounded): the config loader, the --set parser, the corpus readers and
the tokenizer loader either succeed or raise UserError with a message; never another exception."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanoformer.config import ModelConfig
from nanoformer.data.classification import read_examples
from nanoformer.data.parallel import SplitFiles, read_split
from nanoformer.data.text import read_text
from nanoformer.errors import UserError
from nanoformer.run_config import build_run_config, load_run_config, parse_override
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.config import TrainConfig

FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

values = st.recursive(st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12),
                                st.booleans()),
                      lambda inner: st.lists(inner, max_size=3), max_leaves=5)
MODEL_KEYS = [f.name for f in dataclasses.fields(ModelConfig)] + ["preset", "junk"]
TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig)] + ["junk"]
DATA_KEYS = ["kind", "name", "path", "tokenizer", "vocab_size", "block_size", "val_fraction", "src_lang", "tgt_lang",
             "junk"]


def only_user_errors(call) -> None:
    try:
        call()
    except UserError as error:
        assert str(error).strip(), "a UserError needs a message"


@FUZZ
@given(st.text(max_size=40))
def test_set_parser(text):
    only_user_errors(lambda: parse_override(text))


@FUZZ
@given(st.dictionaries(st.sampled_from(MODEL_KEYS), values, max_size=6),
       st.dictionaries(st.sampled_from(DATA_KEYS), values, max_size=4),
       st.dictionaries(st.sampled_from(TRAIN_KEYS), values, max_size=5))
def test_config_sections(model, data, train):
    only_user_errors(lambda: build_run_config({"model": model, "data": data, "train": train}))


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_config_files(raw):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.toml"
        path.write_bytes(raw)
        only_user_errors(lambda: load_run_config(path, ["train.max_steps=3"]))


lines = st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=15), max_size=6)
corpus = st.one_of(st.binary(max_size=120),
                   st.tuples(lines, st.sampled_from(["\n", "\r\n"]), st.sampled_from(["\t", ",", " "])).map(
                       lambda t: t[1].join(t[2].join([s, s[::-1]]) for s in t[0]).encode("utf-8")))


@FUZZ
@given(corpus, st.sampled_from(["tsv", "csv", "label_first", "auto"]), st.booleans())
def test_labelled_corpus_readers(raw, fmt, header):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data.{'csv' if fmt == 'csv' else 'tsv'}"
        path.write_bytes(raw)
        only_user_errors(lambda: read_examples(path, fmt, header=header))
        only_user_errors(lambda: read_text(path))


@FUZZ
@given(corpus, corpus)
def test_parallel_corpus_readers(src, tgt):
    with tempfile.TemporaryDirectory() as folder:
        a, b, tsv = Path(folder) / "a.de", Path(folder) / "b.en", Path(folder) / "pairs.tsv"
        a.write_bytes(src)
        b.write_bytes(tgt)
        tsv.write_bytes(src)
        only_user_errors(lambda: read_split(SplitFiles("train", [(a, b)])))
        only_user_errors(lambda: read_split(SplitFiles("train", [(tsv, None)], holdout="head")))


@pytest.fixture(scope="module")
def tokenizer_json() -> str:
    return Tokenizer.train_char(texts=["나는 학교에 간다. I go to school."]).hf.to_str()


@FUZZ
@given(st.data())
def test_tokenizer_loader(tokenizer_json, data):
    text = tokenizer_json
    choice = data.draw(st.sampled_from(["cut", "flip", "field", "bytes"]))
    if choice == "cut":
        raw = text[: data.draw(st.integers(0, len(text)))].encode("utf-8")
    elif choice == "flip":
        at = data.draw(st.integers(0, len(text) - 1))
        raw = (text[:at] + data.draw(st.text(min_size=1, max_size=3)) + text[at + 1:]).encode("utf-8")
    elif choice == "field":
        record = json.loads(text)
        record[data.draw(st.sampled_from(sorted(record)))] = data.draw(values)
        raw = json.dumps(record).encode("utf-8")
    else:
        raw = data.draw(st.binary(max_size=100))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        path.write_bytes(raw)
        only_user_errors(lambda: Tokenizer.load(path))
