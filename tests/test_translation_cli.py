"""Translation end to end on a toy task a tiny model learns in seconds (word-for-word German →
English over ten words): `train` → `translate` (argument, file, stdin) → `evaluate` (BLEU with a
sacreBLEU signature) → `average`, resume, separate vocabularies, and one-line errors (exit 2)."""

from __future__ import annotations

import io
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nanoformer.cli import main

WORDS = {"ein": "a", "mann": "man", "hund": "dog", "rot": "red", "blau": "blue", "geht": "walks",
         "läuft": "runs", "katze": "cat", "groß": "big", "klein": "small"}

CONFIG = """
[model]
arch = "encoder-decoder"
d_model = 64
n_heads = 4
n_layers = 2
d_ff = 128
max_positions = 32
dropout = 0.0
activation = "relu"
norm_position = "pre"
positional = "sinusoidal"
scale_embeddings = true
share_embeddings = true
init = "xavier"

[data]
kind = "translation"
path = "corpus"
src_lang = "de"
tgt_lang = "en"
tokenizer = "{tokenizer}"
vocab_size = {vocab}
joint_vocab = {joint}
max_tokens = 400
max_length = 24

[train]
max_steps = {steps}
lr = 4e-3
schedule = "inverse_sqrt"
warmup_steps = 20
betas = [0.9, 0.98]
eps = 1e-9
weight_decay = 0.0
label_smoothing = 0.1
eval_interval = 40
eval_batches = 10
log_interval = 10
keep_last = 3
device = "cpu"
"""


def toy_corpus(folder: Path) -> None:
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 400), ("val", 30), ("test", 30)):
        src = [[rng.choice(list(WORDS)) for _ in range(rng.randint(2, 5))] for _ in range(n)]
        (folder / f"{split}.de").write_text("".join(" ".join(s) + "\n" for s in src), encoding="utf-8")
        (folder / f"{split}.en").write_text("".join(" ".join(WORDS[w] for w in s) + "\n" for s in src), encoding="utf-8")


def write_config(folder: Path, steps: int = 160, tokenizer: str = "bpe", vocab: int = 300, joint: bool = True) -> Path:
    toy_corpus(folder / "corpus")
    path = folder / "toy.toml"
    path.write_text(CONFIG.format(steps=steps, tokenizer=tokenizer, vocab=vocab, joint=str(joint).lower()),
                    encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the test machines are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("toy")
    run_dir = folder / "run"
    assert main(["train", str(write_config(folder)), "--out", str(run_dir), "--quiet"]) == 0
    torch.set_num_threads(threads)
    return run_dir


def run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_training_saves_tokenizer_data_record_and_learns_the_toy_task(trained, capsys):
    best = trained / "checkpoints" / "best"
    config = json.loads((best / "config.json").read_text())
    assert config["model"]["share_embeddings"] and config["model"]["tie_embeddings"]
    assert config["model"]["vocab_size"] == 300 and config["model"]["bos_id"] == 2
    data = config["data"]
    assert data["kind"] == "translation" and data["src_lang"] == "de"
    assert Path(data["files"]["train"]["files"][0][0]).is_absolute() and data["test_splits_resolved"] == ["test"]
    assert (best / "tokenizer.json").is_file() and len(list((trained / "checkpoints").glob("step-*"))) == 3
    code, out, _ = run(capsys, "translate", trained, "ein mann geht", "katze läuft blau", "--beam-size", "1")
    assert code == 0 and out == "a man walks\ncat runs blue\n"


def test_translate_file_and_stdin_keep_order_and_empty_lines(trained, capsys, tmp_path, monkeypatch):
    lines = ["hund rot", "", "groß katze läuft", "   ", "ein mann"]
    source = tmp_path / "in.de"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, _ = run(capsys, "translate", trained, "--input", source, "--beam-size", "1")
    assert code == 0 and out.split("\n") == ["dog red", "", "big cat runs", "", "a man", ""]
    target = tmp_path / "out.en"
    code, out, _ = run(capsys, "translate", trained, "-i", source, "-o", target, "--beam-size", "1", "--quiet")
    assert code == 0 and out == "" and target.read_text(encoding="utf-8") == "dog red\n\nbig cat runs\n\na man\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"klein hund\n\n")))
    code, out, _ = run(capsys, "translate", trained, "--beam-size", "1")
    assert code == 0 and out == "small dog\n\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert run(capsys, "translate", trained, "--beam-size", "1")[:2] == (0, "")


def test_long_sources_are_truncated_with_a_warning_or_refused(trained, capsys, tmp_path):
    long = " ".join(["hund"] * 40)
    code, out, err = run(capsys, "translate", trained, long, "--beam-size", "1")
    assert code == 0 and len(out.splitlines()) == 1 and "warning: 1 source(s) longer" in err and "truncated" in err
    source = tmp_path / "long.de"
    source.write_text(f"hund\n{long}\n", encoding="utf-8")
    target = tmp_path / "long.en"
    code, out, err = run(capsys, "translate", trained, "-i", source, "-o", target, "--no-truncate", "--beam-size", "1")
    assert code == 2 and f"{source}:2: the source has" in err and len(err.strip().splitlines()) == 1
    assert not target.exists()  # no half-written output


def test_bad_inputs_exit_2_with_one_line(trained, capsys, tmp_path):
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"hund\nrot \xff\n")
    code, _, err = run(capsys, "translate", trained, "-i", bad, "--beam-size", "1")
    assert code == 2 and "bad.de: invalid UTF-8 at byte offset 9 (line 2, byte 0xff)" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "translate", trained, "-i", tmp_path / "missing.de")
    assert code == 2 and "missing.de: no such file" in err
    config = write_config(tmp_path, steps=2)
    config.write_text(config.read_text().replace('tgt_lang = "en"', 'tgt_lang = "en"\nname = "wmt"'))
    code, _, err = run(capsys, "train", config, "--out", tmp_path / "r", "--quiet")
    assert code == 2 and "gives both name = " in err and len(err.strip().splitlines()) == 1
    ref = tmp_path / "ref.en"
    ref.write_text("a\nb\n")
    code, _, err = run(capsys, "evaluate", trained, "--src", tmp_path / "corpus" / "test.de", "--ref", ref)
    assert code == 2 and "test.de has 30 lines but" in err


