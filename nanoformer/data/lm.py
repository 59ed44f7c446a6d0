"""Next-token-prediction data: a corpus tokenized once into a flat array, cut into random windows.

The decoder (GPT) family learns from one long stream of token ids. As in nanoGPT, the stream is
kept on disk as a raw array (`np.memmap` reads it without loading it), and a batch is
`batch_size` random windows of `block_size + 1` ids: x is the window minus its last id, y the
window minus its first, so y[t] is the token that follows x[:t+1].

`build_token_cache` writes `tokens-<key>.bin` (the ids) and `tokens-<key>.json` (a manifest:
sources with size, mtime and sha256, the tokenizer's fingerprint, dtype, count). The key depends
only on the source paths, so one corpus has one cache file; a changed source or tokenizer
rebuilds it in place, an unchanged one is reused without tokenizing again. Files are joined with
the tokenizer's eos id between them, so a model sees where one document ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from nanoformer.data.text import PathLike, decode_text, sha256_file, write_bytes_atomic
from nanoformer.errors import UserError

if TYPE_CHECKING:  # only the type: lm.py needs encode_batch, eos_id, vocab_size, fingerprint
    from nanoformer.tokenizer import Tokenizer

MANIFEST_FORMAT = 1
SPLITS = ("train", "val")
CHUNK_CHARS = 1 << 20  # text is encoded in pieces of about this size, several at a time
PROGRESS_BYTES = 1 << 20  # inputs smaller than this tokenize without a progress bar


def build_token_cache(
    files: Sequence[PathLike],
    tokenizer: Tokenizer,
    cache_dir: PathLike,
    *,
    progress: bool | None = None,
) -> Path:
    """Tokenize `files` into `cache_dir` (or reuse a fresh cache) and return the .bin path.

    `files` are the text files themselves (see `nanoformer.data.text.resolve_text_files`).
    `progress` forces the tqdm bar on or off; by default it shows for inputs over 1 MB.
    """
    files = [Path(f).resolve() for f in files]
    if not files:
        raise UserError("no files to tokenize; name at least one text file")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256("\n".join(map(str, files)).encode("utf-8")).hexdigest()[:16]
    bin_path = cache_dir / f"tokens-{key}.bin"
    manifest_path = bin_path.with_suffix(".json")
    tokenizer_hash = tokenizer.fingerprint()
    if _is_fresh(manifest_path, bin_path, files, tokenizer_hash):
        return bin_path

    dtype = np.dtype(np.uint16 if tokenizer.vocab_size < 2**16 else np.uint32)
    total_bytes = sum(_stat(f).st_size for f in files)
    show = total_bytes >= PROGRESS_BYTES if progress is None else progress
    sources = []
    count = 0
    manifest_path.unlink(missing_ok=True)  # a crash from here on leaves no manifest: rebuild
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{bin_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, tqdm(total=total_bytes, unit="B", unit_scale=True,
                                              desc="tokenizing", disable=not show) as bar:
            for n, path in enumerate(files):
                if n > 0:
                    np.array([tokenizer.eos_id], dtype=dtype).tofile(out)
                    count += 1
                stat = _stat(path)
                data = path.read_bytes()  # hash exactly the bytes that get tokenized
                sources.append({"path": str(path), "size": len(data), "mtime": stat.st_mtime,
                                "sha256": hashlib.sha256(data).hexdigest()})
                text = decode_text(data, path)
                chunks = list(_chunks(text))
                # The bar counts file bytes; a JSONL file's text is only part of them, so each
                # chunk advances it by its share of the file.
                scale = len(data) / max(1, len(text.encode("utf-8")))
                advanced = 0
                for i in range(0, len(chunks), 8):
                    group = chunks[i:i + 8]
                    for ids in tokenizer.encode_batch(group):
                        np.asarray(ids, dtype=dtype).tofile(out)
                        count += len(ids)
                    step = min(len(data) - advanced, round(scale * sum(len(c.encode("utf-8")) for c in group)))
                    bar.update(step)
                    advanced += step
                bar.update(len(data) - advanced)
        if count == 0:
            raise UserError(f"{files[0]}: the text gave no tokens; check the files and tokenizer")
        os.replace(tmp, bin_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    manifest = {
        "format": MANIFEST_FORMAT,
        "sources": sources,
        "tokenizer_sha256": tokenizer_hash,
        "separator_id": tokenizer.eos_id if len(files) > 1 else None,
        "dtype": dtype.name,
        "num_tokens": count,
    }
    write_bytes_atomic(manifest_path, json.dumps(manifest, indent=2).encode("utf-8"))
    return bin_path


def open_token_cache(bin_path: PathLike) -> np.memmap:
    """The ids of a cache written by `build_token_cache`, memory-mapped read-only."""
    bin_path = Path(bin_path)
    manifest_path = bin_path.with_suffix(".json")
    manifest = _read_manifest(manifest_path)
    if manifest is None or not bin_path.is_file():
        raise UserError(f"{bin_path}: no token cache here (or its manifest {manifest_path.name} "
                        "is missing or corrupt); build it with build_token_cache")
    dtype = np.dtype(manifest["dtype"])
    if bin_path.stat().st_size != manifest["num_tokens"] * dtype.itemsize:
        raise UserError(f"{bin_path}: size does not match its manifest; delete both files to "
                        "rebuild the cache")
    return np.memmap(bin_path, dtype=dtype, mode="r", shape=(manifest["num_tokens"],))


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; check the path") from None


def _read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT else None


def _is_fresh(manifest_path: Path, bin_path: Path, files: list[Path], tokenizer_hash: str) -> bool:
    """Whether the cache matches these exact file contents and tokenizer.

    Sizes are compared first (cheap); contents are then compared by sha256 rather than by mtime,
    because mtimes change on copies and touches, and can miss a quick rewrite.
    """
    manifest = _read_manifest(manifest_path)
    if manifest is None or manifest.get("tokenizer_sha256") != tokenizer_hash:
        return False
    sources = manifest.get("sources", [])
    if [s.get("path") for s in sources] != [str(f) for f in files]:
        return False
    try:
        if bin_path.stat().st_size != manifest["num_tokens"] * np.dtype(manifest["dtype"]).itemsize:
            return False
        if any(_stat(f).st_size != s["size"] for f, s in zip(files, sources)):
            return False
    except (OSError, KeyError, TypeError):
        return False
    return all(sha256_file(f) == s.get("sha256") for f, s in zip(files, sources))



def _chunks(text: str, size: int | None = None) -> Iterator[str]:
    """Pieces of about `size` characters, cut only after a lone newline between two non-spaces.

    At such a newline every pre-tokenizer we use (byte-level, char, WordPiece, "▁" BPE with
    newlines isolated) already has a boundary on both sides, so encoding the pieces gives exactly
    the ids of encoding the whole text, without holding a whole-file encoding in memory.
    """
    size = CHUNK_CHARS if size is None else size
    start = 0
    while len(text) - start > size:
        cut = text.find("\n", start + size)
        while cut != -1 and not (
            cut + 1 < len(text) and not text[cut - 1].isspace() and not text[cut + 1].isspace()
        ):
            cut = text.find("\n", cut + 1)
        if cut == -1:
            break
        yield text[start:cut + 1]
        start = cut + 1
    yield text[start:]


class LMData:
    """A token stream split into train and val, serving random windows reproducibly.

    The validation split is the last `val_fraction` of the stream (as in nanoGPT), so it is text
    the model never trains on, not windows interleaved with training text. Each split draws from
    its own seeded `torch.Generator`: evaluating never shifts the training batches, and
    `state_dict()` captures exactly where both streams are.
    """

    def __init__(self, tokens: np.ndarray, *, val_fraction: float = 0.1, seed: int = 0) -> None:
        """`tokens`: a 1-D integer array (e.g. from `open_token_cache`), kept as is, not copied."""
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"val_fraction={val_fraction!r} must be in [0, 1), e.g. 0.1 keeps the "
                            "last tenth of the text for validation")
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise UserError(f"token stream must be a 1-D integer array, got shape {tokens.shape} "
                            f"and dtype {tokens.dtype}")
        n_val = int(len(tokens) * val_fraction)
        self.tokens = tokens
        self.val_fraction = val_fraction
        self.seed = seed
        self.splits = {"train": tokens[:len(tokens) - n_val], "val": tokens[len(tokens) - n_val:]}
        self._generators = {name: torch.Generator().manual_seed(seed + i)
                            for i, name in enumerate(SPLITS)}

    @classmethod
    def from_files(cls, files: Sequence[PathLike], tokenizer: Tokenizer, cache_dir: PathLike, *,
                   val_fraction: float = 0.1, seed: int = 0) -> LMData:
        """Tokenize (or reuse the cache of) `files` and wrap the stream."""
        return cls(open_token_cache(build_token_cache(files, tokenizer, cache_dir)),
                   val_fraction=val_fraction, seed=seed)

    def __len__(self) -> int:
        return len(self.tokens)

    def get_batch(self, split: str, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch_size` random windows of `split`: x and y, int64 of shape (batch_size, block_size)."""
        return self._windows(split, batch_size, block_size, self._generators[self._check(split)])

    def eval_batches(self, split: str, n_batches: int, batch_size: int,
                     block_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The same `n_batches` batches on every call, whatever the training state.

        Comparing the loss on identical windows makes evaluations during a run comparable.
        """
        generator = torch.Generator().manual_seed(self.seed + 1000 + SPLITS.index(self._check(split)))
        for _ in range(n_batches):
            yield self._windows(split, batch_size, block_size, generator)

    def _check(self, split: str) -> str:
        if split not in self.splits:
            raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return split

    def _windows(self, split: str, batch_size: int, block_size: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.splits[split]
        if len(data) < block_size + 1:
            fix = ("set val_fraction > 0" if split == "val" and len(data) == 0 else
                   f"use block_size <= {max(len(data) - 1, 0)}, more text, or another val_fraction")
            raise UserError(f"the {split} split has {len(data)} tokens but block_size={block_size} "
                            f"needs at least {block_size + 1}; {fix}")
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        index = starts.numpy()[:, None] + np.arange(block_size + 1)
        window = torch.from_numpy(data[index].astype(np.int64))
        return window[:, :-1].contiguous(), window[:, 1:].contiguous()

    def state_dict(self) -> dict[str, Any]:
        """Where the random streams are: uint8 tensors for the generators, plain ints otherwise.

        Everything is a tensor or a JSON value, so a checkpoint can hold it without pickle.
        """
        state: dict[str, Any] = {"seed": self.seed}
        for name in SPLITS:
            state[f"{name}_rng"] = self._generators[name].get_state()
            state[f"{name}_tokens"] = len(self.splits[name])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue both streams from `state`; the data must be the same as when it was saved."""
        for name in SPLITS:
            saved = int(state[f"{name}_tokens"])
            if saved != len(self.splits[name]):
                raise UserError(f"the saved data state is for a {name} split of {saved} tokens, "
                                f"but this one has {len(self.splits[name])}; resume with the same "
                                "text, tokenizer and val_fraction")
        for name in SPLITS:
            self._generators[name].set_state(torch.as_tensor(state[f"{name}_rng"], dtype=torch.uint8))
        self.seed = int(state["seed"])
