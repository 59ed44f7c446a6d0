"""Parallel corpora for translation: line-aligned file pairs or TSV, checked line by line.

A corpus is a set of *splits* (train, val, test sets), each a list of sentence pairs. It is named
in one of three ways in the `[data]` section of a run config:

- a standard set: `name = "multi30k"` (en, de, fr, cs; any two of them, e.g. de → en) or
  `name = "ko-en"` (Korean–English), read from `$NANOFORMER_DATA/<name>/`; multi30k is
  otherwise downloaded once from its public repository into `~/.cache/nanoformer/multi30k/`;
- a folder, `path = "my-corpus/"`, holding `SPLIT.SRC` / `SPLIT.TGT` file pairs (`train.de` and
  `train.en`, `val.de` and `val.en`, ...) or `SPLIT.tsv` files;
- a TSV file, `path = "pairs.tsv"`, one pair a line: source, a tab, target (further columns,
  such as Tatoeba's attribution, are ignored). It is the training split; its last
  `min(1000, 5%)` pairs are held out as the validation split "val".

Line i of the source file translates line i of the target file. Loading checks that, and reports
every problem with the file and line it comes from: files of different lengths, empty sides
(an error unless `skip_empty = true`), invalid UTF-8. Lines are split on "\\n" only (a stray
U+2028 inside a sentence must not shift the alignment) and stripped of surrounding spaces.

The Korean–English splits (see `$NANOFORMER_DATA/ko-en/README.md`): no public Korean–English set
of useful size comes in small files, so `ko-en` trains on what there is (~7k pairs):
    train = Tatoeba (5,249 everyday sentences) + JHE dev (720) + Park news dev (1,000)
    val   = JHE eval (720)
    test  = Park news test (2,000): the Korean benchmark
The news dev set goes into training because news is the test domain and the rest is short
everyday sentences; JHE eval is general-domain text kept apart for validation.
"""

from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nanoformer.data.text import cache_dir, data_dir, decode_text, write_bytes_atomic
from nanoformer.errors import UserError

TOKENIZERS = ("bpe", "unigram")
MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{file}.gz"
MULTI30K_LANGS = ("en", "de", "fr", "cs")
MULTI30K_SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr")
KO_EN_SPLITS: dict[str, list[str]] = {  # split -> file stems under ko-en/, each with .ko and .en
    "train": ["tatoeba/kor", "jhe/jhe-koen-dev", "park-news/korean-english-park.dev"],
    "val": ["jhe/jhe-koen-eval"],
    "test": ["park-news/korean-english-park.test"],
}
STANDARD_SETS = {
    "multi30k": {"langs": MULTI30K_LANGS, "valid": "val", "tests": ["test_2016_flickr", "test_2017_flickr"]},
    "ko-en": {"langs": ("ko", "en"), "valid": "val", "tests": ["test"]},
}


