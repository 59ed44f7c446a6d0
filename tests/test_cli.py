"""The command line end to end on tiny data: train → checkpoint → generate / evaluate / info,
exact resume, and one-line errors with exit code 2 for the mistakes users make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanoformer.cli import main

CONFIG = """
[model]
arch = "decoder"
d_model = 32
n_heads = 2
n_layers = 2
d_ff = 64
max_positions = 32
dropout = 0.1
positional = "{positional}"

[data]
path = "corpus.txt"
tokenizer = "char"
block_size = 16

[train]
max_steps = {steps}
batch_size = 4
lr = 3e-3
warmup_steps = 2
eval_interval = 4
eval_batches = 2
log_interval = 1
device = "cpu"
"""

TEXT = "나는 학교에 간다. I go to school.\n" * 40 + "The quick brown fox jumps over the lazy dog.\n" * 40


def write_config(folder: Path, steps: int = 8, positional: str = "learned") -> Path:
    (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
    path = folder / "tiny.toml"
    path.write_text(CONFIG.format(steps=steps, positional=positional), encoding="utf-8")
    return path


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["train_loss"] for line in lines if "train_loss" in json.loads(line)]


def test_train_generate_evaluate_info(tmp_path, capsys):
    config = write_config(tmp_path, positional="rope")
    run_dir = tmp_path / "run"
    assert run_cli("train", config, "--out", run_dir, "--quiet") == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (run_dir / "checkpoints" / "best" / name).is_file()
    capsys.readouterr()
    assert run_cli("generate", run_dir, "--prompt", "나는", "--max-new-tokens", "10", "--seed", "3") == 0
    out = capsys.readouterr().out
    assert out.startswith("나는") and len(out) > len("나는\n")
    assert run_cli("evaluate", run_dir) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["tokens"] > 0 and result["perplexity"] == pytest.approx(2.718281828 ** result["loss"], rel=1e-3)
    assert run_cli("info", run_dir) == 0
    assert "decoder.layers.0" in capsys.readouterr().out


def test_resume_continues_with_exactly_the_same_losses(tmp_path):
    # The first half stops early through max_steps; the schedule must not depend on max_steps
    # for the halves to match (an interrupted run keeps its config; see test_training.py).
    config = write_config(tmp_path, steps=8)
    constant = ["--set", 'train.schedule="inverse_sqrt"']
    whole = tmp_path / "whole"
    assert run_cli("train", config, "--out", whole, "--quiet", *constant) == 0
    split = tmp_path / "split"
    assert run_cli("train", config, "--out", split, "--quiet", "--set", "train.max_steps=4", *constant) == 0
    assert run_cli("train", config, "--out", split, "--quiet", "--resume", *constant) == 0
    assert losses(whole) == losses(split)
    assert len(losses(whole)) == 8


def test_set_overrides_and_preset(tmp_path):
    from nanoformer.run_config import load_run_config

    config = write_config(tmp_path)
    run = load_run_config(config, ["train.lr=1e-4", "model.n_layers=3", 'data.tokenizer="char"'])
    assert run.train.lr == 1e-4 and run.model.n_layers == 3


def one_line_error(capsys, *args: str) -> str:
    code = run_cli(*args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_config_inputs_give_one_line_errors(tmp_path, capsys):
    config = write_config(tmp_path)
    text = config.read_text()
    assert "no_such_file.toml" in one_line_error(capsys, "train", tmp_path / "no_such_file.toml")

    config.write_text(text.replace("n_layers = 2", "n_layerz = 2"))
    err = one_line_error(capsys, "train", config, "--out", tmp_path / "r1")
    assert "n_layerz" in err and "n_layers" in err  # names the key and lists the valid ones

    config.write_text(text.replace("n_layers = 2", 'n_layers = "two"'))
    err = one_line_error(capsys, "train", config, "--out", tmp_path / "r2")
    assert "n_layers" in err and "int" in err

    config.write_text(text.replace("d_model = 32", "d_model = 33"))
    assert "divisible" in one_line_error(capsys, "train", config, "--out", tmp_path / "r3")

    config.write_text(text.replace("[train]", "[train\n"))
    assert "invalid TOML" in one_line_error(capsys, "train", config, "--out", tmp_path / "r4")

    config.write_text(text)
    assert "section.key=value" in one_line_error(capsys, "train", config, "--set", "lr=3")
    err = one_line_error(capsys, "train", config, "--set", "train.rdrop=1", "--out", tmp_path / "r5")
    assert "rdrop" in err and "classif" in err  # R-Drop is for classifiers and translation, not silently ignored
    err = one_line_error(capsys, "train", config, "--set", "train.rdrop_from=0.5", "--out", tmp_path / "r6")
    assert "rdrop_from" in err and "translation" in err


def test_bad_data_gives_one_line_errors(tmp_path, capsys):
    config = write_config(tmp_path)
    (tmp_path / "corpus.txt").write_bytes("좋은 text".encode() + b"\xff\xfe broken")
    err = one_line_error(capsys, "train", config, "--out", tmp_path / "r1")
    assert "corpus.txt" in err and "byte offset 11" in err

    (tmp_path / "corpus.txt").write_text("")
    assert "empty" in one_line_error(capsys, "train", config, "--out", tmp_path / "r2")

    (tmp_path / "corpus.txt").unlink()
    assert "corpus.txt" in one_line_error(capsys, "train", config, "--out", tmp_path / "r3")

    empty_folder = tmp_path / "texts"
    empty_folder.mkdir()
    config.write_text(config.read_text().replace('path = "corpus.txt"', 'path = "texts"'))
    assert "texts" in one_line_error(capsys, "train", config, "--out", tmp_path / "r4")


def test_bad_checkpoints_give_one_line_errors(tmp_path, capsys):
    config = write_config(tmp_path, steps=4)
    run_dir = tmp_path / "run"
    assert run_cli("train", config, "--out", run_dir, "--quiet") == 0
    assert "does not exist" in one_line_error(capsys, "generate", tmp_path / "missing", "--prompt", "a")
    best = run_dir / "checkpoints" / "best"
    (best / "model.safetensors").unlink()
    (run_dir / "checkpoints" / "last" / "model.safetensors").unlink()
    assert "checkpoint" in one_line_error(capsys, "generate", run_dir, "--prompt", "a")


def test_mismatched_shapes_name_the_tensor(tmp_path, capsys):
    config = write_config(tmp_path, steps=4)
    run_dir = tmp_path / "run"
    assert run_cli("train", config, "--out", run_dir, "--quiet") == 0
    cfg_path = run_dir / "checkpoints" / "best" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["d_ff"] = 48
    cfg_path.write_text(json.dumps(cfg))
    err = one_line_error(capsys, "generate", run_dir / "checkpoints" / "best", "--prompt", "a")
    assert "ffn" in err and "shape" in err


def test_long_prompt_keeps_the_last_tokens_with_a_warning(tmp_path, capsys):
    config = write_config(tmp_path, steps=2)
    run_dir = tmp_path / "run"
    assert run_cli("train", config, "--out", run_dir, "--quiet") == 0
    with pytest.warns(UserWarning, match="keeping the last"):
        assert run_cli("generate", run_dir, "--prompt", "school " * 20, "--max-new-tokens", "8") == 0


def test_console_script_exits_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nanoformer.cli", "info", "no-such-preset"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "gpt2-small" in result.stderr  # lists the presets


def test_export_ct2_of_a_char_gpt_continues_as_generate(tmp_path, capsys):
    """Characters as tokens, spaces and newlines included: CTranslate2's greedy continuation is ours."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    import torch

    import nanoformer

    run_dir = tmp_path / "run"
    assert run_cli("train", write_config(tmp_path, steps=30, positional="rope"), "--out", run_dir, "--quiet") == 0
    assert run_cli("export-ct2", run_dir, tmp_path / "ct2") == 0
    model, tokenizer = nanoformer.load(run_dir)
    vocab = [tokenizer.id_to_token(i) for i in range(model.config.vocab_size)]
    generator = ctranslate2.Generator(str(tmp_path / "ct2"), device="cpu", intra_threads=1)
    for prompt in ("나는 학", "The qu", "I go\n"):
        ids = tokenizer.encode(prompt)
        mine = model.generate(torch.tensor([ids]), max_new_tokens=12, eos_id=None)[0, len(ids):].tolist()
        theirs = generator.generate_batch([[vocab[i] for i in ids]], max_length=12, sampling_topk=1,
                                          include_prompt_in_result=False, end_token=[])[0].sequences[0]
        assert theirs == [vocab[i] for i in mine]
