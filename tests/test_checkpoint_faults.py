"""Damaged checkpoints are one-line errors (exit 2), never a silently wrong model or a traceback.

Every checkpoint records the SHA-256 of its files (checksums.json); readers verify the files they
read. Tried as a user would: 64 flipped bytes in the weights, a weights file cut in half, a damaged
trainer state on --resume, the tokenizer of another model, a config.json with wrong types.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_bert_cli import one_line_error
from test_cli import write_config

from nanoformer.cli import main
from nanoformer.training.checksums import CHECKSUMS_FILE


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faults")
    assert main(["train", str(write_config(folder, steps=6)), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


@pytest.fixture
def copy(run_dir, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def generate(path: Path, *extra: str) -> int:
    return main(["generate", str(path), "--prompt", "나는", "--max-new-tokens", "5", "--seed", "0", *extra])


def flip(file: Path, at: float, count: int = 64) -> None:
    data = bytearray(file.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + count):
        data[i] ^= 0xFF
    file.write_bytes(bytes(data))


def test_every_checkpoint_records_its_files(run_dir):
    for name in ("best", "last"):
        record = json.loads((run_dir / "checkpoints" / name / CHECKSUMS_FILE).read_text())
        assert record["algorithm"] == "sha256"
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(record["files"])
        if name == "last":
            assert {"trainer_state.json", "trainer_state.safetensors"} <= set(record["files"])


def test_flipped_weights_are_refused_unless_told(copy, capsys):
    assert generate(copy) == 0
    flip(copy / "checkpoints" / "best" / "model.safetensors", at=0.6)
    capsys.readouterr()
    one_line_error(capsys, generate(copy), "model.safetensors", "checksum", "--no-verify")
    assert generate(copy, "--no-verify") == 0  # the user's call: the bytes are still valid safetensors


def test_weights_cut_in_half_are_one_line_even_unverified(copy, capsys):
    file = copy / "checkpoints" / "best" / "model.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    capsys.readouterr()
    one_line_error(capsys, generate(copy), "model.safetensors", "checksum")
    one_line_error(capsys, generate(copy, "--no-verify"), "model.safetensors", "not a readable safetensors")


def test_damaged_trainer_state_stops_resume(copy, run_dir, capsys):
    config = run_dir.parent / "tiny.toml"
    state = copy / "checkpoints" / "last" / "trainer_state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    capsys.readouterr()
    one_line_error(capsys, main(["train", str(config), "--out", str(copy), "--resume", "--quiet"]),
                   "trainer_state.safetensors", "checksum")


def test_tokenizer_of_another_model_and_wrong_config_types(copy, run_dir, capsys, tmp_path):
    best = copy / "checkpoints" / "best"
    other = tmp_path / "other.json"
    text = json.loads((best / "tokenizer.json").read_text(encoding="utf-8"))
    text["model"]["vocab"] = {k: (v + 1) % len(text["model"]["vocab"]) for k, v in text["model"]["vocab"].items()}
    other.write_text(json.dumps(text), encoding="utf-8")
    shutil.copy(other, best / "tokenizer.json")
    capsys.readouterr()
    one_line_error(capsys, generate(copy), "tokenizer.json", "checksum")
    shutil.copy(run_dir / "checkpoints" / "best" / "tokenizer.json", best / "tokenizer.json")
    config = json.loads((best / "config.json").read_text(encoding="utf-8"))
    config["model"]["d_model"] = "wide"
    (best / "config.json").write_text(json.dumps(config), encoding="utf-8")
    one_line_error(capsys, generate(copy), "config.json")
    (best / "config.json").write_text("{not json", encoding="utf-8")
    one_line_error(capsys, generate(copy), "config.json", "not valid JSON")


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(copy, run_dir):
    """Resume under a file-size limit smaller than the weights file (RLIMIT_FSIZE: what a full disk
    or a quota does to a write, without needing root for a small tmpfs): one line, exit 2, and the
    last complete checkpoint still loads and resumes."""
    import resource
    import signal
    import subprocess
    import sys

    last = copy / "checkpoints" / "last"
    before = (last / "model.safetensors").read_bytes()
    limit = len(before) - 1

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-c", "import sys; from nanoformer.cli import main; sys.exit(main())", "train",
               str(run_dir.parent / "tiny.toml"), "--out", str(copy), "--resume", "--quiet",
               "--set", "train.max_steps=10"]
    done = subprocess.run(command, preexec_fn=limited, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the checkpoint" in lines[0] and str(copy / "checkpoints") in lines[0], \
        done.stderr
    assert (last / "model.safetensors").read_bytes() == before
    assert not list((copy / "checkpoints").glob(".*.tmp"))  # nothing half-written left behind
    assert generate(copy) == 0
    assert main(["train", str(run_dir.parent / "tiny.toml"), "--out", str(copy), "--resume", "--quiet",
                 "--set", "train.max_steps=10"]) == 0
