"""Tokenizers: special ids, round trips (byte-level BPE for any text), save/load, errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from nanoformer.errors import UserError
from nanoformer.tokenizer import SPECIAL_TOKENS, Tokenizer

KOREAN = ["나는 학교에 간다", "오늘 날씨가 좋네요!", "한국어 문장 😀 emoji"]
CORPUS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
    "All:\nSpeak, speak.\n",
    "  indented line\twith tabs\r\nand CRLF   and spaces\n",
] * 5 + [s + "\n" for s in KOREAN] * 5
EXPECTED_SPECIAL_IDS = {role: i for i, role in enumerate(SPECIAL_TOKENS)}


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    return Tokenizer.train_bpe(texts=CORPUS, vocab_size=320)


@pytest.fixture(scope="module")
def char() -> Tokenizer:
    return Tokenizer.train_char(texts=CORPUS)


def test_special_tokens_are_the_first_ids_in_a_fixed_order(bpe: Tokenizer, char: Tokenizer) -> None:
    assert list(SPECIAL_TOKENS) == ["pad", "unk", "bos", "eos", "mask", "cls", "sep"]
    wordpiece = Tokenizer.train_wordpiece(texts=CORPUS, vocab_size=120)
    for tok in (bpe, char, wordpiece):
        assert tok.special_ids() == EXPECTED_SPECIAL_IDS
        assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
        assert (tok.mask_id, tok.cls_id, tok.sep_id) == (4, 5, 6)
        assert [tok.id_to_token(i) for i in range(7)] == list(SPECIAL_TOKENS.values())
        assert tok.token_to_id("<mask>") == 4


def test_kinds(bpe: Tokenizer, char: Tokenizer) -> None:
    assert (bpe.kind, bpe.byte_level) == ("bpe", True)
    assert (char.kind, char.byte_level) == ("char", False)
    assert Tokenizer.train_wordpiece(texts=CORPUS, vocab_size=120).kind == "wordpiece"


def test_bpe_vocab_size_is_the_users_choice(bpe: Tokenizer) -> None:
    big_corpus = [f"word{i} token{i * 7} piece{i % 13}\n" for i in range(400)]
    assert Tokenizer.train_bpe(texts=big_corpus, vocab_size=300).vocab_size == 300
    assert 7 + 256 < bpe.vocab_size <= 320


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_level_bpe_round_trips_any_text(bpe: Tokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("나는학교에간다 \n\t😀<s>"))))
def test_byte_level_bpe_round_trips_korean_and_whitespace(bpe: Tokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


@pytest.mark.parametrize("text", KOREAN + [
    "", " ", "   leading spaces", "trailing  \n\n", "a\n\n\nb", "tab\there", "\r\n", "👩‍👩‍👧 family",
    "never seen: ∮ ∂ ⅞ ẞ", "\x00 control", "<s> literal specials </s> <pad>",
])
def test_byte_level_bpe_round_trips_samples(bpe: Tokenizer, text: str) -> None:
    ids = bpe.encode(text)
    assert bpe.unk_id not in ids
    assert bpe.decode(ids) == text


def test_bpe_merges_korean_it_was_trained_on(bpe: Tokenizer) -> None:
    text = "나는 학교에 간다"
    assert len(bpe.encode(text)) < len(text.encode("utf-8"))


def test_special_token_text_is_plain_text_unless_asked(bpe: Tokenizer, char: Tokenizer) -> None:
    for tok in (bpe, char):
        assert len(tok.encode("<s>")) > 1
        assert tok.encode("<mask>", parse_special=True) == [tok.mask_id]
        assert len(tok.encode("<s>")) > 1  # the opt-in does not stick
    assert bpe.decode(bpe.encode("<s>x</s>")) == "<s>x</s>"


def test_encode_batch_matches_encode(bpe: Tokenizer) -> None:
    texts = ["hello", "나는 학교에 간다", "", "  x"]
    assert bpe.encode_batch(texts) == [bpe.encode(t) for t in texts]


def test_char_tokenizer_has_one_token_per_character(char: Tokenizer) -> None:
    alphabet = set("".join(CORPUS))
    assert char.vocab_size == len(SPECIAL_TOKENS) + len(alphabet)
    text = "Speak, speak.\n나는 학교에 간다"
    ids = char.encode(text)
    assert len(ids) == len(text)
    assert char.decode(ids) == text  # no spaces between characters


def test_char_tokenizer_is_lossless_over_its_training_alphabet_only(char: Tokenizer) -> None:
    assert char.decode(char.encode("".join(sorted(set("".join(CORPUS)))))) == "".join(
        sorted(set("".join(CORPUS))))
    ids = char.encode("speak Z")  # "Z" never occurs in training
    assert ids[-1] == char.unk_id
    assert char.decode(ids) == "speak "
    assert char.decode(ids, skip_special_tokens=False) == "speak <unk>"


def test_char_ids_are_stable_for_the_same_alphabet() -> None:
    a = Tokenizer.train_char(texts=["abc", "cab"])
    b = Tokenizer.train_char(texts=["bca"])
    assert a.fingerprint() == b.fingerprint()
    assert a.encode("abc") == [7, 8, 9]


def test_sentencepiece_style_bpe_round_trips_its_alphabet() -> None:
    tok = Tokenizer.train_bpe(texts=CORPUS, vocab_size=100, byte_level=False)
    assert (tok.kind, tok.byte_level) == ("bpe", False)
    text = "  Speak,\n\n speak   further.\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.unk_id in tok.encode("Z")


def test_wordpiece_lower_cases_and_splits_words() -> None:
    tok = Tokenizer.train_wordpiece(texts=CORPUS, vocab_size=150)
    assert tok.decode(tok.encode("Speak, SPEAK.")) == "speak, speak."


@pytest.mark.parametrize("target", ["folder", "file.json"])
def test_save_and_load_recover_everything(bpe: Tokenizer, char: Tokenizer, tmp_path, target) -> None:
    for tok in (bpe, char):
        path = tok.save(tmp_path / tok.kind / target)
        assert path.name == ("tokenizer.json" if target == "folder" else "file.json")
        for source in (path, path.parent) if target == "folder" else (path,):
            loaded = Tokenizer.load(source)
            assert (loaded.kind, loaded.byte_level, loaded.vocab_size) == (
                tok.kind, tok.byte_level, tok.vocab_size)
            assert loaded.special_ids() == EXPECTED_SPECIAL_IDS
            assert loaded.fingerprint() == tok.fingerprint()
            assert loaded.encode("나는 학교에 간다 <s>") == tok.encode("나는 학교에 간다 <s>")
        # A plain Hugging Face tokenizer.json: other tools read it as it is.
        assert HFTokenizer.from_file(str(path)).get_vocab_size() == tok.vocab_size
        assert not list(path.parent.glob("*.tmp"))


def test_load_recognises_other_libraries_special_tokens() -> None:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "hello": 5}
    tok = Tokenizer(HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]")))
    assert tok.special_ids() == {"pad": 0, "unk": 1, "mask": 4, "cls": 2, "sep": 3}
    with pytest.raises(UserError, match="no bos token"):
        tok.bos_id


def test_load_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(UserError, match=f"{tmp_path / 'nowhere' / 'tokenizer.json'}.*not found"):
        Tokenizer.load(tmp_path / "nowhere" / "tokenizer.json")
    with pytest.raises(UserError, match=f"{tmp_path / 'tokenizer.json'}.*not found"):
        Tokenizer.load(tmp_path)


def test_load_corrupt_file_names_the_path_and_line(bpe: Tokenizer, tmp_path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(bpe.to_json()[:200])
    with pytest.raises(UserError, match=rf"{path}: corrupt tokenizer file, not JSON \(line \d+"):
        Tokenizer.load(path)
    path.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(UserError, match=rf"{path}: not a Hugging Face tokenizer.json"):
        Tokenizer.load(path)
    path.write_bytes(b"")
    with pytest.raises(UserError, match=rf"{path}: file is empty"):
        Tokenizer.load(path)


def test_decode_rejects_ids_outside_the_vocabulary(char: Tokenizer) -> None:
    with pytest.raises(UserError, match=rf"token id {char.vocab_size} is outside.*size {char.vocab_size}"):
        char.decode([7, char.vocab_size])


def test_training_input_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="vocab_size=100 is too small.*at least 263"):
        Tokenizer.train_bpe(texts=CORPUS, vocab_size=100)
    with pytest.raises(UserError, match="nothing to train"):
        Tokenizer.train_char()
    with pytest.raises(UserError, match="not one string"):
        Tokenizer.train_char(texts="abc")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café".encode("latin-1"))
    with pytest.raises(UserError, match=rf"{bad}: invalid UTF-8 at byte offset 3"):
        Tokenizer.train_char(bad)


def test_training_from_files_and_folders(tmp_path) -> None:
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text("abc\n", encoding="utf-8")
    (tmp_path / "corpus" / "sub" / "b.txt").write_text("나는\n", encoding="utf-8")
    (tmp_path / "corpus" / "README.md").write_text("XYZ", encoding="utf-8")  # not a corpus file
    from_folder = Tokenizer.train_char(tmp_path / "corpus")
    from_files = Tokenizer.train_char([tmp_path / "corpus" / "a.txt", tmp_path / "corpus" / "sub" / "b.txt"])
    assert from_folder.fingerprint() == from_files.fingerprint()
    assert from_folder.vocab_size == 7 + len(set("abc\n나는"))
    bpe = Tokenizer.train_bpe(str(tmp_path / "corpus"), 270)
    assert bpe.decode(bpe.encode("나는 abc")) == "나는 abc"


def test_a_unigram_vocabulary_smaller_than_the_alphabet_is_a_clear_error():
    texts = ["Ein Mann fährt Fahrrad auf einer Straße.", "나는 학교에 간다", "Kinder spielen im Park!"] * 4
    vocab_size = len(SPECIAL_TOKENS) + 256 + 10  # 10 more pieces than the floor: fewer than the characters
    with pytest.raises(UserError, match=rf"vocab_size = {vocab_size} leaves {vocab_size - 256} unigram pieces beside "
                                        "the 256 byte pieces, fewer than the distinct characters.*raise vocab_size"):
        Tokenizer.train_unigram(texts=texts, vocab_size=vocab_size)


SENTENCES = ["나는 학교에 간다", "그녀는 학교에 갔다", "우리는 부엌에 간다", "I go to school.",
             "She went to school.", "We go to the kitchen."] * 20


def _pieces(tok: Tokenizer, text: str) -> list[str]:
    return [tok.id_to_token(i) for i in tok.encode(text)]


@pytest.mark.parametrize("kind, options", [("unigram", {}), ("bpe", {"byte_level": False}), ("bpe", {})])
def test_prefix_space_spells_a_first_word_as_anywhere_else(tmp_path, kind: str, options: dict) -> None:
    train = Tokenizer.train_unigram if kind == "unigram" else Tokenizer.train_bpe
    plain = train(texts=SENTENCES, vocab_size=300, **options)
    prefixed = train(texts=SENTENCES, vocab_size=300, prefix_space=True, **options)
    for tok in (prefixed, Tokenizer.load(prefixed.save(tmp_path / kind))):  # the behaviour is in the file
        first, middle = _pieces(tok, "학교에 나는 간다"), _pieces(tok, "나는 학교에 간다")
        school = _pieces(tok, " 학교에")  # the word after a space, as mid-sentence
        assert first[:len(school)] == school and middle[-len(_pieces(tok, " 간다")):] == _pieces(tok, " 간다")
        for text in ("학교에 나는 간다", "I go to school."):
            assert tok.decode(tok.encode(text)) == text  # the added space is dropped again
    # Without it the first word is spelled apart: the case the option exists for.
    assert _pieces(plain, "학교에 나는 간다")[:len(_pieces(plain, " 학교에"))] != _pieces(plain, " 학교에")


def test_prefix_space_reaches_the_translation_tokenizer() -> None:
    from nanoformer.data.parallel import ParallelText, TranslationDataConfig
    from nanoformer.recipes.translation import train_tokenizers

    data = TranslationDataConfig(path="x", src_lang="ko", tgt_lang="en", tokenizer="unigram", vocab_size=300,
                                 prefix_space=True)
    text = ParallelText(SENTENCES[:3] * 20, SENTENCES[3:6] * 20)
    source, target = train_tokenizers(data, text)
    assert source is target and _pieces(source, "학교에")[0].startswith("▁")
    with pytest.raises(UserError, match=r"\[data\] prefix_space = 'yes'; expected true or false"):
        TranslationDataConfig(path="x", prefix_space="yes")
