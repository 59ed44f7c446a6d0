"""Reading the user's raw text: which files a name or path means, and their exact contents.

A corpus is named in one of three ways:

- a standard name (`tinyshakespeare`), found in `$NANOFORMER_DATA`, then in the user cache, and
  otherwise downloaded into the cache once;
- a file, read whatever its suffix, since the user named it;
- a folder, which contributes its `*.txt` and `*.text` files, recursively, in sorted order,
  skipping hidden files and folders. Other files (README, SOURCE.md, CSV, JSON) are left out so
  that notes and metadata beside a corpus never leak into training; name them explicitly to use
  them.

Relative paths resolve against `base_dir` (the config file's folder, so a config works from any
working directory), then against `$NANOFORMER_DATA`.

Text is decoded as strict UTF-8 and otherwise kept byte for byte (line endings included); only a
leading byte-order mark is dropped, because editors add it invisibly.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from nanoformer.errors import UserError

PathLike = str | os.PathLike

TEXT_SUFFIXES = (".txt", ".text")
"""The suffixes a folder contributes; files named directly may have any suffix."""


@dataclass(frozen=True)
class StandardText:
    """A corpus we know by name: where it sits under a data folder, where it comes from."""

    relpath: str
    url: str
    sha256: str


STANDARD_TEXTS: dict[str, StandardText] = {
    "tinyshakespeare": StandardText(
        relpath="tinyshakespeare/input.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    ),
}


def data_dir() -> Path | None:
    """The folder of shared corpora named by `$NANOFORMER_DATA`, if set."""
    value = os.environ.get("NANOFORMER_DATA")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloads are kept: `$XDG_CACHE_HOME/nanoformer`, by default `~/.cache/nanoformer`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "nanoformer"


def resolve_text_files(
    name_or_path: PathLike | Sequence[PathLike], base_dir: PathLike | None = None
) -> list[Path]:
    """The text files meant by a standard name, a file, a folder, or a list of these.

    Paths come back absolute, in the order given (folders expanded in sorted order).
    """
    if isinstance(name_or_path, (str, os.PathLike)):
        items: list[PathLike] = [name_or_path]
    else:
        items = list(name_or_path)
    if not items:
        raise UserError("no text given: the list of files is empty; name a file, a folder, "
                        f"or a standard corpus ({', '.join(STANDARD_TEXTS)})")
    files: list[Path] = []
    for item in items:
        files.extend(_resolve_one(item, base_dir))
    return files


def _resolve_one(item: PathLike, base_dir: PathLike | None) -> list[Path]:
    if isinstance(item, str) and item in STANDARD_TEXTS:
        return [standard_text_path(item)]
    path = _find_path(Path(item).expanduser(), base_dir)
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not found:
            raise UserError(f"{path}: folder has no {' or '.join('*' + s for s in TEXT_SUFFIXES)} "
                            "files (searched recursively); rename the text files or list them "
                            "explicitly")
        return found
    return [path]


def find_data_file(path: PathLike) -> Path:
    """A file or folder named on the command line: as given (relative to the working folder),
    else under `$NANOFORMER_DATA`, as config paths resolve (`--data sst2/stsa.binary.test`)."""
    return _find_path(Path(path).expanduser(), None, corpus_names=False)


def _find_path(path: Path, base_dir: PathLike | None, corpus_names: bool = True) -> Path:
    """`path` as given (relative to `base_dir` or the working folder), else under `$NANOFORMER_DATA`.

    corpus_names: whether the caller also accepts a standard corpus name, which the error then offers.
    """
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = [Path(base_dir).expanduser() / path if base_dir is not None else Path.cwd() / path]
        if data_dir() is not None:
            candidates.append(data_dir() / path)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    fixes = ["check the path"]
    if data_dir() is None:
        fixes.append("set NANOFORMER_DATA to the folder of corpora")
    if corpus_names:
        fixes.append(f"use a standard corpus name ({', '.join(STANDARD_TEXTS)})")
    raise UserError(f"{path}: no such file or folder (looked in: {tried}); {', or '.join(fixes)}")


def standard_text_path(name: str) -> Path:
    """The local file of a standard corpus: `$NANOFORMER_DATA`, else the cache, else download."""
    if name not in STANDARD_TEXTS:
        raise UserError(f"unknown standard corpus {name!r}; choose one of: {', '.join(STANDARD_TEXTS)}")
    spec = STANDARD_TEXTS[name]
    shared = data_dir()
    if shared is not None and (shared / spec.relpath).is_file():
        return (shared / spec.relpath).resolve()
    cached = cache_dir() / spec.relpath
    if not cached.is_file():
        download(spec.url, cached, spec.sha256)
    return cached


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> None:
    """Fetch `url` into `dest` atomically, so an interrupted download never leaves half a file."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"could not download {url} ({reason}); connect to the internet, save the "
                        f"file by hand as {dest}, or set NANOFORMER_DATA to a folder that has it") from e
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise UserError(f"{url}: downloaded file does not match its expected sha256 {sha256[:16]}…; "
                        f"retry later, or save the right file by hand as {dest}")
    write_bytes_atomic(dest, data)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: PathLike) -> str:
    """The file's text, decoded as strict UTF-8; errors name the file and the bad byte's offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a file; pass the folder to "
                        "resolve_text_files or name a file inside it") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
    return decode_text(data, path)


def decode_utf8(data: bytes, label: PathLike) -> str:
    """Strict UTF-8, without a leading BOM; an error names `label`, the byte offset and the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{label}: invalid UTF-8 at byte offset {e.start} (line {line}, byte "
                        f"0x{data[e.start]:02x}); re-encode the file as UTF-8, e.g. "
                        f"`iconv -f latin1 -t utf-8 in.txt > out.txt`") from None
    return text.removeprefix("\ufeff")


def sha256_file(path: PathLike) -> str:
    """The file's sha256, read in 1 MiB blocks (token caches use it to notice changed sources)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_text(data: bytes, path: PathLike) -> str:
    """Decode bytes read from `path` (named in errors) as UTF-8 corpus text; empty files are refused."""
    text = decode_utf8(data, path)
    if Path(path).suffix == ".jsonl":
        text = jsonl_text(text, path)
    if not text:
        raise UserError(f"{path}: file is empty; put text in it or leave it out of the corpus")
    return text


JSONL_TEXT_FIELDS = ("text", "review", "content", "document", "sentence")


def jsonl_text(text: str, path: PathLike) -> str:
    """One line of text per JSON record, from its first field named in JSONL_TEXT_FIELDS.

    Corpora such as the NSMC movie reviews come as JSON lines; a record becomes a line, so a
    language model learns where one review ends and the next begins.
    """
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{number}: invalid JSON ({e.msg}); fix or remove the line") from None
        field = next((f for f in JSONL_TEXT_FIELDS if isinstance(record, dict) and f in record), None)
        if field is None:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise UserError(f"{path}:{number}: no text field (looked for {', '.join(JSONL_TEXT_FIELDS)}; "
                            f"found {keys}); rename the field holding the text")
        lines.append(" ".join(str(record[field]).split()))
    return "\n".join(lines) + ("\n" if lines else "")
