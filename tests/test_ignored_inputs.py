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


# --------------------------------------------------------------------------- the sweep: a test per verb


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    from tiny_checkpoints import all_families

    return {name: str(path) for name, path in all_families(tmp_path_factory.mktemp("families")).items()}


def output(capsys, argv) -> str:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_generate_greedy_refuses_seed_and_samples_and_sampling_takes_the_seed(models, capsys):
    base = ["generate", models["gpt"], "--prompt", "I go", "--max-new-tokens", "12"]
    one_line_error(capsys, main([*base, "--greedy", "--seed", "3"]), "--seed")
    one_line_error(capsys, main([*base, "--greedy", "--num-samples", "2"]), "--num-samples")
    first, second = (output(capsys, [*base, "--seed", str(seed), "--temperature", "2"]) for seed in (1, 2))
    assert first != second and output(capsys, [*base, "--seed", "1", "--temperature", "2"]) == first
    assert output(capsys, [*base, "--num-samples", "2"]).count("--- sample") == 2


def test_translate_refuses_a_length_penalty_without_a_beam(tmp_path, capsys):
    from tiny_checkpoints import trained_translator

    base = ["translate", str(trained_translator(tmp_path)), "ein mann geht katze läuft"]
    one_line_error(capsys, main([*base, "--beam-size", "1", "--length-penalty", "0.6"]), "--length-penalty")
    one_line_error(capsys, main([*base, "--sample", "--length-penalty", "0.6"]), "--length-penalty", "--sample")
    short = output(capsys, [*base, "--beam-size", "1", "--max-len-a", "0", "--max-len-b", "2"]).strip()
    longer = output(capsys, [*base, "--beam-size", "1", "--max-len-a", "0", "--max-len-b", "12"]).strip()
    assert len(short) < len(longer)  # the limit takes effect


def test_classify_refuses_input_options_without_input(models, capsys):
    one_line_error(capsys, main(["classify", str(models["sentiment"]), "good", "--text-column", "review"]),
                   "--text-column", "--input")
    one_line_error(capsys, main(["classify", str(models["sentiment"]), "good", "--format", "tsv"]), "--format")
    one_line_error(capsys, main(["classify", str(models["sentiment"]), "good", "--pair-column", "b"]), "--pair-column")


def test_embed_refuses_input_options_without_input_and_normalizes_unless_told(models, capsys, tmp_path):
    one_line_error(capsys, main(["embed", str(models["bert"]), "one", "--text-column", "x"]), "--text-column")
    lines = tmp_path / "lines.txt"
    lines.write_text("one\ntwo\n", encoding="utf-8")
    one_line_error(capsys, main(["embed", str(models["bert"]), "one", "--input", str(lines)]), "not both")
    import json
    import math

    def norm(*extra) -> float:
        vector = json.loads(output(capsys, ["embed", models["bert"], "I go to school.", *extra]))["embedding"]
        return math.sqrt(sum(x * x for x in vector))

    assert norm() == pytest.approx(1.0, abs=1e-5) and norm("--no-normalize") != pytest.approx(1.0, abs=1e-3)


def test_attention_refuses_options_that_would_draw_nothing(models, capsys, tmp_path):
    out = ["--out", str(tmp_path / "maps")]
    one_line_error(capsys, main(["attention", str(models["gpt"]), "--text", "I go", "--max-new-tokens", "5", *out]),
                   "--max-new-tokens", "'decoder'")
    one_line_error(capsys, main(["attention", str(models["translator"]), "--text", "I go", "--target", "x",
                                 "--max-new-tokens", "5", *out]), "--max-new-tokens", "--target")
    one_line_error(capsys, main(["attention", str(models["bert"]), "--text", "I go", "--no-png", "--layer", "1",
                                 *out]), "--no-png")
    short = output(capsys, ["attention", models["translator"], "--text", "I go to school.", "--max-new-tokens", "2",
                            "--no-png", *out])
    assert "greedy translation" in short


