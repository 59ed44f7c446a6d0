"""DDP ≡ one process for the real families, with gradient accumulation on both sides.

Two gloo processes with grad_accum_steps = 2 (so DDP's `no_sync` path runs on the first micro-batch
of every step) against one process with grad_accum_steps = 4: the same global batch of four
micro-batches per step. Micro-batch i is a function of i alone, and so is its dropout: the loss
seeds torch's generator from i before the forward pass, so R-Drop's two dropout passes are the
same masks in either run. Also: a DDP run interrupted and resumed equals one that never stopped,
and a two-"node" run (torchrun --nnodes 2, c10d rendezvous on 127.0.0.1, one process each)
equals the one-process run, exercising the launch path a multi-machine user takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_training_ddp import _free_port

from nanoformer.config import ModelConfig
from nanoformer.data.batching import make_batch
from nanoformer.models import DecoderModel, Seq2SeqTransformer
from nanoformer.recipes.translation import TranslationLoss
from nanoformer.training import (
    TrainConfig,
    Trainer,
    cleanup_distributed,
    load_model_state,
)

VOCAB, PAD, BOS, EOS = 24, 0, 1, 2
MICRO_BATCH = 3
SINGLE_ACCUM, WORLD, DDP_ACCUM = 4, 2, 2
FAMILIES = ("gpt", "seq2seq", "rdrop")


def model_for(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "gpt":  # tied input and output embeddings: one parameter DDP reduces once
        return DecoderModel(ModelConfig(arch="decoder", vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, d_ff=64,
                                        max_positions=16, dropout=0.0, tie_embeddings=True))
    return Seq2SeqTransformer(ModelConfig(
        arch="encoder-decoder", vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, d_ff=64, max_positions=16,
        dropout=0.1 if family == "rdrop" else 0.0, share_embeddings=True, tie_embeddings=True, pad_id=PAD,
        bos_id=BOS, eos_id=EOS))


def micro_batch(family: str, index: int) -> dict:
    gen = torch.Generator().manual_seed(500 + index)
    seed = torch.tensor([index + 10_000])
    if family == "gpt":
        ids = torch.randint(3, VOCAB, (MICRO_BATCH, 13), generator=gen)
        ids[:, 1::2] = (ids[:, ::2][:, : ids[:, 1::2].shape[1]] * 3) % VOCAB  # something to learn
        return {"input_ids": ids[:, :-1], "labels": ids[:, 1:], "seed": seed}
    lengths = torch.randint(2, 9, (MICRO_BATCH,), generator=gen).tolist()  # padding in every batch
    src = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n in lengths]
    tgt = [[(t * 5) % (VOCAB - 3) + 3 for t in reversed(s)] for s in src]
    return {**make_batch(src, tgt, PAD, BOS, EOS), "seed": seed}


class IndexedMicroBatches:
    """Rank r of `world`, accumulating `accum` micro-batches a step, takes the global micro-batches
    step * world * accum + r * accum + j: every step covers the same global batch in any layout."""

    def __init__(self, family: str, rank: int = 0, world: int = 1, accum: int = SINGLE_ACCUM) -> None:
        self.family, self.rank, self.world, self.accum, self.calls = family, rank, world, accum, 0

    def next_batch(self, split: str) -> dict:
        step, j = divmod(self.calls, self.accum)
        self.calls += 1
        return micro_batch(self.family, step * self.world * self.accum + self.rank * self.accum + j)

    def eval_batches(self, split: str) -> list[dict]:
        return [micro_batch(self.family, -1 - i) for i in range(2)]

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]

    def tokens_per_batch(self, batch: dict) -> int:
        return int((batch["labels"] != -100).sum())


class SeededLoss:
    """The family's training loss, its dropout masks drawn from a generator seeded by the micro-batch."""

    def __init__(self, family: str) -> None:
        self.family = family
        self.translation = TranslationLoss(label_smoothing=0.1, rdrop=1.0 if family == "rdrop" else 0.0)

    def __call__(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        torch.manual_seed(int(batch["seed"]))
        batch = {name: value for name, value in batch.items() if name != "seed"}
        if self.family == "gpt":
            return model(batch["input_ids"], targets=batch["labels"])
        return self.translation(model, batch)


def train(family: str, run_dir: str, rank: int = 0, world: int = 1, accum: int = SINGLE_ACCUM, max_steps: int = 6,
          resume: bool = False) -> None:
    # A constant rate after the warm-up: stopping at step 3 and resuming to 6 keeps every step's rate.
    cfg = TrainConfig(max_steps=max_steps, batch_size=MICRO_BATCH, grad_accum_steps=accum, lr=3e-3, warmup_steps=2,
                      schedule="constant", eval_interval=3, eval_batches=2, log_interval=1, device="cpu", seed=0)
    batches = IndexedMicroBatches(family, rank, world, accum)
    model = model_for(family)
    Trainer(model, SeededLoss(family), batches, cfg, model.config, run_dir, progress=False, resume=resume).fit()


def _worker(rank: int, world: int, port: int, family: str, run_dir: str, max_steps: int, resume: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        train(family, run_dir, rank, world, DDP_ACCUM, max_steps=max_steps, resume=resume)
    finally:
        cleanup_distributed()


def ddp(family: str, run_dir: Path, max_steps: int = 6, resume: bool = False) -> None:
    mp.spawn(_worker, args=(WORLD, _free_port(), family, str(run_dir), max_steps, resume), nprocs=WORLD, join=True)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(single: Path, other: Path, family: str) -> None:
    a, b = metrics(single), metrics(other)
    assert [m["step"] for m in a] == [m["step"] for m in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=2e-5), x["step"]
        assert x.get("val_loss", 0.0) == pytest.approx(y.get("val_loss", 0.0), abs=2e-5), x["step"]
        assert x["tokens_seen"] == y["tokens_seen"]
    one, two = model_for(family), model_for(family)
    load_model_state(single / "checkpoints" / "last", one)
    load_model_state(other / "checkpoints" / "last", two)
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert torch.allclose(p, q, atol=2e-5), name


@pytest.mark.parametrize("family", FAMILIES)
def test_two_accumulating_processes_match_one(family, tmp_path):
    torch.set_num_threads(1)
    train(family, str(tmp_path / "single"))
    ddp(family, tmp_path / "ddp")
    assert_same_run(tmp_path / "single", tmp_path / "ddp", family)
    first = metrics(tmp_path / "single")
    assert first[-1]["train_loss"] < first[0]["train_loss"]  # it learns: the gradients are not zero
    if family == "rdrop":  # the KL term is there: without R-Drop the same run has another loss
        train("seq2seq", str(tmp_path / "plain"))
        assert metrics(tmp_path / "plain")[0]["train_loss"] != pytest.approx(first[0]["train_loss"], abs=1e-4)


def test_ddp_resume_after_an_interrupt_equals_the_run_that_never_stopped(tmp_path):
    torch.set_num_threads(1)
    ddp("seq2seq", tmp_path / "whole")
    ddp("seq2seq", tmp_path / "split", max_steps=3)
    ddp("seq2seq", tmp_path / "split", max_steps=6, resume=True)
    whole, split = metrics(tmp_path / "whole"), metrics(tmp_path / "split")
    assert [m["step"] for m in split] == list(range(1, 7))
    for x, y in zip(whole, split):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6), x["step"]


NODE_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads(1)
from test_ddp_families import DDP_ACCUM, train
from nanoformer.training import cleanup_distributed
import os
try:
    train("gpt", {run_dir!r}, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), DDP_ACCUM)
finally:
    cleanup_distributed()
"""


def test_two_nodes_through_torchrun_on_loopback(tmp_path):
    """`torchrun --nnodes 2` twice, as on two machines: a c10d rendezvous on 127.0.0.1, one process each."""
    torch.set_num_threads(1)
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT.format(tests=str(Path(__file__).parent), run_dir=str(tmp_path / "nodes")))
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "nf-test",
                               "--max-restarts", "0", str(script)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    train("gpt", str(tmp_path / "single"))
    assert_same_run(tmp_path / "single", tmp_path / "nodes", "gpt")
