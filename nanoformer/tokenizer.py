"""Text <-> token ids: train, save and load tokenizers for all three model families.

`Tokenizer` is a thin wrapper over a Hugging Face `tokenizers.Tokenizer` (fast, and its
`tokenizer.json` is what the Hugging Face ecosystem reads). The wrapper adds what our models need:

- the special tokens of every family, declared once in `SPECIAL_TOKENS`, always the first ids
  (pad = 0), so a model config can take their ids from `special_ids()`;
- one training entry point per algorithm (`train_char`, `train_bpe`, `train_wordpiece`,
  `train_unigram`: SentencePiece's unigram model with byte fallback, for translation), and
  `train(kind, ...)` to pick one by name. Each builds the pieces that algorithm needs and trains
  from the same files-or-texts arguments; a joint vocabulary is one tokenizer trained on the
  texts of several languages;
- encoding that never interprets user text: "<s>" typed by a user is three characters, not the
  bos token, so `decode(encode(x)) == x` can hold. Pass `parse_special=True` to opt in.

Which texts survive `decode(encode(x))` unchanged depends on the kind:
- "bpe" (byte level, the default): every string, because any UTF-8 byte is in the vocabulary;
- "char": strings made only of characters seen in training; an unseen character becomes <unk>
  (and `decode` drops it with the other special tokens unless `skip_special_tokens=False`);
- "bpe" with `byte_level=False`: strings over the training alphabet not containing "▁";
- "unigram" (with byte fallback, the default): every string not containing "▁";
- "wordpiece": none in general, by design (BERT lower-cases and drops spacing).

The saved file is a plain Hugging Face `tokenizer.json` with nothing added: the kind is read back
from the model and pieces inside it, so other tools can load our files and we can load theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import Regex
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from nanoformer.data.text import read_text, resolve_text_files, write_bytes_atomic
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

# How other libraries spell the same roles, so that their tokenizer.json files load with the
# right special ids (BERT's [CLS] ..., GPT-2's <|endoftext|>).
_OTHER_SPELLINGS: dict[str, tuple[str, ...]] = {
    "pad": ("[PAD]",),
    "unk": ("[UNK]",),
    "bos": ("<|endoftext|>",),
    "eos": ("<|endoftext|>",),
    "mask": ("[MASK]",),
    "cls": ("[CLS]",),
    "sep": ("[SEP]",),
}

# BERT's spelling of the roles it has (train_wordpiece(bert_specials=True)).
_BERT_SPELLINGS: dict[str, str] = {"pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]", "cls": "[CLS]", "sep": "[SEP]"}

FILE_NAME = "tokenizer.json"


class Tokenizer:
    """A trained tokenizer: `encode` text to ids, `decode` ids to text, `save` and `load`."""

    def __init__(self, hf: HFTokenizer, specials: dict[str, str] | None = None) -> None:
        """Wrap a Hugging Face tokenizer; `specials` maps roles to token texts if not ours."""
        self.hf = hf
        # Special-token text in user input is ordinary text unless a call asks otherwise.
        self.hf.encode_special_tokens = True
        spec = json.loads(hf.to_str())
        self.kind = _infer_kind(spec)
        self.byte_level = _has_byte_level(spec.get("pre_tokenizer"))
        self._special_ids = _find_special_ids(hf, specials)

    # ----------------------------------------------------------------------- training
    @classmethod
    def train_char(
        cls,
        files: PathLike | Sequence[PathLike] | None = None,
        *,
        texts: Iterable[str] | None = None,
        min_frequency: int = 1,
    ) -> Tokenizer:
        """One token per Unicode code point seen at least `min_frequency` times, after the specials.

        `files` is anything `resolve_text_files` accepts (file, folder, standard name, or a list);
        `texts` are strings used as they are. Characters are ordered by code point, so the same
        alphabet always gives the same ids.
        """
        counts: Counter[str] = Counter()
        for text in _training_texts(files, texts):
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
        return cls(hf)

    @classmethod
    def train_bpe(
        cls,
        files: PathLike | Sequence[PathLike] | None = None,
        vocab_size: int = 8000,
        *,
        texts: Iterable[str] | None = None,
        byte_level: bool = True,
        min_frequency: int = 2,
        progress: bool = False,
    ) -> Tokenizer:
        """Byte-pair encoding with `vocab_size` tokens in all (specials and base symbols included).

        Byte level (GPT-2 style) starts from the 256 bytes, so any text round-trips exactly and
        nothing is ever <unk>. Without it (sentencepiece style, spaces shown as "▁") the base
        symbols are the characters seen in training and others become <unk>.
        """
        floor = len(SPECIAL_TOKENS) + (256 if byte_level else 1)
        _check_vocab_size(vocab_size, floor, "train_bpe")
        if byte_level:
            hf = HFTokenizer(models.BPE())
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            hf.decoder = decoders.ByteLevel()
            alphabet = pre_tokenizers.ByteLevel.alphabet()
        else:
            hf = HFTokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
            hf.pre_tokenizer = _metaspace_pre_tokenizer()
            hf.decoder = decoders.Metaspace(prepend_scheme="never")
            alphabet = []
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=progress,
            special_tokens=list(SPECIAL_TOKENS.values()), initial_alphabet=alphabet,
        )
        hf.train_from_iterator(_training_lines(files, texts), trainer)
        return cls(hf)

    @classmethod
    def train_wordpiece(
        cls,
        files: PathLike | Sequence[PathLike] | None = None,
        vocab_size: int = 8000,
        *,
        texts: Iterable[str] | None = None,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        bert_specials: bool = False,
        min_frequency: int = 2,
        progress: bool = False,
    ) -> Tokenizer:
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
        _check_vocab_size(vocab_size, len(SPECIAL_TOKENS) + 1, "train_wordpiece")
        specials = {role: (_BERT_SPELLINGS.get(role, token) if bert_specials else token)
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
        hf.train_from_iterator(_training_lines(files, texts), trainer)
        hf = _renumber_wordpiece(hf, len(specials))
        if bert_specials:
            cls_token, sep_token = specials["cls"], specials["sep"]
            ids = [(cls_token, hf.token_to_id(cls_token)), (sep_token, hf.token_to_id(sep_token))]
            hf.post_processor = processors.TemplateProcessing(
                single=f"{cls_token} $A {sep_token}", pair=f"{cls_token} $A {sep_token} $B:1 {sep_token}:1",
                special_tokens=ids,
            )
        return cls(hf)

    @classmethod
    def train_unigram(
        cls,
        files: PathLike | Sequence[PathLike] | None = None,
        vocab_size: int = 8000,
        *,
        texts: Iterable[str] | None = None,
        byte_fallback: bool = True,
        progress: bool = False,
    ) -> Tokenizer:
        """SentencePiece's unigram language model, spaces shown as "▁", `vocab_size` ids in all.

        The trainer starts from many candidate pieces and prunes the ones whose loss hurts the
        corpus likelihood least. With `byte_fallback` (the default) 256 byte pieces `<0x00>` ...
        `<0xFF>` are kept at the end of the vocabulary: a character never seen in training is
        spelled in UTF-8 bytes instead of becoming <unk>, so every text round-trips except one
        that contains "▁" (decoded as a space). "<" and ">" are always pieces of their own, so
        typed text such as "<0x41>" is never read as a byte piece.
        """
        reserved = 256 if byte_fallback else 0
        _check_vocab_size(vocab_size, len(SPECIAL_TOKENS) + reserved + 2, "train_unigram")
        hf = HFTokenizer(models.Unigram())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\n|<|>"), behavior="isolated"),
            pre_tokenizers.Metaspace(prepend_scheme="never"),
        ])
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size - reserved, show_progress=progress,
            special_tokens=list(SPECIAL_TOKENS.values()), unk_token=SPECIAL_TOKENS["unk"],
        )
        try:
            hf.train_from_iterator(_training_lines(files, texts), trainer)
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
            hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme="never")])
        else:
            hf.decoder = decoders.Metaspace(prepend_scheme="never")
        hf.add_special_tokens(list(SPECIAL_TOKENS.values()))
        return cls(hf)

    @classmethod
    def train(
        cls,
        kind: str,
        files: PathLike | Sequence[PathLike] | None = None,
        vocab_size: int = 8000,
        *,
        texts: Iterable[str] | None = None,
        progress: bool = False,
    ) -> Tokenizer:
        """Train a tokenizer of `kind` ("char", "bpe", "unigram" or "wordpiece") with its defaults.

        A joint vocabulary for translation is one tokenizer trained on the texts of both
        languages: `Tokenizer.train("bpe", ["train.de", "train.en"], 8000)`.
        """
        if kind == "char":
            return cls.train_char(files, texts=texts)
        trainers_by_kind = {"bpe": cls.train_bpe, "unigram": cls.train_unigram, "wordpiece": cls.train_wordpiece}
        if kind not in trainers_by_kind:
            raise UserError(f"unknown tokenizer kind {kind!r}; choose one of char, {', '.join(trainers_by_kind)}")
        return trainers_by_kind[kind](files, vocab_size, texts=texts, progress=progress)

    # ----------------------------------------------------------------------- encode / decode
    def encode(self, text: str, *, parse_special: bool = False) -> list[int]:
        """Token ids of `text`, with no special tokens added.

        Special-token text inside `text` ("<mask>") is split like any other text unless
        `parse_special` is True (e.g. a fill-mask prompt).
        """
        return self._hf_for(parse_special).encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], *, parse_special: bool = False) -> list[list[int]]:
        """`encode` for many texts at once (in parallel threads)."""
        encodings = self._hf_for(parse_special).encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` (a list, or a 1-D tensor or array); special tokens dropped by default."""
        ids = [int(i) for i in ids]
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise UserError(f"token id {bad} is outside this tokenizer's vocabulary (size "
                            f"{self.vocab_size}); decode with the tokenizer saved with the model")
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def _hf_for(self, parse_special: bool) -> HFTokenizer:
        self.hf.encode_special_tokens = not parse_special
        return self.hf

    # ----------------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included; ids run from 0 to vocab_size - 1."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.hf.id_to_token(token_id)

    def special_ids(self) -> dict[str, int]:
        """Role -> id for the special tokens this tokenizer has (all seven for ours)."""
        return dict(self._special_ids)

    def _special(self, role: str) -> int:
        if role not in self._special_ids:
            raise UserError(f"this {self.kind} tokenizer has no {role} token "
                            f"({SPECIAL_TOKENS[role]}); train one with nanoformer, which adds "
                            f"all of {', '.join(SPECIAL_TOKENS.values())}")
        return self._special_ids[role]

    @property
    def pad_id(self) -> int:
        return self._special("pad")

    @property
    def unk_id(self) -> int:
        return self._special("unk")

    @property
    def bos_id(self) -> int:
        return self._special("bos")

    @property
    def eos_id(self) -> int:
        return self._special("eos")

    @property
    def mask_id(self) -> int:
        return self._special("mask")

    @property
    def cls_id(self) -> int:
        return self._special("cls")

    @property
    def sep_id(self) -> int:
        return self._special("sep")

    # ----------------------------------------------------------------------- files
    def to_json(self) -> str:
        """The Hugging Face tokenizer.json text (what `save` writes)."""
        return self.hf.to_str(pretty=True)

    def fingerprint(self) -> str:
        """sha256 of the tokenizer's definition: equal fingerprints encode text identically."""
        return hashlib.sha256(self.hf.to_str().encode("utf-8")).hexdigest()

    def save(self, path: PathLike) -> Path:
        """Write tokenizer.json atomically; `path` is a *.json file or a folder. Returns the file."""
        path = Path(path)
        if path.suffix.lower() != ".json":
            path = path / FILE_NAME
        write_bytes_atomic(path, self.to_json().encode("utf-8"))
        return path

    @classmethod
    def load(cls, path: PathLike) -> Tokenizer:
        """Read a tokenizer.json, given the file or the folder that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        if not path.is_file():
            raise UserError(f"{path}: tokenizer file not found; give the {FILE_NAME} file or the "
                            "folder (e.g. a checkpoint folder) that holds it")
        text = read_text(path)
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: corrupt tokenizer file, not JSON (line {e.lineno}, column "
                            f"{e.colno}: {e.msg}); save the tokenizer again or retrain it") from None
        try:
            hf = HFTokenizer.from_str(text)
        except Exception as e:  # the Rust side raises a bare Exception
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{path}: not a Hugging Face tokenizer.json ({reason}); save the "
                            "tokenizer again or retrain it") from None
        return cls(hf)

    def __repr__(self) -> str:
        return (f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, "
                f"byte_level={self.byte_level})")


# --------------------------------------------------------------------------- helpers
def _training_texts(files: PathLike | Sequence[PathLike] | None,
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


def _training_lines(files: PathLike | Sequence[PathLike] | None,
                    texts: Iterable[str] | None) -> Iterator[str]:
    """Line-sized pieces (line ends kept), which the Rust trainers process in parallel."""
    for text in _training_texts(files, texts):
        yield from text.splitlines(keepends=True)


def _metaspace_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Newlines are kept as their own pieces so that a long file can be encoded line block by line
    # block with the same result as in one piece (see nanoformer.data.lm).
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.Metaspace(prepend_scheme="never"),
    ])


def _check_vocab_size(vocab_size: int, floor: int, where: str) -> None:
    if not isinstance(vocab_size, int) or vocab_size < floor:
        raise UserError(f"{where}: vocab_size={vocab_size!r} is too small; it counts the "
                        f"{len(SPECIAL_TOKENS)} special tokens and the base symbols, so use at "
                        f"least {floor} (a few thousand suits a few MB of text)")


def _renumber_wordpiece(hf: HFTokenizer, n_specials: int) -> HFTokenizer:
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


def _infer_kind(spec: dict) -> str:
    """Our name for the algorithm in a tokenizer.json: the file itself is the record."""
    model = (spec.get("model") or {}).get("type")
    decoder = (spec.get("decoder") or {}).get("type")
    if model == "WordLevel":
        return "char" if decoder == "Fuse" else "wordlevel"
    return {"BPE": "bpe", "WordPiece": "wordpiece", "Unigram": "unigram"}.get(model, str(model).lower())


def _has_byte_level(pre_tokenizer: dict | None) -> bool:
    if not pre_tokenizer:
        return False
    if pre_tokenizer.get("type") == "ByteLevel":
        return True
    return any(_has_byte_level(p) for p in pre_tokenizer.get("pretokenizers", []))


def _find_special_ids(hf: HFTokenizer, specials: dict[str, str] | None) -> dict[str, int]:
    found: dict[str, int] = {}
    for role, token in SPECIAL_TOKENS.items():
        spellings = (specials[role],) if specials and role in specials else (
            (token,) + _OTHER_SPELLINGS.get(role, ()))
        for spelling in spellings:
            token_id = hf.token_to_id(spelling)
            if token_id is not None:
                found[role] = token_id
                break
    return found
