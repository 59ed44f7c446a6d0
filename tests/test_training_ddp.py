"""DDP: two CPU processes (gloo) follow the same trajectory as one process with the same global batch.

The data is made so the comparison is exact up to float rounding: micro-batch i is a fixed
function of i; one process with grad_accum_steps=2 takes micro-batches 2k and 2k+1 at step k,
while rank r of two processes (no accumulation) takes micro-batch 2k+r. Dropout is off.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

from nanoformer.training import Trainer, TrainConfig, cleanup_distributed, load_model_state, read_trainer_state
from nanoformer.training import token_cross_entropy

VOCAB, DIM, SEQ, BATCH = 16, 16, 8, 4


class ToyConfig:
    def to_dict(self) -> dict:
        return {"vocab_size": VOCAB, "d_model": DIM}


class ToyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.hidden = nn.Linear(DIM, DIM)
        self.head = nn.Linear(DIM, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        return self.head(x + torch.relu(self.hidden(x)))


def lm_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return token_cross_entropy(model(batch["input_ids"]), batch["targets"])


class IndexedBatches:
    """Micro-batch i is a function of i alone; this source yields start, start + stride, ..."""

    def __init__(self, start: int = 0, stride: int = 1) -> None:
        self.index, self.stride = start, stride

    def _batch(self, i: int) -> dict:
        gen = torch.Generator().manual_seed(1000 + i)
        starts = torch.randint(VOCAB, (BATCH, 1), generator=gen)
        seq = (starts + torch.arange(SEQ + 1) * torch.randint(1, 3, (BATCH, 1), generator=gen)) % VOCAB
        return {"input_ids": seq[:, :-1], "targets": seq[:, 1:]}

    def next_batch(self, split: str) -> dict:
        batch = self._batch(self.index)
        self.index += self.stride
        return batch

    def eval_batches(self, split: str):
        return [self._batch(-1 - i) for i in range(2)]

    def state_dict(self) -> dict:
        return {"index": self.index}

    def load_state_dict(self, state: dict) -> None:
        self.index = state["index"]

    def tokens_per_batch(self, batch: dict) -> int:
        return batch["input_ids"].numel()


def train(run_dir: str, batches: IndexedBatches, grad_accum_steps: int) -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(max_steps=6, batch_size=BATCH, grad_accum_steps=grad_accum_steps, lr=3e-2, warmup_steps=2,
                      eval_interval=3, eval_batches=2, log_interval=1, device="cpu", seed=0)
    Trainer(ToyLM(), lm_loss, batches, cfg, ToyConfig(), run_dir, progress=False).fit()


def _worker(rank: int, world_size: int, port: int, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        train(run_dir, IndexedBatches(start=rank, stride=world_size), grad_accum_steps=1)
    finally:
        cleanup_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process_with_accumulation(tmp_path):
    train(str(tmp_path / "single"), IndexedBatches(), grad_accum_steps=2)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)

    single, ddp = metrics(tmp_path / "single"), metrics(tmp_path / "ddp")
    assert [m["step"] for m in ddp] == [m["step"] for m in single] == list(range(1, 7))
    for a, b in zip(single, ddp):
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-5
        assert abs(a.get("val_loss", 0.0) - b.get("val_loss", 0.0)) <= 1e-5
        assert a["tokens_seen"] == b["tokens_seen"]
    one, two = ToyLM(), ToyLM()
    load_model_state(tmp_path / "single" / "checkpoints" / "last", one)
    load_model_state(tmp_path / "ddp" / "checkpoints" / "last", two)
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
    # only rank 0 wrote, but the checkpoint holds each rank's sampling position for resume
    state = read_trainer_state(tmp_path / "ddp")
    assert state["world_size"] == 2 and [r["data"]["index"] for r in state["ranks"]] == [12, 13]
