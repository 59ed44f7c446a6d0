"""Masked-language-model data: documents → packed sequences → dynamically masked batches.

The encoder (BERT) family learns to fill in hidden words from both sides of their context:

1. *Units.* Each file is read as a stream of text units, in order: the sentences of a plain text
   file's paragraphs (a paragraph is the lines between blank lines), one record of a `.jsonl`
   file (its "text"/"review"/... field), one paragraph ("context") of a SQuAD-style `.json` file
   such as KorQuAD, one row's text column of a `.tsv`/`.csv` file (e.g. StyleKQC's "sentence"),
   or one line, its label dropped, of a file listed in `label_first` ("<label> <text>" lines, as
   SST-2's): a task's own unlabelled text, for task-adaptive pre-training.
   The last `val_fraction` of each file's units is held out for validation.
2. *Packing.* Consecutive units are packed into sequences of at most `max_length` tokens,
   [CLS] and [SEP] included, so little is spent on padding; a unit longer than that is cut into
   pieces. With `pairs` (the default), a sequence of two or more units is cut at a unit boundary
   into segments A and B: "[CLS] A [SEP] B [SEP]", token types 0 for "[CLS] A [SEP]" and 1 for
   "B [SEP]", so the segment embeddings are trained for sentence-pair tasks. (There is no
   next-sentence objective: RoBERTa found it does not help.) Packing is done once, seeded, and
   cached under the run's data folder.
3. *Masking*, drawn afresh for every batch, so each epoch sees new masks (RoBERTa's dynamic
   masking): each token is selected with probability `mask_prob` (15%); a selected token becomes
   [MASK] with probability 80%, a random non-special token 10%, and stays itself 10%. Labels are
   the original ids at selected positions and -100 (ignored) elsewhere. Special tokens ([CLS],
   [SEP], [PAD]) are never selected. With `whole_word_mask`, words are selected instead of tokens:
   a WordPiece token starting with "##" belongs to the word before it, and all the tokens of a
   selected word are selected together (the 80/10/10 choice is still made per token).

Determinism: the masks of a batch are a function of (seed, epoch, position in the epoch), and
the epoch's order a function of (seed, epoch), so `state_dict()` is three integers and a resumed
run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from nanoformer.data.masking import Masker
from nanoformer.data.sequence_packing import PackedSequences, pack_units
from nanoformer.data.text import (
    PathLike,
    resolve_text_files,
    sha256_file,
    write_bytes_atomic,
)
from nanoformer.data.units import read_units
from nanoformer.errors import UserError

if TYPE_CHECKING:
    from nanoformer.tokenizer import Tokenizer

CACHE_FORMAT = 1  # of the packed-sequence cache; bump when its layout changes
@dataclass
class MLMDataConfig:
    """Text for masked-language-model pre-training (`[data] kind = "mlm"`)."""

    name: str | None = None  # a standard set, e.g. "tinyshakespeare"
    path: Any = None  # a file or folder, or a list of them (str | list[str])
    tokenizer: str = "wordpiece"
    vocab_size: int = 8000
    lowercase: bool = True
    strip_accents: bool | None = None  # None: as lowercase (BERT uncased); Korean is kept whole either way
    max_length: int = 128  # tokens per sequence, [CLS] and [SEP] included
    pairs: bool = True  # cut sequences into segments A and B (token types 0 / 1)
    mask_prob: float = 0.15
    mask_token_prob: float = 0.8  # of the selected tokens: replaced by [MASK]
    random_token_prob: float = 0.1  # of the selected tokens: replaced by a random token (the rest stay)
    whole_word_mask: bool = False
    val_fraction: float = 0.05  # the last part of every file
    text_column: str | None = None  # .tsv/.csv: the column holding the text (default: sentence, text, ...)
    # Classification files of "<label> <text>" lines (e.g. sst2/stsa.binary.train) whose texts join
    # the corpus, labels dropped: pre-training on the task's own domain (Gururangan et al., 2020).
    label_first: list[str] = field(default_factory=list)
    cache_dir: str | None = None  # packed sequences; default RUN_DIR/data

    def __post_init__(self) -> None:
        if isinstance(self.label_first, str):
            self.label_first = [self.label_first]
        if not isinstance(self.label_first, list) or not all(isinstance(p, str) for p in self.label_first):
            raise UserError(f"[data] label_first = {self.label_first!r}; expected a list of file paths")
        if self.name is None and self.path is None and not self.label_first:
            raise UserError("[data] needs `path` (a file, a folder or a list of them), `name` (a standard set) "
                            "or `label_first` (labelled '<label> <text>' files)")
        if self.path is not None and not isinstance(self.path, (str, list)):
            raise UserError(f"[data] path = {self.path!r}; expected a string or a list of strings")
        if self.tokenizer not in ("wordpiece", "bpe", "char", "unigram"):
            raise UserError(f"[data] tokenizer = {self.tokenizer!r}; expected 'wordpiece' (BERT), 'bpe', 'char' or 'unigram'")
        if self.whole_word_mask and self.tokenizer != "wordpiece":
            raise UserError("[data] whole_word_mask needs tokenizer = 'wordpiece' (words are read from its '##' pieces)")
        if self.max_length < (5 if self.pairs else 3):
            raise UserError(f"[data] max_length = {self.max_length} leaves no room for text after [CLS] and [SEP]; use e.g. 128")
        for key in ("mask_prob", "mask_token_prob", "random_token_prob"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"[data] {key} = {value}; expected a probability in [0, 1]")
        if not 0.0 < self.mask_prob:
            raise UserError("[data] mask_prob must be > 0 (BERT uses 0.15)")
        if self.mask_token_prob + self.random_token_prob > 1.0:
            raise UserError(
                f"[data] mask_token_prob + random_token_prob = {self.mask_token_prob + self.random_token_prob} > 1; "
                "BERT uses 0.8 and 0.1 (the remaining 0.1 keep their token)"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"[data] val_fraction = {self.val_fraction}; expected a fraction in (0, 1), e.g. 0.05")

    def sources(self) -> Any:
        return self.path if self.path is not None else self.name


# --------------------------------------------------------------------------- the packed corpus, cached


def build_sequences(
    files: Sequence[Path],
    tokenizer: Tokenizer,
    config: MLMDataConfig,
    cache_dir: PathLike | None,
    seed: int = 0,
    label_first: Collection[Path] = (),
) -> dict[str, PackedSequences]:
    """{"train": ..., "val": ...} packed from `files`, cached in `cache_dir` (None: no cache);
    the files in `label_first` are read as "<label> <text>" lines."""
    files = [Path(f).resolve() for f in files]
    label_first = {Path(f).resolve() for f in label_first}
    key_material = {
        "format": CACHE_FORMAT,
        "files": [[str(f), sha256_file(f)] for f in files],
        "tokenizer": tokenizer.fingerprint(),
        "max_length": config.max_length,
        "pairs": config.pairs,
        "val_fraction": config.val_fraction,
        "text_column": config.text_column,
        "label_first": sorted(str(f) for f in files if f in label_first),
        "seed": seed,
    }
    key = hashlib.sha256(json.dumps(key_material, sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"mlm-{key}.npz" if cache_dir is not None else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as saved:
                return {split: PackedSequences(saved[f"{split}_tokens"], saved[f"{split}_starts"], saved[f"{split}_cuts"])
                        for split in ("train", "val")}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    units: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for path in files:
        texts = read_units(path, config.text_column, label_first=path in label_first)
        if not texts:
            raise UserError(f"{path}: no text found in the file; leave it out of [data] path")
        n_val = int(len(texts) * config.val_fraction)
        ids = _encode_all(tokenizer, texts)
        units["train"].extend(ids[:len(ids) - n_val])
        units["val"].extend(ids[len(ids) - n_val:])
    if not units["val"]:
        raise UserError(f"the validation split is empty: val_fraction = {config.val_fraction} of "
                        f"{len(units['train'])} text units keeps none; raise val_fraction or give more text")
    rng = np.random.default_rng(seed)
    packed = {split: pack_units(units[split], config.max_length, config.pairs, rng) for split in ("train", "val")}
    if cache is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **{f"{split}_{name}": getattr(packed[split], name)
                            for split in packed for name in ("tokens", "starts", "cuts")})
        write_bytes_atomic(cache, buffer.getvalue())
    return packed


def _encode_all(tokenizer: Tokenizer, texts: list[str], chunk: int = 20000) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    dtype = np.int32
    for i in range(0, len(texts), chunk):
        out.extend(np.asarray(ids, dtype=dtype) for ids in tokenizer.encode_batch(texts[i:i + chunk]))
    return out


# --------------------------------------------------------------------------- batches


def assemble(packed: PackedSequences, indices: Sequence[int], cls_id: int, sep_id: int, pad_id: int,
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, attention mask, token types) for sequences `indices`, right-padded to the longest."""
    rows = []
    for i in indices:
        content = packed.tokens[packed.starts[i]:packed.starts[i + 1]]
        cut = int(packed.cuts[i])
        if cut < 0:
            rows.append((np.concatenate([[cls_id], content, [sep_id]]), None))
        else:
            rows.append((np.concatenate([[cls_id], content[:cut], [sep_id], content[cut:], [sep_id]]), cut + 2))
    length = max(len(r) for r, _ in rows)
    ids = np.full((len(rows), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), length), dtype=np.int64)
    types = np.zeros((len(rows), length), dtype=np.int64)
    for row, (tokens, b_start) in enumerate(rows):
        ids[row, :len(tokens)] = tokens
        mask[row, :len(tokens)] = 1
        if b_start is not None:
            types[row, b_start:len(tokens)] = 1
    return ids, mask, types


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in key])))


