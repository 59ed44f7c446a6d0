"""The BERT path end to end on toy Korean data: `train` a tiny masked-LM → `fill-mask`, `evaluate`,
`embed`; `finetune` from it → `classify`, `evaluate`; and the bad inputs that must end as one line
with exit code 2."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import nanoformer
from nanoformer.cli import main

SUBJECTS = ["나는", "그는", "우리는", "너는", "그녀는", "동생은", "친구는", "선생님은"]
PREDICATES = ["학교에 갔다.", "학교를 좋아한다.", "학교가 좋다.", "밥을 먹었다.", "밥이 맛있다."]

MLM_CONFIG = """
[model]
preset = "tiny-encoder"
d_model = 64
n_heads = 2
n_layers = 2
d_ff = 128
max_positions = 40
dropout = 0.0

[data]
kind = "mlm"
path = "corpus.txt"
vocab_size = 60        # small enough that 학교에 is 학교 + ##에
max_length = 32
val_fraction = 0.1

[train]
max_steps = 500
batch_size = 32
lr = 5e-3
warmup_steps = 10
eval_interval = 500
eval_batches = 2
log_interval = 50
device = "cpu"
"""

FINETUNE_CONFIG = """
[model]
init_from = "{init_from}"
dropout = 0.0

[data]
kind = "classification"
train = "train.tsv"
dev = "dev.tsv"
label_column = "topic"
max_length = 32

[train]
max_steps = 40
batch_size = 16
lr = 3e-3
warmup_steps = 5
eval_interval = 20
eval_batches = 2
device = "cpu"
best_metric = "accuracy"
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread, and the test machines are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(*args) -> int:
    return main([str(a) for a in args])


def one_line_error(capsys, code: int, *needles: str) -> None:
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bert")
    rng = random.Random(0)
    lines = [f"{rng.choice(SUBJECTS)} {rng.choice(PREDICATES)}" for _ in range(500)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "mlm.toml").write_text(MLM_CONFIG, encoding="utf-8")
    assert run_cli("train", folder / "mlm.toml", "--out", folder / "mlm", "--quiet") == 0
    return folder


@pytest.fixture(scope="module")
def classifier_run(mlm_run) -> Path:
    folder = mlm_run
    rng = random.Random(1)
    for name, n in (("train.tsv", 160), ("dev.tsv", 20)):
        rows = ["topic\tsentence"]
        for _ in range(n):
            predicate = rng.choice(PREDICATES)
            rows.append(f"{'school' if '학교' in predicate else 'food'}\t{rng.choice(SUBJECTS)} {predicate}")
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = folder / "finetune.toml"
    config.write_text(FINETUNE_CONFIG.format(init_from=folder / "mlm"), encoding="utf-8")
    assert run_cli("finetune", config, "--out", folder / "cls", "--quiet") == 0
    return folder