def test_evaluate_prints_bleu_chrf_and_the_sacrebleu_signature(trained, capsys, tmp_path):
    corpus = trained.parent / "corpus"
    code, out, err = run(capsys, "evaluate", trained, "--src", corpus / "test.de", "--ref", corpus / "test.en",
                         "--beam-size", "1")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["bleu"] > 50 and result["chrf"] > 60 and result["sentences"] == 30 and result["beam_size"] == 1
    assert result["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "chrF" in err and "nrefs:1" in err and result["sentences_per_s"] > 0
    code, out, _ = run(capsys, "evaluate", trained, "--split", "test", "--beam-size", "1")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["bleu"] == result["bleu"]
    code, _, err = run(capsys, "evaluate", trained, "--split", "nope")
    assert code == 2 and "no split 'nope'" in err


def test_evaluate_takes_the_checkpoints_generation_settings_as_defaults(trained, capsys, tmp_path):
    """As `translate` does: an imported model's generation section (interop/generation.py) sets the
    beam and the length limits unless an option says otherwise."""
    import shutil

    corpus, checkpoint = trained.parent / "corpus", tmp_path / "ckpt"
    shutil.copytree(trained / "checkpoints" / "best", checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    config["generation"] = {"beam_size": 2, "length_penalty": 1.0, "max_len_a": 0.0, "max_len_b": 2}
    (checkpoint / "config.json").write_text(json.dumps(config))
    files = ("--src", corpus / "test.de", "--ref", corpus / "test.en")
    code, out, _ = run(capsys, "evaluate", checkpoint, *files)
    short = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and short["beam_size"] == 2
    code, out, _ = run(capsys, "evaluate", trained, *files, "--beam-size", "2")
    full = json.loads(out.strip().splitlines()[-1])
    assert short["bleu"] < full["bleu"]  # two tokens at most: the checkpoint's limit took effect
    code, out, _ = run(capsys, "evaluate", checkpoint, *files, "--beam-size", "1")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["beam_size"] == 1


def test_average_writes_the_mean_of_the_last_checkpoints(trained, capsys, tmp_path):
    out_dir = tmp_path / "avg"
    code, out, _ = run(capsys, "average", trained, "--last", "2", "--out", out_dir)
    assert code == 0 and "mean of 2 checkpoint(s)" in out
    steps = sorted((trained / "checkpoints").glob("step-*"))[-2:]
    states = [load_file(str(p / "model.safetensors")) for p in steps]
    averaged = load_file(str(out_dir / "model.safetensors"))
    for name, tensor in averaged.items():
        assert torch.allclose(tensor, (states[0][name] + states[1][name]) / 2, atol=1e-6), name
    assert run(capsys, "translate", out_dir, "ein hund", "--beam-size", "1")[0] == 0
    code, _, err = run(capsys, "average", tmp_path, "--out", tmp_path / "x")
    assert code == 2 and "neither a checkpoint folder" in err


@pytest.mark.parametrize("bpe_dropout", [0.0, 0.2])
def test_resume_continues_with_the_same_losses(tmp_path, bpe_dropout):
    def losses(run_dir: Path) -> list[float]:
        return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    config = write_config(tmp_path, steps=20)
    options = ["--set", "train.eval_interval=10", "--set", f"data.bpe_dropout={bpe_dropout}", "--quiet"]
    assert main(["train", str(config), "--out", str(tmp_path / "whole"), *options]) == 0
    half = [*options, "--out", str(tmp_path / "half")]
    assert main(["train", str(config), "--set", "train.max_steps=10", *half]) == 0
    assert main(["train", str(config), "--resume", *half]) == 0
    assert losses(tmp_path / "half") == pytest.approx(losses(tmp_path / "whole"), rel=1e-5)


def test_separate_vocabularies_with_unigram(tmp_path, capsys):
    config = write_config(tmp_path, steps=4, tokenizer="unigram", vocab=330, joint=False)
    run_dir = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run_dir), "--quiet", "--set", "data.max_length=31"]) == 0
    best = run_dir / "checkpoints" / "best"
    model = json.loads((best / "config.json").read_text())["model"]
    assert not model["share_embeddings"] and model["target_vocab_size"] is not None
    assert (best / "source_tokenizer.json").is_file() and (best / "tokenizer.json").is_file()
    code, out, _ = run(capsys, "translate", run_dir, "ein hund", "--beam-size", "1")
    assert code == 0 and len(out.splitlines()) == 1