def test_fill_mask_top_k_sets_the_number_of_candidates(models, capsys):
    import json

    for k in (2, 5):
        record = json.loads(output(capsys, ["fill-mask", models["bert"], "I go to <mask>.", "--top-k", k, "--json"]))
        assert len(record["candidates"]) == k


def test_pipeline_only_refuses_a_stage_that_is_done(tmp_path, capsys):
    import json

    (tmp_path / "p.toml").write_text('[[stage]]\nname = "a"\ntrain = "x.toml"\n', encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "pipeline.json").write_text(json.dumps({"stages": {"a": {"done": True, "seconds": 1}}}))
    one_line_error(capsys, main(["pipeline", str(tmp_path / "p.toml"), "--out", str(tmp_path / "out"),
                                 "--only", "a"]), "--only a: the stage is done")


def test_info_depth_changes_the_table(capsys):
    assert output(capsys, ["info", "gpt2-small", "--depth", "1"]) != output(capsys, ["info", "gpt2-small", "--depth", "3"])


def test_demo_hands_each_budget_to_its_family_and_checks_its_configs(tmp_path, capsys, monkeypatch):
    from nanoformer.cli import demo

    trained, ran = {}, []
    monkeypatch.setattr(demo, "_train", lambda cli, config, out, minutes:
                        trained.__setitem__(config.name, (minutes, out)))
    monkeypatch.setattr(demo, "_run", lambda cli, argv: ran.append(argv))
    assert main(["demo", "--gpt-minutes", "1.5", "--translation-minutes", "2.5", "--bert-minutes", "0.5",
                 "--out", str(tmp_path / "demo")]) == 0
    assert {name: minutes for name, (minutes, _) in trained.items()} == {
        "shakespeare_char.toml": 1.5, "ko_en_demo.toml": 2.5, "bert_mlm_ko.toml": 0.5}
    assert all(str(out).startswith(str(tmp_path / "demo")) for _, out in trained.values())
    one_line_error(capsys, main(["demo", "--configs", str(tmp_path)]), "config not found")


# Verbs swept elsewhere (the test that does it), or that take positional arguments only.
POSITIONAL_ONLY = {"import-hf", "export-hf"}
SWEPT_ELSEWHERE = {
    "train": "tests/test_cli.py::test_set_overrides_and_preset",
    "finetune": "tests/test_bert_cli.py",
    "plan": "tests/test_budget.py",
    "evaluate": "tests/test_ignored_inputs.py::test_evaluate_refuses_options_of_another_family",
    "export-ct2": "tests/test_interop_ctranslate2.py",
    "export-onnx": "tests/test_interop_onnx.py",
    "quantize": "tests/test_quantize.py",
    "average": "tests/test_translation_cli.py::test_average_writes_the_mean_of_the_last_checkpoints",
    "plot-positions": "tests/test_viz.py",
    "plot-metrics": "tests/test_viz.py",
    "serve": "tests/test_serve_cli.py::test_startup_refusals_are_one_line",
}


def test_every_verb_is_swept():
    """A new verb needs a test here, or a line in SWEPT_ELSEWHERE naming the test that sweeps it."""
    import re
    from pathlib import Path

    from nanoformer.cli import COMMANDS

    here = Path(__file__).read_text(encoding="utf-8")
    swept = {name for name in (c.name for c in COMMANDS) if re.search(rf"def test_{name.replace('-', '_')}_", here)}
    missing = [c.name for c in COMMANDS if c.name not in swept | set(SWEPT_ELSEWHERE) | POSITIONAL_ONLY]
    assert missing == [], f"no option sweep for: {', '.join(missing)}"
    from nanoformer.cli import build_parser

    verbs = next(a for a in build_parser()._actions if a.dest == "command").choices
    for verb in POSITIONAL_ONLY:
        assert all(not a.option_strings or a.dest == "help" for a in verbs[verb]._actions), f"{verb} has options now"
    root = Path(__file__).parent.parent
    for verb, where in SWEPT_ELSEWHERE.items():
        path, _, test = where.partition("::")
        text = (root / path).read_text(encoding="utf-8")
        assert verb in text and (not test or f"def {test}(" in text), f"{verb}: {where} does not exist"
