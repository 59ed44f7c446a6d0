"""Training tokenizers, one function per algorithm: char, BPE, WordPiece, SentencePiece's unigram.

Each builds the pieces that algorithm needs (normaliser, pre-tokenizer, model, decoder) and trains
from the same arguments: `files` (anything `resolve_text_files` takes: a file, a folder, a
standard corpus name, or a list) and/or `texts` (strings used as they are). Every tokenizer gets
the special tokens of `SPECIAL_TOKENS` as its first ids. `Tokenizer.train_*` wraps the results.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Iterable, Iterator, Sequence

from tokenizers import Regex
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from nanoformer.data.text import read_text, resolve_text_files
from nanoformer.errors import UserError

PathLike = str | os.PathLike

SPECIAL_TOKENS: dict[str, str] = {
    "pad": "<pad>",
    "unk": "<unk>",
    "bos": "<s>",
    "eos": "</s>",
    "mask": "<mask>",
    "cls": "<cls>",
    "sep": "<sep>",
}
"""Role -> token text. The order is the id order of every tokenizer we train: pad = 0, unk = 1, ..."""

# BERT's spelling of the roles it has (train_wordpiece(bert_specials=True)).
BERT_SPELLINGS: dict[str, str] = {"pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]", "cls": "[CLS]", "sep": "[SEP]"}


def char(
    files: PathLike | Sequence[PathLike] | None = None,
    *,
    texts: Iterable[str] | None = None,
    min_frequency: int = 1,
) -> HFTokenizer:
    """One token per Unicode code point seen at least `min_frequency` times, after the specials.

    `files` is anything `resolve_text_files` accepts (file, folder, standard name, or a list);
    `texts` are strings used as they are. Characters are ordered by code point, so the same
    alphabet always gives the same ids.
    """
    counts: Counter[str] = Counter()
    for text in training_texts(files, texts):
        counts.update(text)
    alphabet = sorted(ch for ch, n in counts.items() if n >= min_frequency)
    if not alphabet:
        raise UserError(f"no character occurs {min_frequency} or more times in the training "
                        "text; lower min_frequency or give more text")
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS.values())}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Fuse()  # characters join with nothing between them
    hf.add_special_tokens(list(SPECIAL_TOKENS.values()))
    return hf

def bpe(
    files: PathLike | Sequence[PathLike] | None = None,
    vocab_size: int = 8000,
    *,
    texts: Iterable[str] | None = None,
    byte_level: bool = True,
    min_frequency: int = 2,
    prefix_space: bool = False,
    progress: bool = False,
) -> HFTokenizer:
    """Byte-pair encoding with `vocab_size` tokens in all (specials and base symbols included).

    Byte level (GPT-2 style) starts from the 256 bytes, so any text round-trips exactly and
    nothing is ever <unk>. Without it (sentencepiece style, spaces shown as "▁") the base
    symbols are the characters seen in training and others become <unk>. `prefix_space`: see
    `unigram`.
    """
    floor = len(SPECIAL_TOKENS) + (256 if byte_level else 1)
    check_vocab_size(vocab_size, floor, "train_bpe")
    if byte_level:
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=prefix_space)
        hf.decoder = (decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)]) if prefix_space
                      else decoders.ByteLevel())
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        hf = HFTokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
        hf.pre_tokenizer = metaspace_pre_tokenizer(prefix_space)
        hf.decoder = decoders.Metaspace(prepend_scheme=_prepend_scheme(prefix_space))
        alphabet = []
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=progress,
        special_tokens=list(SPECIAL_TOKENS.values()), initial_alphabet=alphabet,
    )
    hf.train_from_iterator(training_lines(files, texts), trainer)
    return hf

def wordpiece(
    files: PathLike | Sequence[PathLike] | None = None,
    vocab_size: int = 8000,
    *,
    texts: Iterable[str] | None = None,
    lowercase: bool = True,
    strip_accents: bool | None = None,
    bert_specials: bool = False,
    min_frequency: int = 2,
    progress: bool = False,
) -> HFTokenizer:
    """BERT's WordPiece: words split on spaces and punctuation, pieces continue with "##".

    Lossy on purpose: it may lower-case, and decoding re-spaces words, which suits a model
    that reads text (masked LM, classification) rather than writes it.

    `strip_accents` (default: as `lowercase`, like BERT uncased) turns "café" into "cafe".
    Stripping decomposes text (NFD), which would leave Korean as loose jamo, so the text is
    recomposed (NFC) afterwards and Hangul syllables stay whole.
    `bert_specials` spells the special tokens as BERT does, [PAD] [UNK] [MASK] [CLS] [SEP]
    (same ids: pad 0, unk 1, mask 4, cls 5, sep 6), and adds BERT's template
    "[CLS] A [SEP] (B [SEP])" for Hugging Face tools; our `encode` never adds special tokens.
    """
    check_vocab_size(vocab_size, len(SPECIAL_TOKENS) + 1, "train_wordpiece")
    specials = {role: (BERT_SPELLINGS.get(role, token) if bert_specials else token)
                for role, token in SPECIAL_TOKENS.items()}
    hf = HFTokenizer(models.WordPiece(unk_token=specials["unk"]))
    hf.normalizer = normalizers.Sequence([
        normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents),
        normalizers.NFC(),
    ])
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=progress,
        special_tokens=list(specials.values()),
    )
    hf.train_from_iterator(training_lines(files, texts), trainer)
    hf = renumber_wordpiece(hf, len(specials))
    if bert_specials:
        cls_token, sep_token = specials["cls"], specials["sep"]
        ids = [(cls_token, hf.token_to_id(cls_token)), (sep_token, hf.token_to_id(sep_token))]
        hf.post_processor = processors.TemplateProcessing(
            single=f"{cls_token} $A {sep_token}", pair=f"{cls_token} $A {sep_token} $B:1 {sep_token}:1",
            special_tokens=ids,
        )
    return hf

def unigram(
    files: PathLike | Sequence[PathLike] | None = None,
    vocab_size: int = 8000,
    *,
    texts: Iterable[str] | None = None,
    byte_fallback: bool = True,
    prefix_space: bool = False,
    progress: bool = False,
) -> HFTokenizer:
    """SentencePiece's unigram language model, spaces shown as "▁", `vocab_size` ids in all.

    The trainer starts from many candidate pieces and prunes the ones whose loss hurts the
    corpus likelihood least. With `byte_fallback` (the default) 256 byte pieces `<0x00>` ...
    `<0xFF>` are kept at the end of the vocabulary: a character never seen in training is
    spelled in UTF-8 bytes instead of becoming <unk>, so every text round-trips except one
    that contains "▁" (decoded as a space). "<" and ">" are always pieces of their own, so
    typed text such as "<0x41>" is never read as a byte piece.

    `prefix_space` reads every text as if a space came before it (SentencePiece's
    `add_dummy_prefix`), so a word is the same pieces wherever it stands: without it the first
    word of a sentence has no "▁" and is spelled apart from its other occurrences, which a
    language with free word order (Korean "학교에 나는 간다") pays for. For sentences (translation),
    not for text encoded in blocks (a block would gain a space); a leading space is not kept.
    """
    reserved = 256 if byte_fallback else 0
    check_vocab_size(vocab_size, len(SPECIAL_TOKENS) + reserved + 2, "train_unigram")
    hf = HFTokenizer(models.Unigram())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n|<|>"), behavior="isolated"),
        pre_tokenizers.Metaspace(prepend_scheme=_prepend_scheme(prefix_space)),
    ])
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - reserved, show_progress=progress,
        special_tokens=list(SPECIAL_TOKENS.values()), unk_token=SPECIAL_TOKENS["unk"],
    )
    try:
        hf.train_from_iterator(training_lines(files, texts), trainer)
    except Exception as error:  # the trainer reports this case as a bare Exception
        if "not large enough to contain all chars" not in str(error):
            raise
        raise UserError(f"vocab_size = {vocab_size} leaves {vocab_size - reserved} unigram pieces"
                        f"{' beside the 256 byte pieces' if reserved else ''}, fewer than the distinct "
                        "characters of the training text; raise vocab_size") from None
    if byte_fallback:
        spec = json.loads(hf.to_str())["model"]
        pieces = [(piece, score) for piece, score in spec["vocab"]]
        floor = min(score for _, score in pieces) - 1.0
        known = {piece for piece, _ in pieces}
        pieces += [(f"<0x{b:02X}>", floor) for b in range(256) if f"<0x{b:02X}>" not in known]
        pre_tokenizer = hf.pre_tokenizer
        hf = HFTokenizer(models.Unigram(pieces, unk_id=spec["unk_id"], byte_fallback=True))
        hf.pre_tokenizer = pre_tokenizer
    metaspace = decoders.Metaspace(prepend_scheme=_prepend_scheme(prefix_space))
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), metaspace]) if byte_fallback else metaspace
    hf.add_special_tokens(list(SPECIAL_TOKENS.values()))
    return hf


def training_texts(files: PathLike | Sequence[PathLike] | None,
                   texts: Iterable[str] | None) -> Iterator[str]:
    """The contents of `files`, then `texts`: the one way every trainer takes its input."""
    if files is None and texts is None:
        raise UserError("nothing to train the tokenizer on; pass files (paths, a folder or a "
                        "standard corpus name) or texts (strings)")
    if files is not None:
        for path in resolve_text_files(files):
            yield read_text(path)
    if texts is not None:
        if isinstance(texts, str):
            raise UserError("texts must be a list of strings, not one string; wrap it: texts=[text]")
        yield from texts


def training_lines(files: PathLike | Sequence[PathLike] | None,
                   texts: Iterable[str] | None) -> Iterator[str]:
    """Line-sized pieces (line ends kept), which the Rust trainers process in parallel."""
    for text in training_texts(files, texts):
        yield from text.splitlines(keepends=True)


def metaspace_pre_tokenizer(prefix_space: bool = False) -> pre_tokenizers.PreTokenizer:
    # Newlines are kept as their own pieces so that a long file can be encoded line block by line
    # block with the same result as in one piece (see nanoformer.data.lm).
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Metaspace(prepend_scheme=_prepend_scheme(prefix_space)),
    ])


def _prepend_scheme(prefix_space: bool) -> str:
    # "first": "▁" before the text's first word only (not after a newline or "<" split), and the
    # decoder drops it again.
    return "first" if prefix_space else "never"


def check_vocab_size(vocab_size: int, floor: int, where: str) -> None:
    if not isinstance(vocab_size, int) or vocab_size < floor:
        raise UserError(f"{where}: vocab_size={vocab_size!r} is too small; it counts the "
                        f"{len(SPECIAL_TOKENS)} special tokens and the base symbols, so use at "
                        f"least {floor} (a few thousand suits a few MB of text)")


def renumber_wordpiece(hf: HFTokenizer, n_specials: int) -> HFTokenizer:
    """Give a trained WordPiece vocabulary the same ids on every run.

    The trainer numbers pieces in hash-map order, which changes from run to run, so the same
    text gave differently numbered (and differently initialised) models. WordPiece encodes by
    longest match, whatever the numbering: specials keep their ids, then come the letters, the
    "##" letters and the longer pieces, each group sorted.
    """
    spec = json.loads(hf.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    by_id = sorted(vocab, key=vocab.__getitem__)
    specials, rest = by_id[:n_specials], by_id[n_specials:]

    def order(token: str) -> tuple:
        base = token[2:] if token.startswith("##") else token
        return (len(base) > 1, token.startswith("##"), token)

    ordered = sorted(rest, key=order)
    spec["model"]["vocab"] = {token: i for i, token in enumerate(specials + ordered)}
    return HFTokenizer.from_str(json.dumps(spec))