class MLMBatches:
    """The trainer's batch source for masked-LM pre-training (see `training.contracts.BatchSource`)."""

    def __init__(self, splits: dict[str, PackedSequences], tokenizer: Tokenizer, masker: Masker, batch_size: int,
                 n_eval_batches: int | None = None, seed: int = 0, token_types: bool = True) -> None:
        for split, packed in splits.items():
            if len(packed) == 0:
                raise UserError(f"the {split} split has no sequences; give more text")
        self.splits, self.masker, self.batch_size = splits, masker, batch_size
        self.n_eval_batches, self.seed, self.token_types = n_eval_batches, seed, token_types
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        if "train" not in self.splits:  # an evaluation-only source
            return np.zeros(0, dtype=np.int64)
        return _rng(self.seed, epoch, 1).permutation(len(self.splits["train"]))

    def _batch(self, split: str, indices: Sequence[int], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        ids, mask, types = assemble(self.splits[split], indices, self.cls_id, self.sep_id, self.pad_id)
        inputs, labels = self.masker(ids, rng)
        batch = {"input_ids": torch.from_numpy(inputs), "attention_mask": torch.from_numpy(mask),
                 "labels": torch.from_numpy(labels)}
        if self.token_types:
            batch["token_type_ids"] = torch.from_numpy(types)
        return batch

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]:
        if split != "train" or "train" not in self.splits:
            raise UserError(f"next_batch serves the train split; use eval_batches({split!r})")
        rng = _rng(self.seed, self.epoch, self.position, 2)  # masks depend on where we are: new every epoch
        indices = []
        while len(indices) < self.batch_size:
            if self.position >= len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._permutation(self.epoch)
            take = min(self.batch_size - len(indices), len(self._order) - self.position)
            indices.extend(self._order[self.position:self.position + take].tolist())
            self.position += take
        return self._batch("train", indices, rng)

    def eval_batches(self, split: str = "val", n_batches: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The split in order with fixed masks: the same batches on every call."""
        if split not in self.splits:
            raise UserError(f"unknown split {split!r}; use one of {', '.join(self.splits)}")
        n_batches = self.n_eval_batches if n_batches is None else n_batches
        total = len(self.splits[split])
        for number, start in enumerate(range(0, total, self.batch_size)):
            if n_batches is not None and number >= n_batches:
                return
            yield self._batch(split, range(start, min(total, start + self.batch_size)), _rng(self.seed, number, 3))

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "train_sequences": len(self.splits["train"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["train_sequences"]) != len(self.splits["train"]):
            raise UserError(f"the saved data state is for {state['train_sequences']} training sequences, but this "
                            f"data has {len(self.splits['train'])}; resume with the same text, tokenizer and [data] settings")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)

    def tokens_per_batch(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())


def sequences_from_config(config: MLMDataConfig, base_dir: Path | None) -> list[Path]:
    """The files named by [data] path (or name), then those named by `label_first`.

    A file that `path` also reaches (named twice, or inside a listed folder) is read once, as
    labelled: reading it twice would double its sentences in the corpus.
    """
    plain = resolve_text_files(config.sources(), base_dir=base_dir) if config.sources() is not None else []
    labelled = label_first_files(config, base_dir)
    named = {path.resolve() for path in labelled}
    return [path for path in plain if path.resolve() not in named] + labelled


def label_first_files(config: MLMDataConfig, base_dir: Path | None) -> list[Path]:
    """The files named by [data] label_first, resolved."""
    return resolve_text_files(config.label_first, base_dir=base_dir) if config.label_first else []
