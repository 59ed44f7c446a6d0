"""Options either take effect or are refused in one line; none is silently ignored (issue 27)."""

from __future__ import annotations

import pytest
from test_bert_cli import one_line_error
from test_cli import write_config

from nanoformer.cli import main
from nanoformer.errors import UserError
from nanoformer.run_config import load_run_config


def test_a_path_on_the_command_line_replaces_the_configs_standard_corpus(tmp_path, capsys):
    run = load_run_config("configs/shakespeare_char.toml", ['data.path="mine.txt"'])
    assert run.data.name is None and run.data.path == "mine.txt"
    run = load_run_config("configs/shakespeare_char.toml")
    assert run.data.name == "tinyshakespeare" and run.data.path is None
    both = tmp_path / "both.toml"
    both.write_text('[model]\narch = "decoder"\n[data]\nname = "tinyshakespeare"\npath = "mine.txt"\n',
                    encoding="utf-8")
    with pytest.raises(UserError, match="both name = 'tinyshakespeare' and path = 'mine.txt'"):
        load_run_config(both)
    with pytest.raises(UserError, match="keep one"):
        load_run_config("configs/shakespeare_char.toml", ['data.path="a.txt"', 'data.name="tinyshakespeare"'])
    # As a user would run it: a missing file is named, not replaced by Tiny Shakespeare.
    code = main(["train", "configs/shakespeare_char.toml", "--set", f'data.path="{tmp_path / "mine.txt"}"',
                 "--out", str(tmp_path / "run"), "--quiet"])
    one_line_error(capsys, code, "mine.txt")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    code = main(["train", "configs/shakespeare_char.toml", "--set", f'data.path="{tmp_path / "bad.txt"}"',
                 "--out", str(tmp_path / "run2"), "--quiet"])
    one_line_error(capsys, code, "bad.txt", "UTF-8")


def test_evaluate_refuses_options_of_another_family(tmp_path, capsys):
    run_dir = tmp_path / "gpt"
    assert main(["train", str(write_config(tmp_path, steps=4)), "--out", str(run_dir), "--quiet"]) == 0
    (tmp_path / "a.de").write_text("x\ny\n", encoding="utf-8")
    (tmp_path / "b.en").write_text("x\n", encoding="utf-8")
    capsys.readouterr()
    code = main(["evaluate", str(run_dir), "--src", str(tmp_path / "a.de"), "--ref", str(tmp_path / "b.en")])
    one_line_error(capsys, code, "--ref does not apply to a GPT-style decoder", "a translator")
    one_line_error(capsys, main(["evaluate", str(run_dir), "--beam-size", "2"]), "--beam-size")
    one_line_error(capsys, main(["evaluate", str(run_dir), "--split", "test"]), "--split")
    assert main(["evaluate", str(run_dir), "--max-tokens", "64"]) == 0


def test_greedy_generation_refuses_sampling_options(tmp_path, capsys):
    run_dir = tmp_path / "gpt"
    assert main(["train", str(write_config(tmp_path, steps=2)), "--out", str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    base = ["generate", str(run_dir), "--prompt", "나는", "--max-new-tokens", "4", "--greedy"]
    one_line_error(capsys, main([*base, "--top-k", "5"]), "--greedy", "--top-k")
    one_line_error(capsys, main([*base, "--temperature", "1.2", "--top-p", "0.9"]), "--temperature, --top-p")
    assert main(base) == 0
