"""GPT-style pre-training: next-token prediction on the user's text.

text files → tokenizer (trained on the training text, saved with the run) → token cache →
random windows of `block_size` tokens → DecoderModel → cross-entropy on the shifted targets.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from nanoformer.data.lm import LMData
from nanoformer.data.text import resolve_text_files
from nanoformer.errors import UserError
from nanoformer.models import DecoderModel
from nanoformer.recipes.budget import size_for_budget
from nanoformer.run_config import DataConfig, RunConfig
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.contracts import FitResult
from nanoformer.training.distributed import dist_info_from_env
from nanoformer.training.trainer import Trainer

Batch = dict[str, Tensor]


class LMBatches:
    """Adapts `LMData` to the trainer's batch-source contract."""

    def __init__(self, data: LMData, batch_size: int, block_size: int, n_eval_batches: int) -> None:
        self.data, self.batch_size, self.block_size, self.n_eval_batches = data, batch_size, block_size, n_eval_batches

    def next_batch(self, split: str) -> Batch:
        x, y = self.data.get_batch(split, self.batch_size, self.block_size)
        return {"input_ids": x, "labels": y}

    def eval_batches(self, split: str) -> list[Batch]:
        batches = self.data.eval_batches(split, self.n_eval_batches, self.batch_size, self.block_size)
        return [{"input_ids": x, "labels": y} for x, y in batches]

    def state_dict(self) -> dict:
        return self.data.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.data.load_state_dict(state)

    def tokens_per_batch(self, batch: Batch) -> int:
        return batch["input_ids"].numel()


def lm_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean next-token cross-entropy: position t predicts token t + 1."""
    return model(batch["input_ids"], targets=batch["labels"])


def data_files(data: DataConfig, base_dir: Path | None) -> list[Path]:
    return resolve_text_files(data.name if data.name else data.path, base_dir=base_dir)


def train_tokenizer(data: DataConfig, files: list[Path]) -> Tokenizer:
    if data.tokenizer == "char":
        return Tokenizer.train_char(files)
    if data.tokenizer == "bpe":
        return Tokenizer.train_bpe(files, vocab_size=data.vocab_size, progress=True)
    if data.tokenizer == "wordpiece":
        return Tokenizer.train_wordpiece(files, vocab_size=data.vocab_size, progress=True)
    raise UserError(f"[data] tokenizer = {data.tokenizer!r} is not available for language models; use 'char' or 'bpe'")


def train_lm(run: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
             pause_after_s: float | None = None) -> FitResult:
    run_dir = Path(run_dir)
    base_dir = run.source.parent if run.source else None
    files = data_files(run.data, base_dir)
    tokenizer_path = run_dir / "tokenizer.json"
    rank = dist_info_from_env().rank
    if resume and tokenizer_path.is_file():
        tokenizer = Tokenizer.load(tokenizer_path)
    else:
        tokenizer = train_tokenizer(run.data, files)
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            tokenizer.save(tokenizer_path)

    run = size_for_budget(run, run_dir, tokenizer.vocab_size, resume=resume)
    if run.model.max_positions < run.data.block_size:
        raise UserError(
            f"[data] block_size = {run.data.block_size} exceeds [model] max_positions = {run.model.max_positions}; "
            "raise max_positions or lower block_size"
        )
    specials = tokenizer.special_ids()
    model_config = run.model.replace(
        vocab_size=tokenizer.vocab_size,
        pad_id=specials.get("pad"),
        unk_id=specials.get("unk"),
        bos_id=specials.get("bos"),
        eos_id=specials.get("eos"),
    )
    cache_dir = Path(run.data.cache_dir) if run.data.cache_dir else run_dir / "data"
    data = LMData.from_files(files, tokenizer, cache_dir, val_fraction=run.data.val_fraction, seed=run.train.seed + rank)
    batches = LMBatches(data, run.train.batch_size, run.data.block_size, run.train.eval_batches)
    torch.manual_seed(run.train.seed)  # the same config gives the same initial weights
    model = DecoderModel(model_config)
    trainer = Trainer(
        model,
        lm_loss,
        batches,
        run.train,
        model_config,
        run_dir,
        tokenizer=tokenizer,
        # The resolved files too, so `evaluate` finds the text wherever it is run from.
        extra_config={"data": {**run.to_dict()["data"], "files": [str(f) for f in files]},
                      **({"size": run.extra["size"]} if "size" in run.extra else {})},
        resume=resume,
        progress=progress,
    )
    return trainer.fit(pause_after_s=pause_after_s)