def test_fill_mask_predicts_the_hidden_words(mlm_run, capsys):
    capsys.readouterr()
    assert run_cli("fill-mask", mlm_run / "mlm", "나는 [MASK]에 갔다. 그는 [MASK]을 먹었다", "--top-k", "3", "--json") == 0
    masks = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["mask"] for m in masks] == [1, 2]
    assert [m["candidates"][0]["token"] for m in masks] == ["학교", "밥"]
    for m in masks:
        probabilities = [c["probability"] for c in m["candidates"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1
    assert masks[0]["candidates"][0]["sequence"].startswith("나는 학교에 갔다")
    assert run_cli("fill-mask", mlm_run / "mlm", "그는 [MASK]를 좋아한다") == 0
    assert capsys.readouterr().out.split()[0] == "학교"  # plain output: token, probability, sentence


def test_evaluate_reports_masked_token_accuracy_and_perplexity(mlm_run, capsys):
    capsys.readouterr()
    assert run_cli("evaluate", mlm_run / "mlm") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["masked_tokens"] > 0 and result["accuracy"] > 0.3
    assert result["perplexity"] == pytest.approx(np.exp(result["loss"]), rel=1e-3)
    assert run_cli("evaluate", mlm_run / "mlm", "--data", mlm_run / "corpus.txt", "--max-tokens", "100") == 0
    assert json.loads(capsys.readouterr().out.strip())["masked_tokens"] >= 100


def test_embed_writes_normalised_mean_pooled_vectors(mlm_run, capsys, tmp_path):
    sentences = tmp_path / "s.txt"
    sentences.write_text("나는 학교에 갔다.\n그는 밥을 먹었다.\n", encoding="utf-8")
    assert run_cli("embed", mlm_run / "mlm", "--input", sentences, "--output", tmp_path / "v.npy") == 0
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (2, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    capsys.readouterr()
    assert run_cli("embed", mlm_run / "mlm", "나는 학교에 갔다.", "--no-normalize") == 0
    record = json.loads(capsys.readouterr().out)
    model, tok = nanoformer.load(mlm_run / "mlm")
    ids = torch.tensor([[tok.cls_id, *tok.encode("나는 학교에 갔다."), tok.sep_id]])
    expected = model.encode(ids).mean(1)[0]
    assert np.allclose(record["embedding"], expected.detach().numpy(), atol=1e-5)
    assert np.allclose(vectors[0], torch.nn.functional.normalize(expected, dim=0).detach().numpy(), atol=1e-5)


def test_finetune_then_classify_and_evaluate(classifier_run, capsys):
    folder = classifier_run
    model, _ = nanoformer.load(folder / "cls")
    assert model.is_classifier and model.config.labels == ["food", "school"]
    report = json.loads((folder / "cls" / "eval.json").read_text(encoding="utf-8"))
    assert report["dev"]["accuracy"] >= 0.9
    # best_metric = "accuracy": each evaluation logs the dev accuracy, and `best` holds the highest.
    logged = [json.loads(line) for line in (folder / "cls" / "metrics.jsonl").read_text().splitlines()]
    accuracies = {m["step"]: m["val_accuracy"] for m in logged if "val_accuracy" in m}
    assert set(accuracies) == {20, 40} and all("val_macro_f1" in m for m in logged if "val_loss" in m)
    best_step = nanoformer.training.read_config(folder / "cls")["checkpoint"]["step"]
    assert accuracies[best_step] == max(accuracies.values()) == report["dev"]["accuracy"]
    capsys.readouterr()
    assert run_cli("classify", folder / "cls", "우리는 학교를 좋아한다.", "너는 밥이 맛있다.", "--json") == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in records] == ["school", "food"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in records)
    assert run_cli("classify", folder / "cls", "--input", folder / "dev.tsv") == 0
    assert len(capsys.readouterr().out.splitlines()) == 20
    assert run_cli("evaluate", folder / "cls", "--data", folder / "dev.tsv") == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] >= 0.9 and set(metrics["f1_per_label"]) == {"food", "school"}
    # a relative --data path not under the working folder is looked up in $NANOFORMER_DATA too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NANOFORMER_DATA", str(folder))
        mp.chdir(folder / "cls")
        assert run_cli("evaluate", folder / "cls", "--data", "dev.tsv") == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == metrics["accuracy"]


def test_pairs_from_scratch_through_train(tmp_path, capsys):
    """`train` with [data] kind = "classification" and no init_from: a fresh encoder and tokenizer."""
    rows = ["label,premise,hypothesis"] + [f"{int(a == b)},{a} 갔다,{b} 갔다" for a in ("학교에", "집에")
                                           for b in ("학교에", "집에")] * 8
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "pairs.toml").write_text("""
[model]
preset = "tiny-encoder"
d_model = 32
n_heads = 2
n_layers = 1
d_ff = 64
max_positions = 32
classifier_pooling = "mean"
[data]
kind = "classification"
train = "pairs.csv"
text_column = "premise"
text_pair_column = "hypothesis"
vocab_size = 40
max_length = 32
[train]
max_steps = 3
batch_size = 8
eval_interval = 3
device = "cpu"
""", encoding="utf-8")
    assert run_cli("train", tmp_path / "pairs.toml", "--out", tmp_path / "run", "--quiet") == 0
    capsys.readouterr()
    assert run_cli("classify", tmp_path / "run", "학교에 갔다", "--pair", "집에 갔다") == 0
    assert capsys.readouterr().out.split("\t")[0] in ("0", "1")


