"""Labelled sentences (and sentence pairs) for fine-tuning an encoder as a classifier.

Three file formats, chosen by `format` (default: by the file's suffix):

- "tsv" / "csv": columns, by default with a header row naming them. `text_column` (default
  "sentence"), an optional `text_pair_column` for sentence-pair tasks, and `label_column`
  (default "label") are column names, or 0-based indices when `header = false`.
  StyleKQC's `topic/train.tsv` is `label_column = "topic"`.
- "label_first": one example per line, "<label> <text>" (SST-2 as Kim (2014) distributes it,
  `stsa.binary.train`).

A sentence becomes "[CLS] text [SEP]", a pair "[CLS] a [SEP] b [SEP]" with token types 0 then 1,
cut to `max_length` tokens (a pair loses tokens from its longer side first).

The classes are `labels` in the given order, or else the distinct labels of the training file,
sorted (numerically when they are all integers). A label in a dev or test file that is not
among them is an error naming the file and line, as is a row with the wrong number of fields.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from nanoformer.data.text import decode_text
from nanoformer.errors import UserError

if TYPE_CHECKING:
    from nanoformer.tokenizer import Tokenizer

FORMATS = ("auto", "tsv", "csv", "label_first")


@dataclass
class ClassificationDataConfig:
    """Fine-tuning data (`[data] kind = "classification"`)."""

    train: str | None = None  # the training file
    dev: str | None = None  # validation file (default: val_fraction of train, held out)
    test: str | None = None  # evaluated once at the end of training
    format: str = "auto"  # tsv | csv | label_first; auto: by suffix (.tsv, .csv)
    header: bool = True  # tsv/csv: the first row names the columns
    text_column: Any = None  # name or index; default "sentence" (or 1 without a header)
    text_pair_column: Any = None  # second sentence of a pair task (name or index)
    label_column: Any = None  # name or index; default "label" (or 0 without a header)
    labels: list | None = None  # the classes in order (default: sorted labels of train)
    max_length: int = 128  # tokens per example, [CLS] and [SEP] included; longer ones are cut
    tokenizer: str = "wordpiece"  # only when training from scratch (no [model] init_from)
    vocab_size: int = 8000
    lowercase: bool = True
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.train is None:
            raise UserError("[data] kind = 'classification' needs `train` (a .tsv, .csv or label_first file)")
        if self.format not in FORMATS:
            raise UserError(f"[data] format = {self.format!r}; expected one of {list(FORMATS)}")
        if self.max_length < 3:
            raise UserError(f"[data] max_length = {self.max_length}; it counts [CLS] and [SEP], use e.g. 128")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"[data] val_fraction = {self.val_fraction}; expected a fraction in (0, 1)")
        for key in ("text_column", "text_pair_column", "label_column"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                raise UserError(f"[data] {key} = {value!r}; expected a column name or a 0-based index")
        if self.labels is not None:
            if not isinstance(self.labels, list) or len(self.labels) < 2:
                raise UserError(f"[data] labels = {self.labels!r}; expected a list of at least two classes")
            self.labels = [str(label) for label in self.labels]
            if len(set(self.labels)) != len(self.labels):
                raise UserError(f"[data] labels = {self.labels}: a class is listed twice")


@dataclass
class Example:
    text: str
    pair: str | None
    label: str | None
    where: str  # "file:line", for messages


def file_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv"):
        return suffix[1:]
    raise UserError(f"{path}: cannot tell the format from the suffix {suffix or '(none)'!r}; set [data] format to "
                    "'tsv', 'csv' or 'label_first' ('<label> <text>' lines, as SST-2's stsa.binary.*)")


def read_examples(path: str | Path, fmt: str = "auto", *, header: bool = True, text_column: Any = None,
                  text_pair_column: Any = None, label_column: Any = None, with_labels: bool = True) -> list[Example]:
    """The examples of one file; every malformed row is an error naming the file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror}); check the path") from None
    text = decode_text(data, path)
    fmt = file_format(path, fmt)
    examples: list[Example] = []
    if fmt == "label_first":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            label, _, sentence = line.strip().partition(" ")
            if not sentence.strip():
                raise UserError(f"{path}:{number}: expected '<label> <text>', got {line.strip()[:60]!r}; fix the line")
            examples.append(Example(sentence.strip(), None, label, f"{path}:{number}"))
        return _nonempty(examples, path)

    delimiter = "\t" if fmt == "tsv" else ","
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: malformed {fmt.upper()} ({e}); fix the row") from None
    rows = [(n, row) for n, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise UserError(f"{path}: file is empty")
    names = rows[0][1] if header else None
    if header:
        rows = rows[1:]
    width = len(names) if names else len(rows[0][1]) if rows else 0

    def column(value: Any, default_name: str, default_index: int, role: str, required: bool = True) -> int | None:
        if value is None:
            if not required:
                return None
            value = default_name if names else default_index
        if isinstance(value, int):
            if not 0 <= value < width:
                raise UserError(f"{path}: [data] {role} = {value} but rows have {width} fields (0-based indices)")
            return value
        if names is None:
            raise UserError(f"{path}: [data] {role} = {value!r} is a column name, but header = false; give an index")
        if value not in names:
            raise UserError(f"{path}:1: no column {value!r} in the header {names}; set [data] {role} to one of them")
        return names.index(value)

    text_i = column(text_column, "sentence", 1, "text_column")
    pair_i = column(text_pair_column, "", 0, "text_pair_column", required=False)
    label_i = column(label_column, "label", 0, "label_column") if with_labels else None
    for number, row in rows:
        if len(row) != width:
            raise UserError(f"{path}:{number}: {len(row)} fields, expected {width}"
                            f"{' as in the header' if names else ''}; fix the row (a stray delimiter or quote?)")
        sentence = row[text_i].strip()
        pair = row[pair_i].strip() if pair_i is not None else None
        label = row[label_i].strip() if label_i is not None else None
        if not sentence or (pair_i is not None and not pair):
            raise UserError(f"{path}:{number}: empty text; fill it in or remove the row")
        if label_i is not None and not label:
            raise UserError(f"{path}:{number}: empty label; fill it in or remove the row")
        examples.append(Example(sentence, pair, label, f"{path}:{number}"))
    return _nonempty(examples, path)


def _nonempty(examples: list[Example], path: Path) -> list[Example]:
    if not examples:
        raise UserError(f"{path}: no examples in the file")
    return examples


def label_set(train: list[Example], given: list[str] | None = None) -> list[str]:
    """The classes: `given`, checked against the training labels, or the sorted training labels."""
    if given is not None:
        check_labels(train, given)
        return list(given)
    found = {e.label for e in train}
    if len(found) < 2:
        raise UserError(f"{train[0].where.rsplit(':', 1)[0]}: the training data has only the label(s) {sorted(found)}; "
                        "a classifier needs at least two classes")
    if all(label.lstrip("-").isdigit() for label in found):
        return sorted(found, key=int)
    return sorted(found)


def check_labels(examples: list[Example], labels: Sequence[str], what: str = "the classes") -> None:
    known = set(labels)
    for e in examples:
        if e.label not in known:
            raise UserError(f"{e.where}: label {e.label!r} is not one of {what} {list(labels)}; fix the row, "
                            "or list every class in [data] labels")


# --------------------------------------------------------------------------- encoding


def encode_example(tokenizer: Tokenizer, text: str, pair: str | None, max_length: int | None,
                   where: str = "", truncate: bool = True) -> tuple[list[int], list[int]]:
    """(ids, token types) of "[CLS] text [SEP] (pair [SEP])", cut to `max_length` if `truncate`."""
    a = tokenizer.encode(text)
    b = tokenizer.encode(pair) if pair is not None else None
    extra = 3 if b is not None else 2
    total = len(a) + (len(b) if b is not None else 0) + extra
    if max_length is not None and total > max_length:
        if not truncate:
            raise UserError(f"{where or 'text'}: {total} tokens with [CLS]/[SEP], more than the model's "
                            f"{max_length} positions; shorten the text or pass --truncate")
        room = max_length - extra
        if b is None:
            a = a[:room]
        else:  # longest first, as BERT does
            while len(a) + len(b) > room:
                if len(a) >= len(b):
                    a = a[:-1]
                else:
                    b = b[:-1]
    ids = [tokenizer.cls_id, *a, tokenizer.sep_id]
    types = [0] * len(ids)
    if b is not None:
        ids += [*b, tokenizer.sep_id]
        types += [1] * (len(b) + 1)
    return ids, types


def pad_batch(rows: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    types = torch.zeros((len(rows), length), dtype=torch.long)
    for row, (tokens, segs) in enumerate(rows):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
        types[row, :len(segs)] = torch.tensor(segs)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class EncodedExamples:
    """Examples as token ids and class indices, ready to batch."""

    def __init__(self, tokenizer: Tokenizer, examples: list[Example], labels: Sequence[str], max_length: int) -> None:
        index = {label: i for i, label in enumerate(labels)}
        check_labels(examples, labels)
        self.rows = [encode_example(tokenizer, e.text, e.pair, max_length, e.where) for e in examples]
        self.targets = np.asarray([index[e.label] for e in examples], dtype=np.int64)
        self.pad_id = tokenizer.pad_id

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        out = pad_batch([self.rows[i] for i in indices], self.pad_id)
        out["labels"] = torch.from_numpy(self.targets[list(indices)])
        return out


class ClassificationBatches:
    """The trainer's batch source for fine-tuning: shuffled every epoch (seeded), resumable."""

    def __init__(self, splits: dict[str, EncodedExamples], batch_size: int, seed: int = 0,
                 n_eval_batches: int | None = None, token_types: bool = True) -> None:
        self.splits, self.batch_size, self.seed = splits, batch_size, seed
        self.n_eval_batches, self.token_types = n_eval_batches, token_types
        self.epoch, self.position = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch, 4])))
        return rng.permutation(len(self.splits["train"]))

    def _finish(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.token_types:
            batch.pop("token_type_ids")
        return batch

    def next_batch(self, split: str = "train") -> dict[str, torch.Tensor]:
        indices: list[int] = []
        while len(indices) < self.batch_size:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            take = min(self.batch_size - len(indices), len(self._order) - self.position)
            indices.extend(self._order[self.position:self.position + take].tolist())
            self.position += take
        return self._finish(self.splits["train"].batch(indices))

    def eval_batches(self, split: str = "val", n_batches: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
        if split not in self.splits:
            raise UserError(f"no {split!r} split; the splits are {', '.join(self.splits)}")
        data = self.splits[split]
        n_batches = self.n_eval_batches if n_batches is None else n_batches
        for number, start in enumerate(range(0, len(data), self.batch_size)):
            if n_batches is not None and number >= n_batches:
                return
            yield self._finish(data.batch(range(start, min(len(data), start + self.batch_size))))

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "train_examples": len(self.splits["train"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["train_examples"]) != len(self.splits["train"]):
            raise UserError(f"the saved data state is for {state['train_examples']} training examples, but this data "
                            f"has {len(self.splits['train'])}; resume with the same files and [data] settings")
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])
        self._order = self._permutation(self.epoch)

    def tokens_per_batch(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())
