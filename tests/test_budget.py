"""`size = "auto"`: the fitted law, the choice it makes from measured step times, its record, and its errors.

The probe (a few seconds of real steps) is replaced by fixed step times where a test is about
the choice, so the choice is checked as the pure function of (speed, budget) it must be.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

import nanoformer.recipes.speed_probe as speed_probe
from nanoformer.cli import main
from nanoformer.errors import UserError
from nanoformer.recipes import budget, train
from nanoformer.recipes.budget import MIN_STEPS, choose, rank_rungs
from nanoformer.models import EncoderModel, Seq2SeqTransformer
from nanoformer.recipes.ladders import DECODER_LADDER, ENCODER_DECODER_LADDER, ENCODER_LADDER
from nanoformer.recipes.scaling_law import LossPoint, ScalingLaw, fit_scaling_law
from nanoformer.run_config import build_run_config, load_run_config

LAW = ScalingLaw(E=1.2, A=40.0, alpha=0.35, B=600.0, beta=0.45)


def step_times(speed: float) -> dict[str, float]:
    """Step times proportional to each rung's work, on a machine of `speed` (larger: faster)."""
    return {r.name: (6 * r.n_params + 2e4) * r.tokens_per_step / (speed * 1e9) for r in DECODER_LADDER}


def test_fit_recovers_the_law_that_made_the_points():
    rng = random.Random(0)
    points = []
    for n in (1e5, 4e5, 1.2e6, 3e6, 1e7):
        for d in (3e5, 1e6, 3e6, 9e6):
            points.append(LossPoint(n, d, LAW.predict(n, d) * math.exp(rng.gauss(0, 0.002))))
    fitted = fit_scaling_law(points)
    for n, d in ((2e5, 5e5), (5e6, 2e6), (2e7, 2e7)):  # inside and a little beyond the grid
        assert fitted.predict(n, d) == pytest.approx(LAW.predict(n, d), rel=0.01)
    assert fitted.alpha == pytest.approx(LAW.alpha, abs=0.1) and fitted.beta == pytest.approx(LAW.beta, abs=0.1)
    with pytest.raises(ValueError, match="at least 5"):
        fit_scaling_law(points[:4])


def test_the_choice_is_a_function_of_speed_and_budget():
    times = step_times(speed=20)
    first = choose(rank_rungs(DECODER_LADDER, LAW, 600, times), 600)
    again = choose(rank_rungs(DECODER_LADDER, LAW, 600, dict(times)), 600)
    assert first == again
    candidates = rank_rungs(DECODER_LADDER, LAW, 600, times)
    assert first.predicted_loss == min(c.predicted_loss for c in candidates if c.predicted_loss is not None)
    assert first.steps == int(600 / times[first.rung.name])