@dataclass
class TranslationDataConfig:
    """The `[data]` section of a translation run (kind = "translation")."""

    name: str | None = None  # a standard set: "multi30k" or "ko-en"
    path: str | None = None  # a folder of SPLIT.SRC / SPLIT.TGT (or SPLIT.tsv) files, or one TSV file
    src_lang: str = "de"
    tgt_lang: str = "en"
    tokenizer: str = "bpe"  # "bpe" (byte-level, lossless) or "unigram" (SentencePiece-style, byte fallback)
    vocab_size: int = 8000
    bpe_dropout: float = 0.0  # e.g. 0.1: segment the training text anew each epoch (data/bpe_dropout.py)
    joint_vocab: bool = True  # one vocabulary for both languages: shared embeddings and tied output
    # A space before each sentence (SentencePiece's add_dummy_prefix): its first word is spelled as
    # anywhere else, which free word order needs ("학교에 나는 간다"); see tokenizer_training.unigram.
    prefix_space: bool = False
    max_tokens: int = 4096  # batch size in tokens, padding included (sentences x longest side)
    max_length: int = 128  # training pairs with a longer side (in tokens) are left out
    max_length_ratio: float | None = None  # e.g. 3.0: leave out training pairs whose sides differ more
    skip_empty: bool = False  # leave out pairs with an empty side (default: report them as errors)
    valid_split: str = "val"
    test_splits: list[str] | None = None  # default: the set's test sets, or the folder's test* splits
    # Back-translated pairs mixed into training (data/back_translation.py): STEM.SRC + STEM.TGT, or a .tsv
    synthetic: str | None = None
    synthetic_tag: str = "<bt>"  # put before every synthetic source ("" = untagged)
    synthetic_ratio: float = 1.0  # synthetic pairs per real pair in the training mix

    def __post_init__(self) -> None:
        if (self.name is None) == (self.path is None):
            raise UserError("[data] give exactly one of `name` (a standard set: "
                            f"{', '.join(STANDARD_SETS)}) or `path` (a folder of file pairs, or a TSV file)")
        if self.name is not None and self.name not in STANDARD_SETS:
            raise UserError(f"[data] name = {self.name!r} is not a standard translation set; choose one of "
                            f"{', '.join(STANDARD_SETS)}, or give `path` to your own files")
        if self.name is not None:
            check_language_pair(self.name, self.src_lang, self.tgt_lang)
        if self.src_lang == self.tgt_lang:
            raise UserError(f"[data] src_lang and tgt_lang are both {self.src_lang!r}; name two languages")
        if self.tokenizer not in TOKENIZERS:
            raise UserError(f"[data] tokenizer = {self.tokenizer!r}; translation uses one of {list(TOKENIZERS)}")
        for key in ("vocab_size", "max_tokens", "max_length"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"[data] {key} = {value!r}; expected a positive integer")
        if not (isinstance(self.bpe_dropout, (int, float)) and not isinstance(self.bpe_dropout, bool)
                and 0.0 <= self.bpe_dropout < 1.0):
            raise UserError(f"[data] bpe_dropout = {self.bpe_dropout!r}; expected a probability in [0, 1), e.g. 0.1")
        if not isinstance(self.prefix_space, bool):
            raise UserError(f"[data] prefix_space = {self.prefix_space!r}; expected true or false")
        if self.bpe_dropout and self.tokenizer != "bpe":
            raise UserError(f"[data] bpe_dropout needs tokenizer = \"bpe\", but it is {self.tokenizer!r}; "
                            "set bpe_dropout = 0 or tokenizer = \"bpe\"")
        if self.max_length + 1 > self.max_tokens:
            raise UserError(f"[data] max_length = {self.max_length} does not fit in a batch of max_tokens = "
                            f"{self.max_tokens}; raise max_tokens (e.g. 4096) or lower max_length")
        if self.max_length_ratio is not None and not (isinstance(self.max_length_ratio, (int, float))
                                                      and self.max_length_ratio >= 1):
            raise UserError(f"[data] max_length_ratio = {self.max_length_ratio!r}; expected a number >= 1 "
                            "(e.g. 3.0), or leave it out")
        check_synthetic_config(self.synthetic, self.synthetic_tag, self.synthetic_ratio)
        if self.synthetic and self.bpe_dropout:
            raise UserError("[data] bpe_dropout re-segments the real pairs each epoch and cannot be mixed with "
                            "synthetic pairs yet; set bpe_dropout = 0 or remove synthetic")
        if self.test_splits is not None and (not isinstance(self.test_splits, list)
                                             or not all(isinstance(s, str) for s in self.test_splits)):
            raise UserError(f"[data] test_splits = {self.test_splits!r}; expected a list of split names")

    @property
    def pair(self) -> str:
        return f"{self.src_lang}-{self.tgt_lang}"


def check_synthetic_config(synthetic: str | None, tag: str, ratio: float) -> None:
    """The [data] synthetic keys, checked with the rest of the section."""
    if synthetic is not None and (not isinstance(synthetic, str) or not synthetic):
        raise UserError(f"[data] synthetic = {synthetic!r}; expected the path stem of back-translated pairs "
                        "(STEM.SRC and STEM.TGT) or a .tsv file")
    if not isinstance(tag, str) or any(ch.isspace() for ch in tag):
        raise UserError(f"[data] synthetic_tag = {tag!r}; expected one word without spaces, e.g. '<bt>', or '' "
                        "for untagged back-translation")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
        raise UserError(f"[data] synthetic_ratio = {ratio!r}; expected a number > 0 (synthetic pairs per real "
                        "pair, e.g. 1.0)")


def check_language_pair(name: str, src: str, tgt: str) -> None:
    langs = STANDARD_SETS[name]["langs"]
    for side, lang in (("src_lang", src), ("tgt_lang", tgt)):
        if lang not in langs:
            pairs = ", ".join(f"{a}-{b}" for a in langs for b in langs if a != b)
            raise UserError(f"[data] {side} = {lang!r}: {name} has no {lang!r} side; it pairs {pairs}")


# --------------------------------------------------------------------------- splits and files


@dataclass
class SplitFiles:
    """Where one split's pairs come from: (source, target) file pairs, or TSV files (target None)."""

    name: str
    files: list[tuple[Path, Path | None]]
    holdout: str | None = None  # for a single TSV file: "head" (train) or "tail" (val)

    def to_json(self) -> dict:
        return {"files": [[str(s), str(t) if t is not None else None] for s, t in self.files], "holdout": self.holdout}

    @classmethod
    def from_json(cls, name: str, record: dict) -> SplitFiles:
        files = [(Path(s), Path(t) if t is not None else None) for s, t in record["files"]]
        return cls(name, files, record.get("holdout"))


