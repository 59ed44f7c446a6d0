"""Checkpoints: folders of safetensors and JSON, written atomically, never pickled.

A checkpoint folder holds
    config.json                 {"model": ..., "train": ..., plus sections such as "data"}
    model.safetensors           the weights (tied weights stored once)
    tokenizer.json              when a tokenizer was given
    trainer_state.json          for resume: step, tokens, times, optimiser hyper-parameters and
    trainer_state.safetensors   the state's structure in JSON, its tensors in safetensors

A run folder holds `checkpoints/last/` (resumable), `checkpoints/best/` (lowest validation loss),
optionally `checkpoints/step-000500/` copies, and `metrics.jsonl`.

Loading never unpickles: a checkpoint downloaded from anywhere can be read safely. Writing goes
to a hidden folder beside the target which is then renamed into place, so a crash at any moment
leaves the old checkpoint or the new one, never a mixture (see `_write_atomically`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from nanoformer.errors import UserError
from nanoformer.training.checksums import verify_files, write_checksums

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
STATE_JSON = "trainer_state.json"
STATE_TENSORS = "trainer_state.safetensors"
STATE_FORMAT = 1

_STEP_DIR = re.compile(r"step-(\d+)")


# ----------------------------------------------------------------------------- writing


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: dict[str, Any],
    tokenizer: Any = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder at `path`, replacing any checkpoint there atomically.

    `config` must be JSON-able. `trainer_state` may nest dicts, lists and tuples of tensors,
    numpy scalars and JSON values; it comes back identical from `read_trainer_state`.
    """
    path = Path(path)

    def write(folder: Path) -> None:
        _write_json(folder / CONFIG_FILE, config)
        save_model(model, str(folder / MODEL_FILE))
        if tokenizer is not None:
            tokenizer.save(str(folder))
        if trainer_state is not None:
            tree, tensors = _encode(trainer_state)
            save_file(tensors, str(folder / STATE_TENSORS))
            _write_json(folder / STATE_JSON, {"format": STATE_FORMAT, "state": tree})

    _write_atomically(path, write)
    return path


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Run `write` into `.NAME.tmp/` beside `path`, then swap it into place.

    Every intermediate state keeps one complete checkpoint:
      crash while writing       -> `path` is untouched (the partial `.tmp` is discarded later);
      crash between the renames -> `path` is missing but the old one is whole in `.NAME.old/`,
                                   which `recover_interrupted_write` (run by every reader and writer) renames back;
      crash after the renames   -> `path` is the new checkpoint; `.NAME.old/` is stale and removed.
    """
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_write(path)
    tmp, old = _tmp_path(path), _old_path(path)
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    try:
        tmp.mkdir()
        write(tmp)
        write_checksums(tmp)
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
    except (OSError, SafetensorError) as error:  # a full disk, a quota, a file-size limit, a read-only folder
        shutil.rmtree(tmp, ignore_errors=True)  # safetensors reports its own I/O errors as SafetensorError
        kept = f"; {path} is still the previous checkpoint" if path.exists() else ""
        reason = getattr(error, "strerror", None) or str(error).replace("Error while serializing: ", "")
        raise UserError(f"cannot write the checkpoint {path} ({reason}): free space in {parent} "
                        f"or write elsewhere (--out){kept}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        os.rename(path, old)
    os.rename(tmp, path)
    _fsync(parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_write(path: Path) -> None:
    """Finish an interrupted swap: if `path` vanished between the renames, restore the old one."""
    old = _old_path(path)
    if not path.exists() and old.is_dir():
        os.rename(old, path)


def _tmp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.tmp"


def _old_path(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def _fsync(path: Path) -> None:
    """Flush a file or folder to disk, so the rename never points at unwritten data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # folders cannot be opened on Windows; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------- reading


def resolve_checkpoint(path: str | Path, prefer: str = "best") -> Path:
    """The checkpoint folder meant by `path`.

    A checkpoint folder gives itself; a run folder gives `checkpoints/<prefer>` ("best" or
    "last"), falling back to the other one.
    """
    path = Path(path)
    if not path.exists():
        recover_interrupted_write(path)
    if not path.exists():
        raise UserError(f"checkpoint {str(path)!r} does not exist; pass a run folder or a checkpoint folder")
    if _is_checkpoint(path):
        return path
    order = ["best", "last"] if prefer == "best" else ["last", "best"]
    for name in order:
        candidate = path / "checkpoints" / name
        recover_interrupted_write(candidate)
        if _is_checkpoint(candidate):
            return candidate
    raise UserError(
        f"{str(path)!r} is neither a checkpoint folder (with {CONFIG_FILE} and {MODEL_FILE}) nor a "
        "run folder (with checkpoints/best or checkpoints/last); pass the folder a training run wrote"
    )