def test_more_time_or_a_faster_machine_buys_a_larger_model():
    order = [r.name for r in DECODER_LADDER]
    sizes = [order.index(choose(rank_rungs(DECODER_LADDER, LAW, t, step_times(20)), t).rung.name)
             for t in (30, 120, 600, 3600, 36000)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    slow = choose(rank_rungs(DECODER_LADDER, LAW, 600, step_times(5)), 600).rung.name
    fast = choose(rank_rungs(DECODER_LADDER, LAW, 600, step_times(500)), 600).rung.name
    assert order.index(slow) < order.index(fast)


def test_a_budget_too_small_for_any_model_is_one_line():
    times = step_times(speed=20)
    budget_s = 0.5 * MIN_STEPS * times[DECODER_LADDER[0].name]
    with pytest.raises(UserError, match="too short for any model") as error:
        choose(rank_rungs(DECODER_LADDER, LAW, budget_s, times), budget_s)
    assert "\n" not in str(error.value) and "give at least" in str(error.value)


TEXT = "".join(random.Random(1).choice(["to be ", "or not ", "that is ", "the question.\n", "whether "])
               for _ in range(3000))


def tiny_sections(folder: Path, **train) -> dict:
    (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
    return {
        "model": {"arch": "decoder", "size": "auto", "dropout": 0.0, "positional": "learned"},
        "data": {"path": str(folder / "corpus.txt"), "tokenizer": "char"},
        "train": {"max_time": "4s", "eval_interval": 40, "eval_batches": 2, "log_interval": 10, "device": "cpu",
                  **train},
    }


def fixed_probe(monkeypatch, arch: str, step_s) -> list[list[str]]:
    """`arch`'s law is LAW, and the probe 'measures' step_s(rung name); returns its calls."""
    calls = []

    def probe(run, rungs, vocab_size, steps=3, stop_after_s=None):
        calls.append([r.name for r in rungs])
        return {r.name: step_s(r.name) for r in rungs}

    monkeypatch.setitem(budget.LAWS, arch, LAW)
    monkeypatch.setattr(speed_probe, "probe_step_times", probe)
    return calls


@pytest.fixture
def fixed_machine(monkeypatch):
    """The decoder law and a probe that 'measures' fixed step times; counts its calls."""
    return fixed_probe(monkeypatch, "decoder", lambda name: {"2x64-c64": 0.01}.get(name, 10.0))


def test_the_choice_is_recorded_and_reused_on_resume(tmp_path, fixed_machine, capsys):
    run_dir = tmp_path / "run"
    run = build_run_config(tiny_sections(tmp_path))
    first = train(run, run_dir, progress=False, pause_after_s=1.0)
    assert first.stopped_by == "pause" and len(fixed_machine) == 1
    record = json.loads((run_dir / "size.json").read_text())
    assert record["chosen"] == "2x64-c64" and record["budget_s"] == 4.0
    assert record["expected_steps"] == int(4.0 / (0.01 * (1 + 2 / (3 * 40))))
    assert "size auto for 4s: 2x64-c64" in capsys.readouterr().out

    # The machine is "faster" now; a resumed run still trains the shape it recorded.
    budget.LAWS["decoder"] = ScalingLaw(E=1.0, A=1e4, alpha=0.1, B=1.0, beta=0.5)  # would pick the largest
    result = train(run, run_dir, resume=True, progress=False)
    assert result.stopped_by == "max_time" and len(fixed_machine) == 1  # not measured again
    saved = json.loads((run_dir / "checkpoints" / "last" / "config.json").read_text())
    assert saved["model"]["d_model"] == 64 and saved["model"]["n_layers"] == 2
    assert saved["train"]["batch_size"] == 32 and saved["train"]["lr"] == 3e-3
    assert saved["size"]["chosen"] == "2x64-c64"


def test_resuming_without_the_record_is_refused(tmp_path, fixed_machine):
    run = build_run_config(tiny_sections(tmp_path))
    train(run, tmp_path / "run", progress=False, pause_after_s=0.5)
    (tmp_path / "run" / "size.json").unlink()
    with pytest.raises(UserError, match="size.json"):
        train(run, tmp_path / "run", resume=True, progress=False)


def test_a_named_rung_trains_that_shape_for_max_steps(tmp_path, fixed_machine):
    sections = tiny_sections(tmp_path)
    sections["model"]["size"] = "4x128-c64"
    del sections["train"]["max_time"]
    sections["train"]["max_steps"] = 3
    run = build_run_config(sections)
    result = train(run, tmp_path / "run", progress=False)
    assert result.step == 3 and fixed_machine == []  # no budget, nothing to measure
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last" / "config.json").read_text())
    assert (saved["model"]["d_model"], saved["model"]["n_layers"], saved["data"]["block_size"]) == (128, 4, 64)
    assert saved["train"]["warmup_steps"] == 10


@pytest.mark.parametrize("change, message", [
    (lambda s: s["model"].update(d_model=256), "sets [model] d_model"),
    (lambda s: s["train"].update(lr=1e-3), "sets [train] lr"),
    (lambda s: s["train"].update(max_steps=50), "sets [train] max_steps"),
    (lambda s: s["data"].update(block_size=64), "sets [data] block_size"),
    (lambda s: s["train"].pop("max_time"), "sizes the model for [train] max_time"),
    (lambda s: s["model"].update(size="huge"), "expected 'auto' or one of"),
    (lambda s: s["model"].update(size=3), "expected 'auto', 'fixed' or the name of a rung"),
])
def test_conflicting_or_unknown_sizes_are_one_line_errors(tmp_path, change, message, fixed_machine):
    sections = tiny_sections(tmp_path)
    change(sections)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        train(build_run_config(sections), tmp_path / "run", progress=False)
    assert "\n" not in str(error.value)


def test_cli_plan_prints_the_choice_and_train_refuses_a_tiny_budget(tmp_path, fixed_machine, capsys):
    tiny_sections(tmp_path)  # writes the corpus
    config = tmp_path / "auto.toml"
    config.write_text('[model]\narch = "decoder"\nsize = "auto"\n[data]\npath = "corpus.txt"\ntokenizer = "char"\n'
                      '[train]\nmax_time = "10m"\ndevice = "cpu"\n', encoding="utf-8")
    assert main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    expected = choose(rank_rungs(DECODER_LADDER, LAW, 600, {"2x64-c64": 0.01, "4x128-c64": 10.0},
                                 budget.eval_overhead(load_run_config(config).train)), 600)
    assert f"chosen: {expected.rung.name}" in out and "-> 2x64-c64" in out
    assert main(["train", str(config), "--set", "train.max_time=0.5s", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "too short for any model" in err and len(err.splitlines()) == 1


def test_the_probe_measures_real_steps_and_leaves_the_seed_alone(tmp_path):
    run = build_run_config({**tiny_sections(tmp_path), "model": {"arch": "decoder", "dropout": 0.0}})
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    times = speed_probe.probe_step_times(run, DECODER_LADDER[:2], vocab_size=40, steps=2)
    assert list(times) == ["2x64-c64", "4x128-c64"] and all(t > 0 for t in times.values())
    assert times["4x128-c64"] > times["2x64-c64"]  # sixteen times the work
    assert torch.equal(torch.rand(4), expected)
    stopped = speed_probe.probe_step_times(run, DECODER_LADDER[:3], vocab_size=40, steps=1, stop_after_s=1e-9)
    assert list(stopped) == ["2x64-c64"]  # the rest would be slower still


def test_size_fixed_keeps_the_shape_the_config_gives(tmp_path):
    sections = tiny_sections(tmp_path)
    sections["model"].update(size="fixed", d_model=48, n_heads=2)
    sections["data"]["block_size"] = 24
    run = build_run_config(sections)
    assert run.size is None and run.model.d_model == 48 and run.data.block_size == 24


def test_size_on_a_family_without_a_ladder_is_refused_not_ignored(tmp_path):
    sections = {"model": {"arch": "encoder", "size": "auto", "num_labels": 2},
                "data": {"kind": "classification", "train": str(tmp_path / "train.tsv")}, "train": {"max_time": "10m"}}
    with pytest.raises(UserError, match="budget sizing is fitted for .* not 'classification'"):
        train(build_run_config(sections), tmp_path / "run", progress=False)


# The encoder-decoder ladder (configs/multi30k_de_en.toml's family): the same rule, with a
# translator's shape, token batches and Noam rate.

WORDS = {"ein": "a", "mann": "man", "hund": "dog", "rot": "red", "blau": "blue", "geht": "walks", "katze": "cat"}


def translation_sections(folder: Path, **train) -> dict:
    rng = random.Random(0)
    for split, n in (("train", 300), ("val", 40), ("test", 20)):
        src = [[rng.choice(list(WORDS)) for _ in range(rng.randint(2, 6))] for _ in range(n)]
        (folder / f"{split}.de").write_text("".join(" ".join(s) + "\n" for s in src), encoding="utf-8")
        (folder / f"{split}.en").write_text("".join(" ".join(WORDS[w] for w in s) + "\n" for s in src), encoding="utf-8")
    return {
        "model": {"arch": "encoder-decoder", "size": "auto", "max_positions": 32, "norm_position": "pre",
                  "positional": "sinusoidal", "dropout": 0.1},
        "data": {"kind": "translation", "path": str(folder), "src_lang": "de", "tgt_lang": "en", "tokenizer": "bpe",
                 "vocab_size": 300, "max_length": 24},
        "train": {"max_time": "20s", "schedule": "noam", "eval_interval": 50, "eval_batches": 100, "log_interval": 10,
                  "device": "cpu", **train},
    }


@pytest.fixture
def fixed_translation_machine(monkeypatch):
    """A law for the encoder-decoder ladder and a probe that 'measures' fixed step times."""
    return fixed_probe(monkeypatch, "encoder-decoder", {"3x128": 0.05, "3x192": 0.08, "3x256": 0.12}.__getitem__)


def test_translation_rungs_count_every_layer_parameter_cross_attention_included():
    for rung in ENCODER_DECODER_LADDER:
        run = build_run_config({"model": {"arch": "encoder-decoder", "d_model": rung.d_model, "n_layers": rung.n_layers,
                                          "n_heads": rung.n_heads, "d_ff": rung.d_ff},
                                "data": {"kind": "translation", "name": "multi30k"}})
        model = Seq2SeqTransformer(run.model.replace(vocab_size=300))
        assert rung.n_params == sum(p.numel() for name, p in model.named_parameters() if ".layers." in name)


def test_a_named_translation_rung_sets_shape_batch_and_the_noam_multiplier(tmp_path, fixed_translation_machine):
    sections = translation_sections(tmp_path, max_steps=2)
    sections["model"]["size"] = "3x128"
    del sections["train"]["max_time"]
    train(build_run_config(sections), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last" / "config.json").read_text())
    assert (saved["model"]["d_model"], saved["model"]["n_layers"], saved["model"]["d_ff"]) == (128, 3, 512)
    assert saved["data"]["max_tokens"] == 4096 and saved["train"]["warmup_steps"] == 100
    # the Noam rate's peak, lr / sqrt(d * warmup), is the rung's
    assert saved["train"]["lr"] / math.sqrt(128 * 100) == pytest.approx(ENCODER_DECODER_LADDER[0].lr)
    assert fixed_translation_machine == []  # no budget, nothing to measure


def test_translation_auto_counts_r_drop_steps_and_the_real_validation_batches(tmp_path, fixed_translation_machine):
    sections = translation_sections(tmp_path, rdrop=1.0, rdrop_from=0.5)
    result = train(build_run_config(sections), tmp_path / "run", progress=False, pause_after_s=0.5)
    assert result.stopped_by == "pause" and fixed_translation_machine == [["3x128", "3x192", "3x256"]]
    record = json.loads((tmp_path / "run" / "size.json").read_text())
    one_batch = 1 / (3 * 50)  # the toy val split is one 4,096-token batch, not eval_batches = 100
    step_s = {"3x128": 0.05, "3x192": 0.08, "3x256": 0.12}
    expected = choose(rank_rungs(ENCODER_DECODER_LADDER, LAW, 20, step_s, one_batch, 0.5), 20)
    assert record["chosen"] == expected.rung.name and record["expected_steps"] == expected.steps
    # half the budget at full rate, half at R-Drop's half rate
    assert expected.steps == int(20 * 0.75 / (step_s[expected.rung.name] * (1 + one_batch)))


def test_translation_sizes_refuse_the_keys_they_set(tmp_path, fixed_translation_machine):
    for section, key, value in (("data", "max_tokens", 2048), ("model", "d_model", 64), ("train", "warmup_steps", 50)):
        sections = translation_sections(tmp_path)
        sections[section][key] = value
        with pytest.raises(UserError, match=rf"sets \[{section}\] {key}") as error:
            train(build_run_config(sections), tmp_path / "run", progress=False)
        assert "\n" not in str(error.value)


def test_the_probe_times_a_real_encoder_decoder_step(tmp_path):
    run = build_run_config({**translation_sections(tmp_path), "model": {"arch": "encoder-decoder", "dropout": 0.0}})
    times = speed_probe.probe_step_times(run, ENCODER_DECODER_LADDER[:2], vocab_size=300, steps=1)
    assert list(times) == ["3x128", "3x192"] and 0 < times["3x128"] < times["3x192"]


def test_steps_in_a_budget_count_r_drop_at_half_rate():
    assert budget.steps_in(600, 1.0) == 600
    assert budget.steps_in(600, 1.0, doubled=0.5) == 450
    assert budget.steps_in(600, 1.0, overhead=0.5, doubled=1.0) == 200


def test_cli_plan_sizes_a_translator(tmp_path, fixed_translation_machine, capsys):
    translation_sections(tmp_path)  # writes the pairs
    config = tmp_path / "auto.toml"
    config.write_text(f'[model]\narch = "encoder-decoder"\nsize = "auto"\n[data]\nkind = "translation"\npath = "{tmp_path}"\n'
                      'src_lang = "de"\ntgt_lang = "en"\n[train]\nmax_time = "10m"\nschedule = "noam"\ndevice = "cpu"\n',
                      encoding="utf-8")
    assert main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    run = load_run_config(config)
    expected = choose(rank_rungs(ENCODER_DECODER_LADDER, LAW, 600, {"3x128": 0.05, "3x192": 0.08, "3x256": 0.12},
                                 budget.eval_overhead(run.train)), 600)
    assert f"chosen: {expected.rung.name}" in out and "3x128" in out and "3x256" in out


def test_sized_keys_follow_the_arch_when_the_config_names_no_data_kind():
    sections = {"model": {"arch": "encoder-decoder", "size": "3x128"}, "data": {"name": "multi30k", "max_tokens": 2048}}
    with pytest.raises(UserError, match=r"sets \[data\] max_tokens"):
        build_run_config(sections)


# The encoder ladder (configs/bert_mlm_ko.toml's family): masked-LM pre-training, sized alike.

KOREAN = ["나는 학교에 간다", "너는 집에 간다", "그는 밥을 먹는다", "우리는 책을 읽는다", "그녀는 학교에서 공부한다"]
ENCODER_STEP_S = {"2x128": 0.02, "4x128": 0.05, "4x256": 0.2}


def mlm_sections(folder: Path, **train) -> dict:
    rng = random.Random(0)
    paragraphs = [" ".join(rng.choice(KOREAN) for _ in range(6)) for _ in range(500)]  # a text unit each
    (folder / "corpus.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return {
        "model": {"arch": "encoder", "preset": "bert-mini", "size": "auto", "dropout": 0.0},
        "data": {"kind": "mlm", "path": str(folder / "corpus.txt"), "vocab_size": 120, "val_fraction": 0.1,
                 "whole_word_mask": True},
        "train": {"max_time": "20s", "eval_interval": 50, "eval_batches": 4, "log_interval": 10, "device": "cpu",
                  **train},
    }


@pytest.fixture
def fixed_encoder_machine(monkeypatch):
    return fixed_probe(monkeypatch, "encoder", ENCODER_STEP_S.__getitem__)


def test_encoder_rungs_count_every_layer_parameter():
    for rung in ENCODER_LADDER:
        model = EncoderModel(build_run_config({"model": {"preset": "bert-mini", "d_model": rung.d_model,
                                                         "n_layers": rung.n_layers, "n_heads": rung.n_heads,
                                                         "d_ff": rung.d_ff, "vocab_size": 300},
                                               "data": {"path": "corpus.txt"}}).model)
        assert rung.n_params == sum(p.numel() for name, p in model.named_parameters() if ".layers." in name)


def test_mlm_auto_sizes_the_encoder_and_records_the_choice(tmp_path, fixed_encoder_machine, capsys):
    run = build_run_config(mlm_sections(tmp_path))
    result = train(run, tmp_path / "run", progress=False, pause_after_s=0.5)
    assert result.stopped_by == "pause" and fixed_encoder_machine == [["2x128", "4x128", "4x256"]]
    expected = choose(rank_rungs(ENCODER_LADDER, LAW, 20, ENCODER_STEP_S, budget.eval_overhead(run.train)), 20)
    record = json.loads((tmp_path / "run" / "size.json").read_text())
    assert record["chosen"] == expected.rung.name and record["expected_steps"] == expected.steps
    assert f"size auto for 20s: {expected.rung.name}" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last" / "config.json").read_text())
    rung = expected.rung
    assert (saved["model"]["d_model"], saved["model"]["n_layers"], saved["model"]["max_positions"]) == (
        rung.d_model, rung.n_layers, rung.context)
    assert saved["data"]["max_length"] == rung.context and saved["train"]["batch_size"] == rung.batch_size
    assert saved["train"]["lr"] == rung.lr and saved["train"]["warmup_steps"] == budget.encoder_warmup_for(expected.steps)
    assert saved["model"]["norm_position"] == "post"  # the rest of the preset stays
    assert saved["size"]["chosen"] == rung.name


def test_mlm_sizes_refuse_the_keys_they_set(tmp_path):
    for section, key, value in (("data", "max_length", 64), ("train", "batch_size", 16), ("model", "n_layers", 2)):
        sections = mlm_sections(tmp_path)
        sections[section][key] = value
        with pytest.raises(UserError, match=rf"sets \[{section}\] {key}") as error:
            build_run_config(sections)
        assert "\n" not in str(error.value)


def test_the_probe_times_a_real_masked_lm_step(tmp_path):
    sections = mlm_sections(tmp_path)
    del sections["model"]["size"]
    times = speed_probe.probe_step_times(build_run_config(sections), ENCODER_LADDER[:2], vocab_size=300, steps=1)
    assert list(times) == ["2x128", "4x128"] and 0 < times["2x128"] < times["4x128"]


def test_encoder_warmup_is_a_tenth_of_the_run_within_bounds():
    assert [budget.encoder_warmup_for(n) for n in (300, 2700, 20000)] == [100, 270, 1000]


def test_the_bert_budget_benchmark_sets_auto_against_the_shape_the_config_shipped():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bert_budget.py"
    spec = importlib.util.spec_from_file_location("bert_budget", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fixed, auto = (bench.budget_config(bench.CONFIG, size, 10) for size in ("fixed", "auto"))
    assert fixed.size is None and auto.size == "auto" and fixed.train.max_time_s == auto.train.max_time_s == 600
    assert (fixed.model.n_layers, fixed.model.d_model, fixed.data.max_length) == (4, 256, 128)
    assert (fixed.train.batch_size, fixed.train.lr, fixed.train.warmup_steps) == (64, 5e-4, 1000)
    assert fixed.model.norm_position == "post" and auto.model.norm_position == "pre"  # the config's recipe is pre-LN


def test_the_multi30k_benchmark_keeps_the_fixed_shape_beside_the_sized_config():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "multi30k.py"
    spec = importlib.util.spec_from_file_location("multi30k_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = str(path.parents[1] / "configs" / "multi30k_de_en.toml")
    assert load_run_config(config).size == "auto"  # the shipped config is sized
    fixed = bench.sized_config(config, "fixed", ['train.max_time="600s"'])
    assert fixed.size is None and (fixed.model.d_model, fixed.model.n_layers, fixed.data.max_tokens) == (256, 3, 4096)
    assert (fixed.train.lr, fixed.train.warmup_steps, fixed.train.max_time_s) == (0.7, 500, 600)
    assert bench.sized_config(config, "3x128", []).size == "3x128"


def test_every_stored_law_is_the_fit_of_the_committed_study_points():
    """scaling_laws.json is what `scaling_study.py --fit --write` makes of the committed results:
    the same number of points (superseded recipes left out) and the same predictions at each."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("scaling_study", root / "benchmarks" / "scaling_study.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    stored = json.loads(budget.LAWS_FILE.read_text(encoding="utf-8"))
    assert set(stored) == {"decoder", "encoder-decoder", "encoder"}  # Korean BERT is sized too
    for family, entry in stored.items():
        rows = study.study_rows(root / "benchmarks" / "results" / "scaling_study.jsonl", family)
        assert len(rows) == entry["runs"] and all(not r.get("superseded") for r in rows)
        law = ScalingLaw(**{k: entry[k] for k in ("E", "A", "alpha", "B", "beta")})
        refit = fit_scaling_law([LossPoint(r["n_params"], r["tokens"], r["full_val_loss"]) for r in rows])
        for r in rows:
            assert law.predict(r["n_params"], r["tokens"]) == pytest.approx(refit.predict(r["n_params"], r["tokens"]),
                                                                           abs=2e-3), (family, r["rung"])
