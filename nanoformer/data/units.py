"""Corpus files read as text units, in order, for masked-LM pre-training and its tokenizer.

A plain text file gives the sentences of its paragraphs (a paragraph is the lines between blank
lines); a `.jsonl` file one record (its "text"/"review"/... field); a SQuAD-style `.json` file
(KorQuAD) the sentences of each paragraph ("context"); a `.tsv`/`.csv` file one row's text column
(e.g. StyleKQC's "sentence"); a file of "<label> <text>" lines (SST-2's) each line's text, its
label dropped: a task's own unlabelled text, for task-adaptive pre-training.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection
from pathlib import Path
from typing import Iterator, Sequence

from nanoformer.data.text import PathLike, decode_text
from nanoformer.errors import UserError

TEXT_COLUMNS = ("sentence", "text", "document", "review", "content")


_SENTENCE_END = re.compile(r"(?<=[.!?。？！])\s+")


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph, cut after ., !, ? (and their full-width forms) followed by space."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(paragraph)) if s]


def read_units(path: PathLike, text_column: str | None = None, label_first: bool = False) -> list[str]:
    """The text units of one file, in order (see the module docstring for each format)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror}); check the path") from None
    if suffix == ".jsonl":
        return [line for line in decode_text(data, path).splitlines() if line.strip()]
    text = decode_text(data, path)
    if label_first:
        return _label_first_texts(text, path)
    if suffix == ".json":
        return _squad_contexts(text, path)
    if suffix in (".tsv", ".csv"):
        return _column_texts(text, path, "\t" if suffix == ".tsv" else ",", text_column)
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        units.extend(split_sentences(" ".join(paragraph.split())))
    return units


def _label_first_texts(text: str, path: Path) -> list[str]:
    units = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise UserError(f"{path}:{number}: expected '<label> <text>', got {line.strip()[:40]!r}; "
                            "fix the line, or list the file under [data] path if it is plain text")
        units.append(" ".join(parts[1].split()))
    return units


def _squad_contexts(text: str, path: Path) -> list[str]:
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg}); fix the file") from None
    try:
        contexts = [p["context"] for article in spec["data"] for p in article["paragraphs"]]
    except (KeyError, TypeError):
        raise UserError(f"{path}: a .json corpus must be SQuAD-style (data[*].paragraphs[*].context, as KorQuAD); "
                        "convert other JSON to .jsonl with a 'text' field") from None
    units: list[str] = []
    seen: set[str] = set()
    for context in contexts:
        if context in seen:  # several questions share a paragraph
            continue
        seen.add(context)
        units.extend(split_sentences(" ".join(context.split())))
    return units


def _column_texts(text: str, path: Path, delimiter: str, column: str | None) -> list[str]:
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    if not rows:
        raise UserError(f"{path}: file is empty")
    header = rows[0]
    wanted = [column] if column else list(TEXT_COLUMNS)
    index = next((header.index(name) for name in wanted if name in header), None)
    if index is None:
        raise UserError(f"{path}:1: no text column {' or '.join(map(repr, wanted))} in the header {header}; "
                        "set [data] text_column to the column holding the text")
    units = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise UserError(f"{path}:{number}: {len(row)} fields, but the header has {len(header)}; fix the row "
                            "(a quote or delimiter inside the text?)")
        if row[index].strip():
            units.append(" ".join(row[index].split()))
    return units


def corpus_texts(files: Sequence[Path], text_column: str | None = None,
                 label_first: Collection[Path] = ()) -> Iterator[str]:
    """Every unit of every file, for training a tokenizer (`label_first`: which files hold labelled lines)."""
    for path in files:
        yield from read_units(path, text_column, label_first=path in label_first)