@dataclass
class ParallelText:
    """Sentence pairs with, for each pair, the file pair and line number it came from."""

    src: list[str] = field(default_factory=list)
    tgt: list[str] = field(default_factory=list)
    origin: list[tuple[int, int]] = field(default_factory=list)  # (index into files, 1-based line)
    files: list[tuple[Path, Path | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.src)

    def where(self, i: int, side: str = "src") -> str:
        """'train.de:17' for pair i (side "src" or "tgt"); TSV pairs name the TSV file."""
        file_index, line = self.origin[i]
        src, tgt = self.files[file_index]
        return f"{(tgt if side == 'tgt' and tgt is not None else src)}:{line}"

    def subset(self, keep: Sequence[int]) -> ParallelText:
        return ParallelText([self.src[i] for i in keep], [self.tgt[i] for i in keep],
                            [self.origin[i] for i in keep], self.files)


def resolve_splits(data: TranslationDataConfig, base_dir: str | os.PathLike | None = None) -> dict[str, SplitFiles]:
    """Every split the config's corpus has, by name (files are checked when a split is read)."""
    if data.name == "multi30k":
        folder = multi30k_folder()
        splits = {}
        for split in MULTI30K_SPLITS:
            if split == "test_2017_flickr" and "cs" in (data.src_lang, data.tgt_lang):
                continue  # there is no Czech 2017 test set
            files = [(folder / f"{split}.{data.src_lang}", folder / f"{split}.{data.tgt_lang}")]
            splits[split] = SplitFiles(split, files)
        return splits
    if data.name == "ko-en":
        root = _shared_folder("ko-en")
        return {split: SplitFiles(split, [(root / f"{stem}.{data.src_lang}", root / f"{stem}.{data.tgt_lang}")
                                          for stem in stems])
                for split, stems in KO_EN_SPLITS.items()}
    path = find_path(Path(data.path).expanduser(), base_dir)
    if path.is_file():
        return {"train": SplitFiles("train", [(path, None)], holdout="head"),
                "val": SplitFiles("val", [(path, None)], holdout="tail")}
    splits = {}
    for file in sorted(path.iterdir()):
        if file.name.startswith("."):
            continue
        if file.suffix == f".{data.src_lang}" and (path / f"{file.stem}.{data.tgt_lang}").exists():
            splits[file.stem] = SplitFiles(file.stem, [(file, path / f"{file.stem}.{data.tgt_lang}")])
        elif file.suffix == ".tsv" and file.stem not in splits:
            splits[file.stem] = SplitFiles(file.stem, [(file, None)])
    if "train" not in splits:
        raise UserError(f"{path}: no training files for {data.pair}; the folder needs train.{data.src_lang} and "
                        f"train.{data.tgt_lang} (line-aligned), or train.tsv")
    return splits


def default_test_splits(data: TranslationDataConfig, splits: dict[str, SplitFiles]) -> list[str]:
    if data.test_splits is not None:
        return list(data.test_splits)
    if data.name is not None:
        return [s for s in STANDARD_SETS[data.name]["tests"] if s in splits]
    return sorted(s for s in splits if s.startswith("test"))


def get_split(splits: dict[str, SplitFiles], name: str, where: str = "[data]") -> SplitFiles:
    if name not in splits:
        raise UserError(f"{where}: no split {name!r} in this corpus; it has {', '.join(sorted(splits))}")
    return splits[name]


def multi30k_folder() -> Path:
    """Multi30k's raw task-1 files: `$NANOFORMER_DATA/multi30k`, else the cache, else downloaded."""
    shared = data_dir()
    if shared is not None and (shared / "multi30k" / "train.en").is_file():
        return shared / "multi30k"
    folder = cache_dir() / "multi30k"
    for split in MULTI30K_SPLITS:
        for lang in MULTI30K_LANGS:
            if split == "test_2017_flickr" and lang == "cs":
                continue
            target = folder / f"{split}.{lang}"
            if not target.is_file():
                _download_gz(MULTI30K_URL.format(file=f"{split}.{lang}"), target)
    return folder


def _download_gz(url: str, dest: Path) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = gzip.decompress(response.read())
    except (urllib.error.URLError, OSError, EOFError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"multi30k is not in $NANOFORMER_DATA/multi30k and could not be downloaded from {url} "
                        f"({reason}); connect to the internet, or set NANOFORMER_DATA to a folder holding "
                        "multi30k/train.en, train.de, ...") from None
    write_bytes_atomic(dest, data)


def _shared_folder(name: str) -> Path:
    shared = data_dir()
    if shared is None or not (shared / name).is_dir():
        where = f"$NANOFORMER_DATA ({shared})" if shared is not None else "$NANOFORMER_DATA (not set)"
        raise UserError(f"the {name} corpus is not in {where}; set NANOFORMER_DATA to the folder that holds "
                        f"{name}/ (see its README.md), or give [data] path to your own files")
    return shared / name


def find_path(path: Path, base_dir: str | os.PathLike | None) -> Path:
    candidates = [path] if path.is_absolute() else [
        (Path(base_dir) if base_dir is not None else Path.cwd()) / path,
        *([data_dir() / path] if data_dir() is not None else []),
    ]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    raise UserError(f"[data] path {str(path)!r}: no such file or folder (looked in: "
                    f"{', '.join(str(c) for c in candidates)}); check the path or set NANOFORMER_DATA")


# --------------------------------------------------------------------------- reading and checking


def read_lines(path: Path) -> list[str]:
    """The file's lines, split on "\\n" only, "\\r" and surrounding spaces stripped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; every split needs both sides of each file pair") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a file of sentences") from None
    text = decode_text(raw, path)  # names the byte and line of invalid UTF-8; refuses empty files
    text = text.removesuffix("\n")
    return [line.strip() for line in text.split("\n")]


def read_split(split: SplitFiles, skip_empty: bool = False) -> ParallelText:
    """All pairs of a split, checked: equal line counts, no empty sides (unless skipped)."""
    out = ParallelText(files=list(split.files))
    skipped: list[str] = []
    for index, (src_path, tgt_path) in enumerate(split.files):
        if tgt_path is None:
            src_lines, tgt_lines = _read_tsv(src_path)
        else:
            src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
            if len(src_lines) != len(tgt_lines):
                longer, n = (src_path, len(tgt_lines)) if len(src_lines) > len(tgt_lines) else (tgt_path, len(src_lines))
                raise UserError(
                    f"{src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
                    f"{longer}:{n + 1} is the first line without a translation; line i of one file must "
                    "translate line i of the other"
                )
        lines = range(len(src_lines))
        if split.holdout is not None:
            held = min(1000, max(1, len(src_lines) // 20))
            lines = range(len(src_lines) - held) if split.holdout == "head" else range(len(src_lines) - held, len(src_lines))
        for i in lines:
            src, tgt = src_lines[i], tgt_lines[i]
            if not src or not tgt:
                empty, other = (src_path, tgt_path or src_path) if not src else (tgt_path or src_path, src_path)
                side = "source" if not src else "target"
                where = f"{empty}:{i + 1}" + (f" (column {1 if not src else 2})" if tgt_path is None else "")
                if not skip_empty:
                    raise UserError(f"{where}: empty {side} side of the pair with {other}:{i + 1}; remove the "
                                    "pair from both files, or set [data] skip_empty = true to leave such pairs out")
                skipped.append(where)
                continue
            out.src.append(src)
            out.tgt.append(tgt)
            out.origin.append((index, i + 1))
    if skipped:
        _warn(f"{split.name}: left out {len(skipped)} pair(s) with an empty side", skipped)
    if not out.src:
        raise UserError(f"split {split.name!r} ({split.files[0][0]}) has no sentence pairs; give it some text")
    return out


def _read_tsv(path: Path) -> tuple[list[str], list[str]]:
    src, tgt = [], []
    for number, line in enumerate(read_lines(path), start=1):
        columns = line.split("\t")
        if len(columns) < 2:
            raise UserError(f"{path}:{number}: expected source<TAB>target, found {len(columns)} column; "
                            "separate the two sentences with a tab")
        src.append(columns[0].strip())
        tgt.append(columns[1].strip())
    return src, tgt


def filter_pairs(
    text: ParallelText,
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    max_length: int,
    max_length_ratio: float | None = None,
    split: str = "train",
) -> list[int]:
    """Indices of the pairs within `max_length` tokens a side and within `max_length_ratio`.

    The pairs left out are reported in one warning with the first few file:line positions.
    """
    keep, too_long, too_uneven = [], [], []
    for i, (s, t) in enumerate(zip(src_ids, tgt_ids)):
        if len(s) > max_length or len(t) > max_length:
            too_long.append(text.where(i, "src" if len(s) > max_length else "tgt"))
        elif max_length_ratio is not None and max(len(s), len(t)) > max_length_ratio * max(1, min(len(s), len(t))):
            too_uneven.append(text.where(i))
        else:
            keep.append(i)
    if too_long:
        _warn(f"{split}: left out {len(too_long)} pair(s) longer than max_length = {max_length} tokens", too_long)
    if too_uneven:
        _warn(f"{split}: left out {len(too_uneven)} pair(s) whose sides differ in length by more than "
              f"max_length_ratio = {max_length_ratio}", too_uneven)
    if not keep:
        raise UserError(f"{split}: every pair was filtered out; raise [data] max_length (now {max_length}) "
                        "or max_length_ratio")
    return keep


def _warn(message: str, where: list[str]) -> None:
    shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
    warnings.warn(f"{message}: {shown}", stacklevel=3)
