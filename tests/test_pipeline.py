"""The resumable pipeline (recipes/pipeline.py) on a toy de -> en task: every stage kind, and resume
at a training stage and inside back-translation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nanoformer.cli import main
from nanoformer.errors import UserError
from nanoformer.recipes import pipeline as pipeline_module
from nanoformer.recipes.pipeline import load_pipeline

from test_translation_cli import WORDS, toy_corpus

PART = """
[model]
arch = "{arch}"
d_model = 32
n_heads = 4
n_layers = 1
d_ff = 64
max_positions = 40
dropout = 0.0
activation = "gelu"
norm_position = "pre"
positional = "learned"
[data]
{data}
[train]
max_steps = 4
batch_size = 8
lr = 1e-3
warmup_steps = 1
eval_interval = 2
eval_batches = 2
device = "cpu"
"""

TRANSLATION = """
[model]
arch = "encoder-decoder"
{model}
[data]
kind = "translation"
path = "corpus"
src_lang = "{src}"
tgt_lang = "{tgt}"
tokenizer = "bpe"
vocab_size = 300
max_tokens = 400
max_length = 24
[train]
max_steps = 6
lr = 2e-3
warmup_steps = 1
eval_interval = 2
keep_last = 3
device = "cpu"
"""

PIPELINE = """
[[stage]]
name = "encoder"
train = "encoder.toml"
[[stage]]
name = "decoder"
train = "decoder.toml"
[[stage]]
name = "reverse"
train = "reverse.toml"
[[stage]]
name = "synthetic"
back_translate = "reverse"
input = ["mono.en"]
languages = ["en", "de"]
sample = true
top_k = 5
[[stage]]
name = "translator"
train = "translator.toml"
set = ["model.init_encoder='{encoder}'", "model.init_decoder='{decoder}'", "data.synthetic='{synthetic}'"]
[[stage]]
name = "final"
average = "translator"
last = 2
[[stage]]
name = "scores"
evaluate = "final"
splits = ["val"]
beam_size = 1
"""


def write_pipeline(folder: Path) -> Path:
    toy_corpus(folder / "corpus")
    german = (folder / "corpus" / "train.de").read_text(encoding="utf-8").splitlines()
    (folder / "mlm.de").write_text("\n\n".join(german) + "\n", encoding="utf-8")  # a paragraph a sentence
    (folder / "encoder.toml").write_text(PART.format(arch="encoder", data='kind = "mlm"\npath = "mlm.de"\n'
                                         'tokenizer = "char"\nmax_length = 32\npairs = false'), encoding="utf-8")
    (folder / "decoder.toml").write_text(PART.format(arch="decoder", data='path = "corpus/train.en"\n'
                                         'tokenizer = "char"\nblock_size = 16'), encoding="utf-8")
    (folder / "reverse.toml").write_text(TRANSLATION.format(
        model="d_model = 32\nn_heads = 4\nn_layers = 1\nd_ff = 64\nmax_positions = 40\nshare_embeddings = true",
        src="en", tgt="de"), encoding="utf-8")
    (folder / "translator.toml").write_text(TRANSLATION.format(model="dropout = 0.0", src="de", tgt="en"),
                                            encoding="utf-8")
    english = list(WORDS.values())
    lines = [f"{english[i % 10]} {english[i // 10]}" + " a" * (i % 3) for i in range(23)]  # 23 distinct
    (folder / "mono.en").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = folder / "pipeline.toml"
    path.write_text(PIPELINE, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def small_shards(monkeypatch):
    monkeypatch.setattr(pipeline_module, "SHARD_LINES", 5)  # 23 sentences: 5 shards
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_pipeline_resumes_a_training_stage_and_back_translation(tmp_path, monkeypatch, capsys):
    path = write_pipeline(tmp_path)
    out = tmp_path / "out"
    # An interrupted first stage: three of its four steps done.
    assert main(["train", str(tmp_path / "encoder.toml"), "--out", str(out / "encoder"), "--quiet",
                 "--set", "train.max_steps=3"]) == 0
    # Back-translation stopped after two shards (a Ctrl-C inside the third).
    from nanoformer.generation import translation

    calls, interrupts = [], []
    original = translation.translate_texts

    def interrupted(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 3 and not interrupts:
            interrupts.append(True)
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(translation, "translate_texts", interrupted)
    assert main(["pipeline", str(path), "--out", str(out), "--quiet"]) == 130
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert state["encoder"]["done"] and state["encoder"]["step"] == 4  # resumed at step 3, not restarted
    assert state["synthetic"]["shards_done"] == 2 and not state["synthetic"]["done"]
    assert state["reverse"]["done"] and "translator" not in state

    calls.clear()
    reverse_seconds = state["reverse"]["seconds"]
    assert main(["pipeline", str(path), "--out", str(out), "--quiet"]) == 0
    assert calls == [5, 5, 3, 30]  # shards 3 to 5 only, then the 30 validation sentences of `scores`
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert state["reverse"]["seconds"] == reverse_seconds  # a finished stage is not run again
    assert all(record["done"] for record in state.values()) and set(state) == {
        "encoder", "decoder", "reverse", "synthetic", "translator", "final", "scores"}
    assert state["synthetic"]["sentences"] == 23
    synthetic = (out / "synthetic" / "pairs.de").read_text(encoding="utf-8").split("\n")
    assert len(synthetic) == 24 and (out / "synthetic" / "pairs.en").read_text(encoding="utf-8").count("\n") == 23
    translator = json.loads((out / "translator" / "checkpoints" / "last" / "config.json").read_text())
    assert translator["warm_start"]["init_encoder"].startswith(str((out / "encoder").resolve()))
    assert translator["data"]["synthetic_mix"]["synthetic"] > 0
    scores = json.loads((out / "scores" / "scores.json").read_text())
    assert "BLEU" in scores["val"]["signature"] or "nrefs" in scores["val"]["signature"]
    assert (out / "final" / "source_tokenizer.json").is_file()
    printed = capsys.readouterr().out
    assert "total" in printed and "val BLEU" in printed
    # The same pipeline from scratch gives the same synthetic side: each shard's draws are seeded.
    monkeypatch.setattr(translation, "translate_texts", original)
    again = tmp_path / "again"
    assert main(["pipeline", str(path), "--out", str(again), "--quiet", "--only", "encoder", "--only", "decoder",
                 "--only", "reverse", "--only", "synthetic"]) == 0
    assert (again / "synthetic" / "pairs.de").read_text(encoding="utf-8") == "\n".join(synthetic)


@pytest.mark.parametrize("text, message", [
    ('[[stage]]\nname = "a"\n', "give exactly one of train, back_translate, average, evaluate"),
    ('[[stage]]\nname = "a b"\ntrain = "x.toml"\n', "name = 'a b'; give each stage a folder name"),
    ('[[stage]]\nname = "a"\ntrain = "x.toml"\n[[stage]]\nname = "a"\ntrain = "y.toml"\n', "'a' is used twice"),
    ('[[stage]]\nname = "a"\naverage = "nowhere"\n', "average = 'nowhere' is neither an earlier stage"),
    ('[[stage]]\nname = "a"\ntrain = "x.toml"\nmax_tim = "1m"\n', "unknown key(s) ['max_tim'] for a train stage"),
    ('[[stage]]\nname = "b"\nback_translate = "."\ninput = "m.en"\nlanguages = ["en"]\n', "languages = ['en']"),
    ('stage = 3\n', "a pipeline is a list of [[stage]] tables"),
])
def test_pipeline_mistakes_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as error:
        load_pipeline(path, tmp_path / "out")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_empty_monolingual_corpus_is_a_one_line_error(tmp_path, capsys):
    path = write_pipeline(tmp_path)
    (tmp_path / "mono.en").write_text("\n\n", encoding="utf-8")
    code = main(["pipeline", str(path), "--out", str(tmp_path / "out"), "--quiet", "--only", "reverse",
                 "--only", "synthetic"])
    err = capsys.readouterr().err
    assert code == 2 and "mono.en: no sentence of at most 50 words to back-translate" in err


def test_budget_scales_every_stage(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[[stage]]\nname = "a"\ntrain = "x.toml"\nmax_time = "30m"\n'
                    '[[stage]]\nname = "b"\ntrain = "y.toml"\nmax_time = "10m"\n', encoding="utf-8")
    pipeline = load_pipeline(path, tmp_path)
    assert pipeline.scale_to("10m") == pytest.approx(0.25)
    assert [s.options["max_time"] for s in pipeline.stages] == ["450.0s", "150.0s"]