def test_bad_inputs_end_with_one_line_and_exit_code_2(classifier_run, capsys, tmp_path):
    folder = classifier_run
    mlm, cls = folder / "mlm", folder / "cls"
    capsys.readouterr()
    one_line_error(capsys, run_cli("fill-mask", mlm, "나는 학교에 갔다"), "no [MASK] in the text")
    one_line_error(capsys, run_cli("fill-mask", mlm, "나는 [MASK]에 " + "갔다 " * 60), "more than the model's 40 positions")
    one_line_error(capsys, run_cli("fill-mask", cls, "나는 [MASK]에 갔다"), "classifier")
    one_line_error(capsys, run_cli("classify", mlm, "나는 학교에 갔다"), "masked-LM model")
    one_line_error(capsys, run_cli("classify", cls, "나는 학교에 " * 30), "more than the model's 40 positions", "--truncate")
    assert run_cli("classify", cls, "나는 학교에 " * 30, "--truncate") == 0

    def finetune(train_rows, dev_rows=None, **changes):
        (tmp_path / "train.tsv").write_text("\n".join(["topic\tsentence", *train_rows]) + "\n", encoding="utf-8")
        (tmp_path / "dev.tsv").write_text("\n".join(["topic\tsentence", *(dev_rows or train_rows)]) + "\n",
                                          encoding="utf-8")
        config = FINETUNE_CONFIG.format(init_from=changes.pop("init_from", mlm))
        for key, value in changes.items():
            config = re.sub(rf"^{key} = .*$", f"{key} = {value}", config, flags=re.M)
        (tmp_path / "f.toml").write_text(config, encoding="utf-8")
        capsys.readouterr()
        return run_cli("finetune", tmp_path / "f.toml", "--out", tmp_path / "out", "--quiet")

    good = ["school\t나는 학교에 갔다", "food\t그는 밥을 먹었다"]
    one_line_error(capsys, finetune(good, good + ["sports\t공을 찼다"]),
                   "dev.tsv:4: label 'sports' is not one of the training labels ['food', 'school']")
    one_line_error(capsys, finetune(good + ["school\t학교에\t갔다"]), "train.tsv:4: 3 fields, expected 2")
    one_line_error(capsys, finetune(["yes\t나는 학교에 갔다", "no\t그는 밥을 먹었다"], init_from=cls),
                   "the checkpoint classifies into ['food', 'school']", "['no', 'yes']")
    one_line_error(capsys, finetune(good, max_length=64), "max_length = 64 exceeds the model's max_positions = 40")
    one_line_error(capsys, finetune(good, best_metric='"bleu"'),
                   "train.best_metric = 'bleu'", "val_loss, accuracy, macro_f1, f1")
    one_line_error(capsys, finetune(good, init_from=tmp_path / "missing"), "init_from", "no such folder")
    (tmp_path / "other.tsv").write_text("topic\tsentence\nsports\t공을 찼다\n", encoding="utf-8")
    one_line_error(capsys, run_cli("evaluate", cls, "--data", tmp_path / "other.tsv"),
                   "other.tsv:2: label 'sports' is not one of the checkpoint's classes")


def test_export_onnx_of_the_classifier_embeds_and_classifies_as_the_checkpoint(classifier_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    import nanoformer

    run_dir = classifier_run / "cls"
    out = tmp_path / "onnx"
    assert run_cli("export-onnx", run_dir, out) == 0
    assert {p.name for p in out.iterdir()} >= {"model.onnx", "tokenizer.json", "config.json"}
    one_line_error(capsys, run_cli("export-onnx", run_dir, out), "--force")
    model, tokenizer = nanoformer.load(run_dir)
    sentences = [f"{SUBJECTS[0]} {PREDICATES[0]}", f"{SUBJECTS[1]} {PREDICATES[-1]} {PREDICATES[1]}"]
    encoded = [tokenizer.encode(s) for s in sentences]
    width = max(map(len, encoded))
    ids = torch.tensor([e + [model.config.pad_id] * (width - len(e)) for e in encoded])
    mask = (torch.arange(width)[None] < torch.tensor([len(e) for e in encoded])[:, None]).long()
    inputs = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    if "token_type_ids" in {i.name for i in session.get_inputs()}:
        inputs["token_type_ids"] = torch.zeros_like(ids).numpy()
    logits, _, vectors = session.run(None, inputs)
    with torch.no_grad():
        assert abs(torch.from_numpy(logits) - model(ids, attention_mask=mask)).max() < 1e-4
        assert abs(torch.from_numpy(vectors) - model.embed(ids, mask)).max() < 1e-4