@pytest.mark.skipif(not (Path(__file__).parent.parent / "nanoformer" / "generation" / "beam.py").is_file(),
                    reason="needs beam search")
def test_beam_search_translates_the_toy_task_like_greedy(trained, capsys):
    code, out, _ = run(capsys, "translate", trained, "ein mann geht", "katze läuft blau", "--beam-size", "4",
                       "--length-penalty", "0.6")
    assert code == 0 and out == "a man walks\ncat runs blue\n"


def test_rdrop_from_half_the_budget_changes_training_from_there_on(tmp_path):
    """Through the real trainer: with rdrop_from = 0.5 of 20 steps, the first 10 steps equal a run
    without R-Drop (same batches, same masks), and from step 11 on the loss carries the KL term."""
    def losses(run_dir: Path) -> dict[int, float]:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["train_loss"] for r in records}

    config = write_config(tmp_path, steps=20)
    options = ["--set", "train.log_interval=1", "--set", "train.eval_interval=100", "--set", "model.dropout=0.1", "--quiet"]
    assert main(["train", str(config), "--out", str(tmp_path / "plain"), *options]) == 0
    assert main(["train", str(config), "--out", str(tmp_path / "late"), *options,
                 "--set", "train.rdrop=1", "--set", "train.rdrop_from=0.5"]) == 0
    plain, late = losses(tmp_path / "plain"), losses(tmp_path / "late")
    assert [late[s] for s in range(1, 11)] == pytest.approx([plain[s] for s in range(1, 11)], rel=1e-6)
    assert late[11] != pytest.approx(plain[11], rel=1e-3)


def test_export_ct2_translates_as_the_checkpoint(trained, tmp_path, capsys):
    """The trained toy translator through `nanoformer export-ct2`: CTranslate2's greedy output is ours."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    import nanoformer

    out = tmp_path / "ct2"
    code, stdout, _ = run(capsys, "export-ct2", trained, out)
    assert code == 0 and (out / "model.bin").is_file()
    code, _, err = run(capsys, "export-ct2", trained, out)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert run(capsys, "export-ct2", trained, out, "--force", "--quantization", "int8")[0] == 0

    model, tokenizer = nanoformer.load(trained)
    exported = tmp_path / "ct2-fp32"
    assert run(capsys, "export-ct2", trained, exported)[0] == 0
    sentences = ["der hund läuft", "die katze ist klein", "ein großer hund"]
    ids = [tokenizer.encode(s) + [model.config.eos_id] for s in sentences]
    translator = ctranslate2.Translator(str(exported), device="cpu", intra_threads=1)
    vocab = [tokenizer.id_to_token(i) for i in range(model.config.vocab_size)]
    theirs = translator.translate_batch([[vocab[i] for i in row] for row in ids], beam_size=1, max_decoding_length=20)
    for row, result in zip(ids, theirs):
        mine = model.generate(torch.tensor([row]), max_new_tokens=20)[0, 1:].tolist()
        mine = mine[: mine.index(model.config.eos_id)] if model.config.eos_id in mine else mine
        assert result.hypotheses[0] == [vocab[i] for i in mine]
    assert len({tuple(r.hypotheses[0]) for r in theirs}) == len(sentences)  # three different translations
