"""The family-agnostic trainer: config, schedules, optimiser groups, checkpoints, resume.

Everything runs on a toy language model (embedding + dropout + one residual layer + tied head)
and a toy batch source that follows the trainer's contract, so the tests know nothing of the
real model families either.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from nanoformer.errors import UserError
from nanoformer.training import (
    TrainConfig,
    Trainer,
    average_checkpoints,
    load_model_state,
    lr_at,
    numbered_checkpoints,
    param_groups,
    parse_duration,
    read_config,
    read_trainer_state,
    resolve_checkpoint,
    save_checkpoint,
    token_cross_entropy,
)
from nanoformer.training.checkpoint import _decode, _encode
from nanoformer.training.schedules import constant, inverse_sqrt, noam, warmup_cosine

VOCAB, DIM, SEQ, BATCH = 16, 16, 8, 4


@dataclass
class ToyConfig:
    vocab_size: int = VOCAB
    d_model: int = DIM
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)


class ToyLM(nn.Module):
    def __init__(self, cfg: ToyConfig = ToyConfig()) -> None:
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.hidden = nn.Linear(cfg.d_model, cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.emb.weight  # tied, as in GPT-2

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.emb(ids))
        x = x + torch.relu(self.hidden(self.norm(x)))
        return self.head(self.drop(x))


def lm_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return token_cross_entropy(model(batch["input_ids"]), batch["targets"])


class ToyBatches:
    """Counting sequences (next token = token + 1) with noise drawn from numpy's and Python's
    global generators too, so that resume must restore every RNG to be exact."""

    def __init__(self, seed: int = 0) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.drawn = 0

    def _batch(self, gen: torch.Generator, noisy: bool) -> dict:
        starts = torch.randint(VOCAB, (BATCH, 1), generator=gen)
        seq = (starts + torch.arange(SEQ + 1)) % VOCAB
        if noisy:
            flip = torch.from_numpy(np.random.rand(BATCH, SEQ + 1) < 0.1)
            seq = torch.where(flip, torch.full_like(seq, random.randrange(VOCAB)), seq)
        return {"input_ids": seq[:, :-1], "targets": seq[:, 1:]}

    def next_batch(self, split: str) -> dict:
        self.drawn += 1
        return self._batch(self.gen, noisy=True)

    def eval_batches(self, split: str):
        gen = torch.Generator().manual_seed(999)
        for _ in range(3):
            yield self._batch(gen, noisy=False)

    def state_dict(self) -> dict:
        return {"generator": self.gen.get_state(), "drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["generator"])
        self.drawn = state["drawn"]

    def tokens_per_batch(self, batch: dict) -> int:
        return batch["input_ids"].numel()


def make_trainer(run_dir: Path, loss_fn=lm_loss, resume=False, eval_metrics=None, **overrides) -> Trainer:
    torch.manual_seed(0)
    cfg = dict(max_steps=12, batch_size=BATCH, lr=3e-2, min_lr=3e-3, warmup_steps=3, eval_interval=4,
               eval_batches=3, log_interval=1, device="cpu", seed=7)
    cfg.update(overrides)
    return Trainer(ToyLM(), loss_fn, ToyBatches(), TrainConfig(**cfg), ToyConfig(), run_dir,
                   extra_config={"data": {"name": "toy"}}, resume=resume, progress=False, eval_metrics=eval_metrics)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["train_loss"] for m in read_metrics(run_dir)}


def params_of(path: Path) -> dict[str, torch.Tensor]:
    model = ToyLM()
    load_model_state(path, model)
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- config


def test_config_round_trip_and_coercion():
    cfg = TrainConfig.from_dict({"betas": [0.9, 0.98], "lr": 1, "max_time": "1h30m"})
    assert cfg.betas == (0.9, 0.98) and isinstance(cfg.lr, float)
    assert cfg.max_time_s == 5400
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_config_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(UserError, match=r"unknown key 'learning_rate'.*valid keys are: .*\blr\b"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


def test_config_wrong_type_names_key_expected_and_given():
    with pytest.raises(UserError, match=r"'lr': expected a number, got str '3e-4'"):
        TrainConfig.from_dict({"lr": "3e-4"})
    with pytest.raises(UserError, match=r"'compile': expected a bool, got int"):
        TrainConfig.from_dict({"compile": 1})
    with pytest.raises(UserError, match=r"'schedule'.*must be one of"):
        TrainConfig(schedule="linear")


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h30m", 5400), ("0.5s", 0.5), ("2h", 7200)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["90", "10 minutes", "", "0s", "1m1h"])
def test_parse_duration_rejects_unclear_text(text):
    with pytest.raises(UserError, match="max_time"):
        TrainConfig(max_time=text)


# ---------------------------------------------------------------------------- schedules


def test_warmup_cosine_key_steps():
    f = lambda s: warmup_cosine(s, lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)  # noqa: E731
    assert f(0) == 0 and f(5) == 0.5 and f(10) == 1.0
    assert f(60) == pytest.approx(0.55)  # half way down the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_noam_matches_the_paper():
    f = lambda s: noam(s, lr=1.0, warmup_steps=4000, d_model=512)  # noqa: E731
    assert f(4000) == pytest.approx(512**-0.5 * 4000**-0.5)  # the peak, ~7e-4
    assert f(4000) == pytest.approx(6.988e-4, rel=1e-3)
    assert f(2000) == pytest.approx(f(4000) / 2)  # linear warm-up
    assert f(16000) == pytest.approx(f(4000) / 2)  # 1/sqrt(step) decay
    assert max(f(s) for s in range(1, 10000, 7)) <= f(4000)
    assert noam(4000, lr=2.0, warmup_steps=4000, d_model=512) == pytest.approx(2 * f(4000))


def test_inverse_sqrt_and_constant():
    assert inverse_sqrt(50, 1.0, 100) == 0.5 and inverse_sqrt(100, 1.0, 100) == 1.0
    assert inverse_sqrt(400, 1.0, 100) == pytest.approx(0.5)
    assert constant(5, 2.0, 10) == 1.0 and constant(10, 2.0, 10) == constant(10**6, 2.0, 10) == 2.0


def test_noam_without_d_model_is_a_user_error():
    with pytest.raises(UserError, match="d_model"):
        lr_at(1, TrainConfig(schedule="noam", warmup_steps=10))


# ---------------------------------------------------------------------------- optimiser groups


def test_weight_decay_only_on_matrices_tied_weight_once():
    model = ToyLM()
    decay, no_decay = param_groups(model, 0.1)
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decay) == {id(model.emb.weight), id(model.hidden.weight)}  # head.weight is emb.weight
    assert ids(no_decay) == {id(model.hidden.bias), id(model.norm.weight), id(model.norm.bias)}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decay, no_decay = param_groups(model, 0.1, decay_embeddings=False)
    assert ids(decay) == {id(model.hidden.weight)} and id(model.emb.weight) in ids(no_decay)


def test_layer_lr_decay_scales_each_depth_and_set_lr_applies_it():
    """Layer i of L at decay^(L - i), embeddings at decay^(L + 1), heads at 1; every parameter once."""
    from nanoformer.config import ModelConfig
    from nanoformer.models import EncoderModel
    from nanoformer.training.schedules import set_lr

    config = ModelConfig.from_preset("bert-mini", vocab_size=1000, max_positions=32, num_labels=2, labels=["a", "b"])
    model = EncoderModel(config)
    groups = param_groups(model, 0.1, layer_lr_decay=0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert len(scale_of) == sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert scale_of[id(model.classifier.out.weight)] == 1.0
    for i, layer in enumerate(model.encoder.layers):  # 4 layers
        assert {scale_of[id(p)] for p in layer.parameters()} == {0.5 ** (4 - i)}
    assert {scale_of[id(p)] for p in model.embeddings.parameters()} == {0.5**5}
    assert all(g["weight_decay"] == (0.1 if g["name"].startswith("decay") else 0.0) for g in groups)
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    set_lr(optimizer, 2e-4)
    assert {g["lr"] for g in optimizer.param_groups} == {2e-4 * 0.5**k for k in range(6)}
    assert TrainConfig(layer_lr_decay=0.8).layer_lr_decay == 0.8
    with pytest.raises(UserError, match="layer_lr_decay"):
        TrainConfig(layer_lr_decay=0.0)


# ---------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_keeps_tied_weights(tmp_path):
    model = ToyLM()
    save_checkpoint(tmp_path / "ck", model, {"model": ToyConfig().to_dict()})
    with safe_open(str(tmp_path / "ck" / "model.safetensors"), "pt") as f:
        assert len([k for k in f.keys() if k in ("emb.weight", "head.weight")]) == 1  # stored once
    fresh = ToyLM()
    load_model_state(tmp_path / "ck", fresh)
    assert fresh.head.weight is fresh.emb.weight  # still tied after loading
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    assert read_config(tmp_path / "ck") == {"model": ToyConfig().to_dict()}


def test_shape_mismatch_names_tensor_and_both_shapes(tmp_path):
    save_checkpoint(tmp_path / "ck", ToyLM(ToyConfig(d_model=8)), {})
    with pytest.raises(UserError, match=r"'emb.weight' has shape \(16, 8\) but the model expects \(16, 16\)"):
        load_model_state(tmp_path / "ck", ToyLM())


def test_missing_tensors_and_missing_checkpoint_are_user_errors(tmp_path):
    save_checkpoint(tmp_path / "ck", nn.Linear(2, 2), {})
    with pytest.raises(UserError, match="lacks tensors the model has"):
        load_model_state(tmp_path / "ck", nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(UserError, match="does not exist"):
        load_model_state(tmp_path / "nope", ToyLM())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a checkpoint folder"):
        resolve_checkpoint(tmp_path / "empty")
    with pytest.raises(UserError, match="no trainer state"):
        read_trainer_state(tmp_path / "ck")


def test_trainer_state_round_trip_without_pickle(tmp_path):
    state = {
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 2)}},
                      "param_groups": [{"betas": (0.9, 0.95), "params": [0], "lr": 1e-3}]},
        "ints": [np.int64(4), 5], "none": None, "shared": [torch.arange(4)] * 2,
    }
    tree, tensors = _encode(state)
    json.dumps(tree)
    back = _decode(json.loads(json.dumps(tree)), tensors)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], torch.ones(2, 2))
    assert back["ints"] == [4, 5] and torch.equal(back["shared"][1], torch.arange(4))
    with pytest.raises(TypeError, match="without pickle"):
        _encode({"bad": object()})


def test_failed_write_leaves_old_checkpoint_intact(tmp_path):
    class BrokenTokenizer:
        def save(self, folder: str) -> None:
            raise OSError("disk full")

    old = ToyLM()
    save_checkpoint(tmp_path / "last", old, {"v": 1})
    with pytest.raises(UserError, match="disk full.*is still the previous checkpoint"):
        save_checkpoint(tmp_path / "last", ToyLM(ToyConfig(d_model=8)), {"v": 2}, tokenizer=BrokenTokenizer())
    assert read_config(tmp_path / "last") == {"v": 1}
    assert torch.equal(params_of(tmp_path / "last")["emb.weight"], old.emb.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temp folder left behind


def test_crash_between_renames_recovers_old_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "last", ToyLM(), {"v": 1})
    real_rename, calls = os.rename, []

    def crashing_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # after moving the old checkpoint aside, before moving the new one in
            raise SystemExit("power cut")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crashing_rename)
    with pytest.raises(SystemExit):
        save_checkpoint(tmp_path / "last", ToyLM(), {"v": 2})
    monkeypatch.setattr(os, "rename", real_rename)
    assert not (tmp_path / "last").exists()
    assert read_config(tmp_path / "last") == {"v": 1}  # readers restore the old checkpoint
    save_checkpoint(tmp_path / "last", ToyLM(), {"v": 3})  # and writers carry on
    assert read_config(tmp_path / "last") == {"v": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_average_checkpoints(tmp_path):
    a, b = ToyLM(), ToyLM()
    save_checkpoint(tmp_path / "a", a, {"model": {"d": 1}})
    save_checkpoint(tmp_path / "b", b, {"model": {"d": 1}})
    average_checkpoints([tmp_path / "a", tmp_path / "b"], tmp_path / "avg")
    avg = params_of(tmp_path / "avg")
    assert torch.allclose(avg["hidden.weight"], (a.hidden.weight + b.hidden.weight) / 2)
    assert read_config(tmp_path / "avg")["averaged_from"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    save_checkpoint(tmp_path / "c", ToyLM(), {"model": {"d": 2}})
    with pytest.raises(UserError, match="different model config"):
        average_checkpoints([tmp_path / "a", tmp_path / "c"], tmp_path / "bad")


# ---------------------------------------------------------------------------- the trainer


def test_fit_writes_run_folder_metrics_and_checkpoints(tmp_path, monkeypatch):
    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.save/torch.load must not be used")

    monkeypatch.setattr(torch, "save", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    result = make_trainer(tmp_path, keep_last=2).fit()
    assert result.stopped_by == "max_steps" and result.step == 12 and not result.interrupted
    assert result.tokens_seen == 12 * BATCH * SEQ

    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == list(range(1, 13))
    for m in metrics:
        assert {"step", "train_loss", "lr", "tokens_per_s", "elapsed_s", "tokens_seen"} <= m.keys()
    assert [m["step"] for m in metrics if "val_loss" in m] == [4, 8, 12]
    assert metrics[0]["lr"] == pytest.approx(1e-2) and metrics[-1]["lr"] == pytest.approx(3e-3)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]

    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last", "step-000008", "step-000012"]
    assert numbered_checkpoints(tmp_path) == [ckpts / "step-000008", ckpts / "step-000012"]
    assert sorted(p.name for p in (ckpts / "last").iterdir()) == [
        "checksums.json", "config.json", "model.safetensors", "trainer_state.json", "trainer_state.safetensors"]
    assert sorted(p.name for p in (ckpts / "best").iterdir()) == ["checksums.json", "config.json", "model.safetensors"]
    config = read_config(ckpts / "last")
    assert config["model"] == ToyConfig().to_dict() and config["data"] == {"name": "toy"}
    assert TrainConfig.from_dict(config["train"]).max_steps == 12
    # no pickle anywhere: every file is JSON or safetensors
    for path in ckpts.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.is_file():
            assert path.suffix == ".safetensors"
            with safe_open(str(path), "pt") as f:
                list(f.keys())
    state = read_trainer_state(tmp_path)
    assert state["step"] == state["schedule_step"] == 12 and state["tokens_seen"] == result.tokens_seen
    assert state["optimizer"]["param_groups"][0]["name"] == "decay"


def best_at_evaluation(k: int):
    """A loss whose k-th evaluation (1-based, 3 batches each) scores best, whatever the model does."""
    evals = {"batches": 0}

    def loss_fn(model, batch):
        loss = lm_loss(model, batch)
        if not model.training:
            evals["batches"] += 1
            loss = loss + (0.0 if 3 * k - 2 <= evals["batches"] <= 3 * k else 10.0)
        return loss

    return loss_fn


def test_best_checkpoint_tracks_lowest_val_loss(tmp_path):
    make_trainer(tmp_path, loss_fn=best_at_evaluation(3), max_steps=10, eval_interval=2, keep_last=100).fit()
    vals = {m["step"]: m["val_loss"] for m in read_metrics(tmp_path) if "val_loss" in m}
    assert list(vals) == [2, 4, 6, 8, 10] and min(vals, key=vals.get) == 6
    assert resolve_checkpoint(tmp_path) == tmp_path / "checkpoints" / "best"  # a run folder means its best
    best = read_config(tmp_path)["checkpoint"]
    assert best["step"] == 6 and best["val_loss"] == vals[6]
    at_6, in_best = params_of(tmp_path / "checkpoints" / "step-000006"), params_of(tmp_path)
    assert all(torch.equal(at_6[k], in_best[k]) for k in at_6)
    assert read_trainer_state(tmp_path)["best_val_loss"] == vals[6]  # a run folder resumes from last


def scripted_metrics(accuracies: list[float]):
    """eval_metrics giving the listed accuracies at successive evaluations; the model is in eval mode."""
    calls = iter(accuracies)

    def metrics(model):
        assert not model.training
        return {"accuracy": next(calls), "label": "not a number, not logged"}

    return metrics


def test_best_metric_picks_best_by_a_validation_metric_and_survives_resume(tmp_path):
    """best_metric = "accuracy" keeps the evaluation with the highest accuracy, not the lowest loss
    (here the loss is lowest at step 6, the accuracy highest at step 4); resume keeps that rank."""
    accuracies = [0.5, 0.9, 0.6, 0.7, 0.8]  # steps 2, 4, 6, 8, 10
    make_trainer(tmp_path, loss_fn=best_at_evaluation(3), max_steps=6, eval_interval=2, keep_last=100,
                 best_metric="accuracy", eval_metrics=scripted_metrics(accuracies[:3])).fit()
    make_trainer(tmp_path, loss_fn=best_at_evaluation(1), max_steps=10, eval_interval=2, keep_last=100,
                 best_metric="accuracy", eval_metrics=scripted_metrics(accuracies[3:]), resume=True).fit()
    records = [m for m in read_metrics(tmp_path) if "val_loss" in m]
    assert [m["val_accuracy"] for m in records] == accuracies
    assert all("val_label" not in m for m in records)
    assert read_config(tmp_path)["checkpoint"]["step"] == 4
    at_4, in_best = params_of(tmp_path / "checkpoints" / "step-000004"), params_of(tmp_path)
    assert all(torch.equal(at_4[k], in_best[k]) for k in at_4)


def test_resume_with_another_best_metric_starts_a_new_best(tmp_path, capsys):
    """An accuracy and a loss do not compare (an accuracy of 0.9 would outrank every -val_loss for
    ever): after the switch, the next evaluation becomes best."""
    make_trainer(tmp_path, max_steps=4, eval_interval=2, keep_last=100, best_metric="accuracy",
                 eval_metrics=scripted_metrics([0.9, 0.2])).fit()
    assert read_config(tmp_path)["checkpoint"]["step"] == 2  # highest accuracy
    make_trainer(tmp_path, loss_fn=best_at_evaluation(2), max_steps=8, eval_interval=2, keep_last=100,
                 resume=True).fit()
    assert "chosen by accuracy; from now on by val_loss" in capsys.readouterr().err
    assert read_config(tmp_path)["checkpoint"]["step"] == 8  # the lower of the two losses after the switch
    assert read_trainer_state(tmp_path)["best_metric"] == "val_loss"


def test_best_metric_needs_a_recipe_that_computes_it(tmp_path):
    with pytest.raises(UserError, match="computes no validation metrics"):
        make_trainer(tmp_path, best_metric="accuracy")
    trainer = make_trainer(tmp_path / "b", best_metric="f1", max_steps=2, eval_interval=2,
                           eval_metrics=lambda model: {"accuracy": 1.0})
    with pytest.raises(UserError, match="choose one of: val_loss, accuracy"):
        trainer.fit()


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    make_trainer(tmp_path, max_steps=2).fit()
    with pytest.raises(UserError, match="resume=True"):
        make_trainer(tmp_path, max_steps=2)
    with pytest.raises(UserError, match="nothing to resume"):
        make_trainer(tmp_path / "other", resume=True)


def test_max_time_stops_and_saves(tmp_path):
    result = make_trainer(tmp_path, max_steps=10**6, max_time="0.5s", eval_interval=10**5).fit()
    assert result.stopped_by == "max_time" and 0 < result.step < 10**6
    state = read_trainer_state(tmp_path)
    assert state["step"] == result.step and state["elapsed_s"] >= 0.5
    assert "val_loss" in read_metrics(tmp_path)[-1]  # a final evaluation at the stop


def interrupting_loss(at_call: int, how: str):
    calls = {"n": 0}

    def loss_fn(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == at_call:
                if how == "signal":
                    signal.raise_signal(signal.SIGINT)  # a real Ctrl-C
                elif how == "sigterm":
                    signal.raise_signal(signal.SIGTERM)  # kill, timeout, a cluster's pre-emption
                else:
                    raise KeyboardInterrupt  # an interrupt in the middle of a step
        return lm_loss(model, batch)

    return loss_fn


@pytest.mark.parametrize("how", ["signal", "sigterm", "exception"])
def test_interrupt_then_resume_equals_uninterrupted_run(tmp_path, how, capsys):
    # dropout is on and the data draws from torch, numpy and Python RNGs; grad accumulation 2
    kw = dict(grad_accum_steps=2, checkpoint_interval=3)
    reference = make_trainer(tmp_path / "ref", **kw).fit()

    first = make_trainer(tmp_path / "run", loss_fn=interrupting_loss(at_call=11, how=how), **kw).fit()
    assert first.interrupted and first.checkpoint == tmp_path / "run" / "checkpoints" / "last"
    assert first.step == (5 if how == "exception" else 6)  # a signal lets its step finish; an exception drops it
    assert "resumable checkpoint saved to" in capsys.readouterr().err
    assert read_trainer_state(tmp_path / "run")["step"] == first.step

    # a fresh process would build everything anew: model init and RNGs must not matter
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    second = make_trainer(tmp_path / "run", resume=True, **kw).fit()
    assert second.stopped_by == "max_steps" and second.tokens_seen == reference.tokens_seen

    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "ref")  # exactly equal
    ref, run = params_of(tmp_path / "ref" / "checkpoints" / "last"), params_of(tmp_path / "run" / "checkpoints" / "last")
    assert all(torch.equal(ref[k], run[k]) for k in ref)
    ref_m, run_m = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert [m.get("val_loss") for m in ref_m] == [m.get("val_loss") for m in run_m]
    assert math.isclose(second.best_val_loss, reference.best_val_loss, rel_tol=0, abs_tol=0)


def test_bf16_autocast_on_cpu_and_fp16_refused(tmp_path):
    result = make_trainer(tmp_path / "bf16", max_steps=2, dtype="bf16").fit()
    assert math.isfinite(read_metrics(tmp_path / "bf16")[-1]["train_loss"]) and result.step == 2
    with pytest.raises(UserError, match="'fp16' needs a CUDA GPU"):
        make_trainer(tmp_path / "fp16", dtype="fp16")


def test_resume_from_a_run_folder_path(tmp_path):
    make_trainer(tmp_path / "run", loss_fn=best_at_evaluation(1), max_steps=4, eval_interval=2).fit()
    assert read_config(tmp_path / "run")["checkpoint"]["step"] == 2  # best differs from last
    trainer = make_trainer(tmp_path / "elsewhere", resume=tmp_path / "run", max_steps=6, eval_interval=2)
    assert trainer.step == 4
    last = params_of(tmp_path / "run" / "checkpoints" / "last")
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in last.items())


def test_cosine_follows_the_time_budget_when_it_ends_first():
    from nanoformer.training.schedules import warmup_cosine

    # Step budget barely used, but 100% of the time spent: the decay must be complete.
    assert warmup_cosine(200, 1e-3, 1e-5, 100, 10_000, time_fraction=1.0) == pytest.approx(1e-5)
    # Half the time spent: halfway down the cosine, whatever the step says.
    assert warmup_cosine(200, 1e-3, 1e-5, 100, 10_000, time_fraction=0.5) == pytest.approx((1e-3 + 1e-5) / 2)
    # The step budget still wins when it is further along.
    assert warmup_cosine(10_000, 1e-3, 1e-5, 100, 10_000, time_fraction=0.1) == pytest.approx(1e-5)
    # Warm-up is step-based.
    assert warmup_cosine(50, 1e-3, 1e-5, 100, 10_000, time_fraction=0.9) == pytest.approx(5e-4)


def test_cooldown_anneals_the_last_fraction_of_the_budget_to_zero():
    cfg = TrainConfig(schedule="noam", lr=1.0, warmup_steps=10, max_steps=1000, cooldown=0.2)
    plain = TrainConfig(schedule="noam", lr=1.0, warmup_steps=10, max_steps=1000)
    for step in (1, 10, 500, 800):  # untouched before the last 20%
        assert lr_at(step, cfg, 64) == lr_at(step, plain, 64)
    assert lr_at(900, cfg, 64) == pytest.approx(0.5 * lr_at(900, plain, 64))  # half way down
    assert lr_at(1000, cfg, 64) == 0.0
    # With a time budget that runs out first, the time decides.
    assert lr_at(100, cfg, 64, time_fraction=0.9) == pytest.approx(0.5 * lr_at(100, plain, 64))
    assert lr_at(100, cfg, 64, time_fraction=0.5) == lr_at(100, plain, 64)
    with pytest.raises(UserError, match="cooldown"):
        TrainConfig(cooldown=1.0)


def test_pause_stops_like_the_end_without_changing_the_schedule(tmp_path):
    # A run paused at a time mark and resumed follows the schedule of its whole budget: the
    # cooldown of a 1-hour budget has not begun at the pause.
    kw = dict(max_steps=10**6, max_time="1h", eval_interval=10**5, schedule="constant", warmup_steps=0,
              cooldown=0.5)
    result = make_trainer(tmp_path, **kw).fit(pause_after_s=0.3)
    assert result.stopped_by == "pause" and 0 < result.step < 10**6
    state = read_trainer_state(tmp_path)
    assert state["step"] == result.step and state["elapsed_s"] >= 0.3
    last = read_metrics(tmp_path)[-1]
    assert "val_loss" in last and last["lr"] == 3e-2  # evaluated; the cooldown (after 30 min) has not begun
    again = make_trainer(tmp_path, resume=True, **kw).fit(pause_after_s=0.6)
    assert again.stopped_by == "pause" and again.step > result.step
    assert make_trainer(tmp_path, resume=True, **kw).fit(pause_after_s=0.1).step == again.step  # already past


class ProgressRecordingLoss:
    """lm_loss, recording what the trainer reports through set_progress before each step."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def set_progress(self, fraction: float) -> None:
        self.seen.append(fraction)

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return lm_loss(model, batch)


def test_trainer_reports_budget_progress_to_a_loss_that_asks(tmp_path):
    loss = ProgressRecordingLoss()
    make_trainer(tmp_path / "steps", loss_fn=loss, max_steps=8, eval_interval=4).fit()
    assert loss.seen == [done / 8 for done in range(8)]  # before update k of 8, (k - 1)/8 of the steps are used
    timed = ProgressRecordingLoss()
    make_trainer(tmp_path / "time", loss_fn=timed, max_steps=10**6, max_time="0.5s", eval_interval=10**5).fit()
    assert timed.seen == sorted(timed.seen) and timed.seen[0] == 0
    assert 0.5 < timed.seen[-1] < 1  # the time budget, not the step budget, sets the fraction
    with pytest.raises(UserError, match="rdrop_from"):
        TrainConfig(rdrop_from=1.0)
