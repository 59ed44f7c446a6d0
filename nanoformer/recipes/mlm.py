"""BERT-style pre-training: masked-language modelling on the user's text.

text files → WordPiece tokenizer with [PAD] [UNK] [MASK] [CLS] [SEP] (trained on the training
text, saved with the run) → packed sequences (cached) → dynamically masked batches →
EncoderModel → cross-entropy on the masked positions only (the MLM head runs on those alone).

`[model] init_from = CKPT` (through `nanoformer finetune`, or `train` once the run config knows
it) continues pre-training from a checkpoint, with its tokenizer.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
from torch import Tensor, nn

from nanoformer.data.masking import Masker
from nanoformer.data.mlm import MLMBatches, MLMDataConfig, build_sequences, label_first_files, sequences_from_config
from nanoformer.data.units import corpus_texts
from nanoformer.errors import UserError
from nanoformer.layers.losses import IGNORE_INDEX
from nanoformer.models import EncoderModel
from nanoformer.recipes.budget import size_for_budget
from nanoformer.run_config import RunConfig
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.checkpoint import load_model_state
from nanoformer.training.contracts import FitResult
from nanoformer.training.distributed import dist_info_from_env
from nanoformer.training.trainer import Trainer

Batch = dict[str, Tensor]


def mlm_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Mean cross-entropy over the masked positions; logits are computed for those alone."""
    labels = batch["labels"]
    selected = labels != IGNORE_INDEX
    logits = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), masked_positions=selected)
    return torch.nn.functional.cross_entropy(logits.float(), labels[selected])


def train_tokenizer(data: MLMDataConfig, files: list[Path], progress: bool = True,
                    label_first: Collection[Path] = ()) -> Tokenizer:
    return tokenizer_from_texts(corpus_texts(files, data.text_column, label_first), data.tokenizer, data.vocab_size,
                                lowercase=data.lowercase, strip_accents=data.strip_accents, progress=progress)


def tokenizer_from_texts(texts, kind: str, vocab_size: int, *, lowercase: bool = True,
                         strip_accents: bool | None = None, progress: bool = False) -> Tokenizer:
    """An encoder's tokenizer: WordPiece with BERT's [PAD] [UNK] [MASK] [CLS] [SEP], or bpe / char / unigram."""
    if kind == "wordpiece":
        return Tokenizer.train_wordpiece(texts=texts, vocab_size=vocab_size, lowercase=lowercase,
                                         strip_accents=strip_accents, bert_specials=True, progress=progress)
    if kind == "bpe":
        return Tokenizer.train_bpe(texts=texts, vocab_size=vocab_size, progress=progress)
    if kind == "char":
        return Tokenizer.train_char(texts=texts)
    trainer = getattr(Tokenizer, "train_unigram", None)
    if kind != "unigram" or trainer is None:
        raise UserError(f"[data] tokenizer = {kind!r} is not available for encoders; use 'wordpiece'")
    return trainer(texts=texts, vocab_size=vocab_size, progress=progress)


def encoder_config(model_config, tokenizer: Tokenizer):
    """The model config with the tokenizer's vocabulary size and special ids."""
    specials = tokenizer.special_ids()
    return model_config.replace(
        vocab_size=tokenizer.vocab_size, pad_id=specials.get("pad"), unk_id=specials.get("unk"),
        bos_id=specials.get("bos"), eos_id=specials.get("eos"), mask_id=specials.get("mask"),
        cls_id=specials.get("cls"), sep_id=specials.get("sep"),
    )


def train_mlm(run: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
              pause_after_s: float | None = None) -> FitResult:
    run_dir = Path(run_dir)
    base_dir = run.source.parent if run.source else None
    files = sequences_from_config(run.data, base_dir)
    labelled = label_first_files(run.data, base_dir)
    init_from = run.extra.get("init_from")
    rank = dist_info_from_env().rank
    tokenizer_path = run_dir / "tokenizer.json"
    if init_from:
        tokenizer = Tokenizer.load(init_from)
    elif resume and tokenizer_path.is_file():
        tokenizer = Tokenizer.load(tokenizer_path)
    else:
        tokenizer = train_tokenizer(run.data, files, progress=progress and rank == 0, label_first=labelled)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(tokenizer_path)
    for role in ("mask", "cls", "sep", "pad"):
        if role not in tokenizer.special_ids():
            raise UserError(f"the tokenizer has no {role} token; masked-LM training needs [MASK] [CLS] [SEP] [PAD]")

    run = size_for_budget(run, run_dir, tokenizer.vocab_size, resume=resume)  # sets max_length too
    data: MLMDataConfig = run.data

    model_config = encoder_config(run.model, tokenizer)
    if model_config.num_labels:
        raise UserError("[model] num_labels is for classifiers; masked-LM pre-training needs num_labels = 0")
    if data.max_length > model_config.max_positions:
        raise UserError(f"[data] max_length = {data.max_length} exceeds [model] max_positions = "
                        f"{model_config.max_positions}; raise max_positions or lower max_length")
    if data.pairs and model_config.type_vocab_size < 2:
        raise UserError(f"[data] pairs = true needs [model] type_vocab_size >= 2 (segments A and B), got "
                        f"{model_config.type_vocab_size}; set type_vocab_size = 2 or pairs = false")

    cache_dir = Path(data.cache_dir) if data.cache_dir else run_dir / "data"
    splits = build_sequences(files, tokenizer, data, cache_dir, seed=run.train.seed, label_first=labelled)
    masker = Masker(tokenizer, data.mask_prob, data.mask_token_prob, data.random_token_prob, data.whole_word_mask)
    batches = MLMBatches(splits, tokenizer, masker, run.train.batch_size, run.train.eval_batches,
                         seed=run.train.seed + rank, token_types=model_config.type_vocab_size > 0)
    torch.manual_seed(run.train.seed)  # the same config gives the same initial weights
    model = EncoderModel(model_config)
    if init_from and not resume:
        load_model_state(init_from, model)
    extra = {"data": {**run.to_dict()["data"], "files": [str(f) for f in files],
                      "label_first_files": [str(f) for f in labelled]}}
    if init_from:
        extra["init_from"] = str(init_from)
    if "size" in run.extra:
        extra["size"] = run.extra["size"]
    trainer = Trainer(model, mlm_loss, batches, run.train, model_config, run_dir, tokenizer=tokenizer,
                      extra_config=extra, resume=resume, progress=progress)
    return trainer.fit(pause_after_s=pause_after_s)
