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
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer

from nanoformer import tokenizer_training as training
from nanoformer.data.text import read_text, write_bytes_atomic
from nanoformer.errors import UserError
from nanoformer.tokenizer_training import SPECIAL_TOKENS, PathLike

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
    # The algorithms live in tokenizer_training.py; each method takes that function's arguments.

    @classmethod
    def train_char(cls, files: PathLike | Sequence[PathLike] | None = None, **options) -> Tokenizer:
        """One token per Unicode code point seen in training (`tokenizer_training.char`)."""
        return cls(training.char(files, **options))

    @classmethod
    def train_bpe(cls, files: PathLike | Sequence[PathLike] | None = None, vocab_size: int = 8000, **options) -> Tokenizer:
        """Byte-pair encoding, byte level by default (`tokenizer_training.bpe`)."""
        return cls(training.bpe(files, vocab_size, **options))

    @classmethod
    def train_wordpiece(cls, files: PathLike | Sequence[PathLike] | None = None, vocab_size: int = 8000,
                        **options) -> Tokenizer:
        """BERT's WordPiece (`tokenizer_training.wordpiece`)."""
        return cls(training.wordpiece(files, vocab_size, **options))

    @classmethod
    def train_unigram(cls, files: PathLike | Sequence[PathLike] | None = None, vocab_size: int = 8000,
                      **options) -> Tokenizer:
        """SentencePiece's unigram model with byte fallback (`tokenizer_training.unigram`)."""
        return cls(training.unigram(files, vocab_size, **options))

    @classmethod
    def train(
        cls,
        kind: str,
        files: PathLike | Sequence[PathLike] | None = None,
        vocab_size: int = 8000,
        *,
        texts: Iterable[str] | None = None,
        prefix_space: bool = False,
        progress: bool = False,
    ) -> Tokenizer:
        """Train a tokenizer of `kind` ("char", "bpe", "unigram" or "wordpiece") with its defaults.

        A joint vocabulary for translation is one tokenizer trained on the texts of both
        languages: `Tokenizer.train("bpe", ["train.de", "train.en"], 8000)`. `prefix_space`
        (bpe, unigram) spells a sentence's first word as anywhere else (`tokenizer_training.unigram`);
        char and wordpiece do so already.
        """
        if kind == "char":
            return cls.train_char(files, texts=texts)
        trainers_by_kind = {"bpe": cls.train_bpe, "unigram": cls.train_unigram, "wordpiece": cls.train_wordpiece}
        if kind not in trainers_by_kind:
            raise UserError(f"unknown tokenizer kind {kind!r}; choose one of char, {', '.join(trainers_by_kind)}")
        options = {} if kind == "wordpiece" else {"prefix_space": prefix_space}
        return trainers_by_kind[kind](files, vocab_size, texts=texts, progress=progress, **options)

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

    def add_tag(self, token: str) -> int:
        """Append `token` to the vocabulary as a tag (a special token never split, e.g. "<bt>"); its id.

        Text never produces it (a "<bt>" typed in a sentence is spelled in ordinary tokens): a
        recipe puts its id in front of the sentences it marks, as Tagged Back-Translation does.
        """
        if self.hf.token_to_id(token) is not None:
            raise UserError(f"the tag {token!r} is already a token of the vocabulary (id {self.hf.token_to_id(token)}); "
                            "choose a string the vocabulary lacks, e.g. '<bt>'")
        self.hf.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        return self.hf.token_to_id(token)

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
