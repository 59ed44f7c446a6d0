"""Checksums of a checkpoint's files, written with it and verified when it is read.

A flipped byte in `model.safetensors` still loads (the format checks its header, not its data)
and gives a silently wrong model; a file cut short gives the safetensors library's traceback. So
every checkpoint writer records the SHA-256 of each file in `checksums.json`, and every reader
checks the files it reads against it first: a mismatch is a one-line error naming the file.
Checkpoints without `checksums.json` (written elsewhere, or by an older nanoformer) load as before.
`config.json` is recorded but not enforced: users edit it (special ids, generation defaults), and
its values are checked as a config when it is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nanoformer.errors import UserError

CHECKSUMS_FILE = "checksums.json"
_CHUNK = 1 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(folder: Path) -> None:
    """Record the SHA-256 of every file in `folder` (a checkpoint being written)."""
    files = {p.name: sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != CHECKSUMS_FILE}
    (folder / CHECKSUMS_FILE).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n",
                                         encoding="utf-8")


def verify_files(folder: Path, names: list[str]) -> None:
    """Check `names` in checkpoint `folder` against its checksums.json (if it has one)."""
    record = folder / CHECKSUMS_FILE
    if not record.is_file():
        return
    try:
        files = json.loads(record.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{record}: not a checksum record (damaged); restore the checkpoint, or skip the check "
                        "with --no-verify") from None
    for name in names:
        expected = files.get(name)
        path = folder / name
        if expected is None or not path.is_file():
            continue
        if sha256(path) != expected:
            raise UserError(f"{path}: the file does not match the checksum saved with it (damaged or changed "
                            "since it was written); restore the checkpoint, or load it anyway with --no-verify")