def resolve_init_from(value: Any, source: Path | None = None, key: str = "init_from") -> Path:
    """The checkpoint folder `value` names: relative to the working directory, else to the config's folder.

    ("none" or "" means no checkpoint: `--init-from none` trains from scratch.) `key` names the
    [model] key in messages (init_from, init_encoder, init_decoder)."""
    if not isinstance(value, str) or not value:
        raise UserError(f"[model] {key} = {value!r}; expected the path of a run or checkpoint folder")
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and source is not None and (source.parent / path).exists():
        path = source.parent / path
    if not path.exists():
        raise UserError(f"[model] {key} = {value!r}: no such folder; pre-train first (e.g. nanoformer train "
                        "configs/bert_mlm_en.toml) or give the path of a run or checkpoint folder")
    return resolve_checkpoint(path).resolve()


def _is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / MODEL_FILE).is_file()


def read_config(path: str | Path) -> dict[str, Any]:
    """The `config.json` of a checkpoint (a run folder gives its best checkpoint's)."""
    return _read_json(resolve_checkpoint(path) / CONFIG_FILE)


def _read_json(file: Path) -> Any:
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as error:
        raise UserError(f"{file}: not valid JSON ({error}); restore the checkpoint") from None


def load_model_state(path: str | Path, model: nn.Module, verify: bool = True) -> Path:
    """Load a checkpoint's weights into `model` (in place); returns the checkpoint folder used.

    The file is checked against its checksum first (`verify`), then names and shapes, so a model
    built from the wrong config fails with the tensor's name and both shapes instead of a wall of text.
    """
    folder = resolve_checkpoint(path)
    file = folder / MODEL_FILE
    if verify:
        verify_files(folder, [MODEL_FILE])
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    with _readable(file) as f:
        for name in f.keys():
            found = tuple(f.get_slice(name).get_shape())
            if name in expected and expected[name] != found:
                raise UserError(
                    f"checkpoint {str(folder)!r}: tensor {name!r} has shape {found} but the model "
                    f"expects {expected[name]}; build the model from the checkpoint's {CONFIG_FILE}"
                )
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except SafetensorError as error:
        raise _damaged(file, error) from None
    for what, names in (("lacks tensors the model has", missing), ("has tensors the model lacks", unexpected)):
        if names:
            shown = ", ".join(sorted(names)[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
            raise UserError(
                f"checkpoint {str(folder)!r} {what}: {shown}; build the model from the "
                f"checkpoint's {CONFIG_FILE}"
            )
    return folder


def read_trainer_state(path: str | Path) -> dict[str, Any]:
    """The trainer state saved for resume (a run folder gives its last checkpoint's)."""
    folder = resolve_checkpoint(path, prefer="last")
    if not (folder / STATE_JSON).is_file() or not (folder / STATE_TENSORS).is_file():
        raise UserError(
            f"checkpoint {str(folder)!r} has no trainer state ({STATE_JSON}): it was saved for "
            "inference only; resume from the run's checkpoints/last instead"
        )
    verify_files(folder, [STATE_JSON, STATE_TENSORS])
    saved = _read_json(folder / STATE_JSON)
    if saved.get("format") != STATE_FORMAT:
        raise UserError(
            f"checkpoint {str(folder)!r}: trainer state format {saved.get('format')!r} is not "
            f"{STATE_FORMAT}; resume it with the nanoformer version that wrote it"
        )
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
        return _decode(saved["state"], tensors)
    except (SafetensorError, KeyError) as error:
        raise _damaged(folder / STATE_TENSORS, error) from None


def _readable(file: Path):
    """safe_open, with a file that is not safetensors (cut short, overwritten) as a one-line error."""
    try:
        return safe_open(str(file), framework="pt")
    except (SafetensorError, OSError) as error:
        raise _damaged(file, error) from None


def _damaged(file: Path, error: Exception) -> UserError:
    return UserError(f"{file}: not a readable safetensors file ({error}); it is damaged or cut short: restore "
                     "the checkpoint (a run folder keeps checkpoints/last and checkpoints/best)")


# ----------------------------------------------------------------------------- state <-> JSON + tensors
# A nested state becomes a JSON tree in which each tensor is replaced by {"__tensor__": name}, the
# tensors going to a safetensors file under those names. Tuples and dicts with non-string keys
# (optimiser states are keyed by parameter index) are tagged so they come back as they were.

_TENSOR, _TUPLE, _DICT = "__tensor__", "__tuple__", "__dict__"


def _encode(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def encode(obj: Any, where: list[str]) -> Any:
        if isinstance(obj, torch.Tensor):
            name = ".".join(where) or "root"
            while name in tensors:
                name += "_"
            t = obj.detach().cpu().contiguous()
            if t.numel() and t.untyped_storage().data_ptr() in storages:  # safetensors refuses shared memory
                t = t.clone()
            storages.add(t.untyped_storage().data_ptr())
            tensors[name] = t
            return {_TENSOR: name}
        if isinstance(obj, tuple):
            return {_TUPLE: [encode(v, where + [str(i)]) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [encode(v, where + [str(i)]) for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and k not in (_TENSOR, _TUPLE, _DICT) for k in obj):
                return {k: encode(v, where + [k]) for k, v in obj.items()}
            return {_DICT: [[encode(k, where), encode(v, where + [str(k)])] for k, v in obj.items()]}
        if isinstance(obj, np.generic):
            return obj.item()
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(
            f"trainer state at {'.'.join(where)!r}: cannot store a {type(obj).__name__} without "
            "pickle; use tensors, numbers, strings, lists, tuples or dicts"
        )

    return encode(state, []), tensors


def _decode(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if _TUPLE in tree:
            return tuple(_decode(v, tensors) for v in tree[_TUPLE])
        if _DICT in tree:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in tree[_DICT]}
        return {k: _decode(v, tensors) for k, v in tree.items()}
    return tree


# ----------------------------------------------------------------------------- numbered copies, averaging


def numbered_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's `checkpoints/step-NNNNNN` folders, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def average_checkpoints(paths: list[str | Path], out: str | Path) -> Path:
    """Write a checkpoint whose weights are the mean of the given checkpoints' weights.

    Averaging the last few checkpoints of a run smooths out the noise of the final updates (the
    original Transformer averaged its last 5 or 20). Floating tensors are averaged in float64 and
    cast back; integer buffers are taken from the last checkpoint. The config and tokenizer come
    from the last checkpoint too, with an "averaged_from" section listing the sources.
    """
    if not paths:
        raise UserError("average_checkpoints: no checkpoints given; pass at least one checkpoint folder")
    folders = [resolve_checkpoint(p) for p in paths]
    configs = [read_config(f) for f in folders]
    for folder, cfg in zip(folders, configs):
        if cfg.get("model") != configs[-1].get("model"):
            raise UserError(
                f"average_checkpoints: {str(folder)!r} has a different model config from "
                f"{str(folders[-1])!r}; average checkpoints of one run only"
            )
    for folder in folders:
        verify_files(folder, [MODEL_FILE])
    states = [load_file(str(f / MODEL_FILE)) for f in folders]
    averaged: dict[str, torch.Tensor] = {}
    for name, last in states[-1].items():
        for folder, state in zip(folders, states):
            if name not in state or state[name].shape != last.shape:
                raise UserError(
                    f"average_checkpoints: tensor {name!r} is missing or shaped differently in "
                    f"{str(folder)!r}; average checkpoints of one run only"
                )
        if last.is_floating_point():
            total = sum(state[name].double() for state in states)
            averaged[name] = (total / len(states)).to(last.dtype)
        else:
            averaged[name] = last.clone()
    config = dict(configs[-1])
    config["averaged_from"] = [str(f) for f in folders]
    config.pop("checkpoint", None)

    def write(folder: Path) -> None:
        _write_json(folder / CONFIG_FILE, config)
        save_file(averaged, str(folder / MODEL_FILE), metadata={"format": "pt"})
        if (folders[-1] / TOKENIZER_FILE).is_file():
            shutil.copy2(folders[-1] / TOKENIZER_FILE, folder / TOKENIZER_FILE)

    out = Path(out)
    _write_atomically(out, write)
    return out
