"""Fine-tuning an encoder as a sentence (or sentence-pair) classifier.

Two ways to start:
- from a pre-trained checkpoint, `[model] init_from = "runs/bert_mlm_en"` (a run folder or a
  checkpoint folder, e.g. one written by `nanoformer import-hf`): the architecture and the
  tokenizer are the checkpoint's; [model] may only change what leaves the weights alone
  (dropouts, `classifier_pooling`, `attention_impl`). Every weight but the masked-LM head is
  loaded; the classification head starts fresh. If the checkpoint is already a classifier its
  head is kept, which needs the same classes;
- from scratch: [model] describes the encoder (e.g. `preset = "bert-mini"`) and a WordPiece
  tokenizer is trained on the training texts (the "no pre-training" baseline).

The classes come from the data (see `nanoformer.data.classification`) and are stored in the
model config (`num_labels`, `labels`), so a checkpoint names its own classes. After training,
the best checkpoint (by `train.best_metric`: dev loss, or dev accuracy/F1) is evaluated on the dev and test files: accuracy
and F1, printed and written to RUN_DIR/eval.json.

The loss is cross-entropy over the classes, with `train.label_smoothing` and, for small labelled
sets, `train.rdrop` (R-Drop: a consistency term between two dropout passes of each batch).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.data.classification import (
    ClassificationBatches,
    ClassificationDataConfig,
    EncodedExamples,
    check_labels,
    label_set,
    read_examples,
)
from nanoformer.errors import UserError
from nanoformer.evaluation.classification import evaluate_classifier
from nanoformer.layers.losses import rdrop_consistency
from nanoformer.models import EncoderModel
from nanoformer.recipes.mlm import encoder_config, tokenizer_from_texts
from nanoformer.run_config import RunConfig, load_run_config
from nanoformer.tokenizer import Tokenizer
from nanoformer.training.checkpoint import load_model_state, read_config
from nanoformer.training.contracts import FitResult
from nanoformer.training.distributed import dist_info_from_env
from nanoformer.training.trainer import Trainer

Batch = dict[str, Tensor]

def load_finetune_config(path: str | Path, overrides: list[str] = (), init_from: str | None = None,
                         default_kind: str = "classification") -> RunConfig:
    """A run config for fine-tuning: `--init-from` joins the overrides, and [data] kind defaults
    to "classification" rather than the encoder's "mlm"."""
    extra = list(overrides)
    if init_from is not None:
        extra.append(f"model.init_from={json.dumps(init_from)}")
    return load_run_config(path, extra, default_data_kind=default_kind)


def load_pretrained(model: EncoderModel, folder: Path) -> None:
    """Every tensor of `model` from the checkpoint, except a fresh classification head.

    The checkpoint's masked-LM head is not used; a classifier checkpoint's head is kept when the
    model has the same classes (checked by the caller).
    """
    state = load_file(str(Path(folder) / "model.safetensors"))
    own = model.state_dict()
    missing = []
    for key, tensor in own.items():
        if key in state:
            if tuple(state[key].shape) != tuple(tensor.shape):
                raise UserError(f"checkpoint {str(folder)!r}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                                f"the model expects {tuple(tensor.shape)}; fine-tune with the checkpoint's architecture")
            own[key] = state[key]
        elif not key.startswith("classifier."):
            missing.append(key)
    if missing:
        raise UserError(f"checkpoint {str(folder)!r} lacks {', '.join(missing[:4])}; is it an encoder (BERT) checkpoint?")
    model.load_state_dict(own)


# --------------------------------------------------------------------------- training


def classification_loss(label_smoothing: float = 0.0, rdrop: float = 0.0):
    """loss_fn(model, batch): cross-entropy over the classes, smoothed in training.

    With `rdrop` > 0 a training batch runs twice (stacked into one forward, so the two copies get
    independent dropout masks) and the loss adds rdrop x the mean of KL(p||q) and KL(q||p) between
    the two predicted distributions (R-Drop). Evaluation is a single plain cross-entropy.
    """

    def loss_fn(model: nn.Module, batch: Batch) -> Tensor:
        inputs = (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        labels = batch["labels"]
        smoothing = label_smoothing if model.training else 0.0
        if rdrop == 0 or not model.training:
            return F.cross_entropy(model(*inputs).float(), labels, label_smoothing=smoothing)
        logits = model(*[None if x is None else torch.cat([x, x]) for x in inputs]).float()
        ce = F.cross_entropy(logits, torch.cat([labels, labels]), label_smoothing=smoothing)
        return ce + rdrop * rdrop_consistency(logits)

    return loss_fn


def _resolve_file(value: str, base_dir: Path | None) -> Path:
    from nanoformer.data.text import resolve_text_files

    return resolve_text_files(value, base_dir=base_dir)[0]


def _read(data: ClassificationDataConfig, path: Path):
    return read_examples(path, data.format, header=data.header, text_column=data.text_column,
                         text_pair_column=data.text_pair_column, label_column=data.label_column)


def train_classifier(run: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
                     pause_after_s: float | None = None) -> FitResult:
    data: ClassificationDataConfig = run.data
    run_dir = Path(run_dir)
    base_dir = run.source.parent if run.source else None
    rank = dist_info_from_env().rank
    files = {"train": _resolve_file(data.train, base_dir)}
    for split in ("dev", "test"):
        if getattr(data, split):
            files[split] = _resolve_file(getattr(data, split), base_dir)
    examples = {split: _read(data, path) for split, path in files.items()}
    labels = label_set(examples["train"], data.labels)
    metric_names = ["accuracy", "macro_f1"] + (["f1"] if len(labels) == 2 else [])
    if run.train.best_metric not in ("val_loss", *metric_names):
        raise UserError(f"train.best_metric = {run.train.best_metric!r}: a classifier ranks checkpoints by one of "
                        f"val_loss, {', '.join(metric_names)}")
    for split in ("dev", "test"):
        if split in examples:
            check_labels(examples[split], labels, "the training labels")
    if "dev" not in examples:  # hold out part of train, chosen by a seeded shuffle
        order = torch.randperm(len(examples["train"]), generator=torch.Generator().manual_seed(run.train.seed)).tolist()
        n_dev = max(1, int(len(order) * data.val_fraction))
        train = examples["train"]
        examples["dev"] = [train[i] for i in sorted(order[:n_dev])]
        examples["train"] = [train[i] for i in sorted(order[n_dev:])]

    init_from = run.extra.get("init_from")
    tokenizer_path = run_dir / "tokenizer.json"
    if init_from:
        tokenizer = Tokenizer.load(init_from)
        base = ModelConfig.from_dict(read_config(init_from)["model"])
        if base.arch != "encoder":
            raise UserError(f"[model] init_from = {init_from}: a {base.arch!r} checkpoint; fine-tuning needs an encoder")
        if base.num_labels and (base.labels or [str(i) for i in range(base.num_labels)]) != labels:
            raise UserError(f"{init_from}: the checkpoint classifies into {base.labels or base.num_labels} but the data "
                            f"has the labels {labels}; fine-tune from the pre-trained (masked-LM) checkpoint, or use "
                            "the same labels")
    elif resume and tokenizer_path.is_file():
        tokenizer = Tokenizer.load(tokenizer_path)
    else:
        texts = [t for e in examples["train"] for t in (e.text, e.pair) if t]
        tokenizer = tokenizer_from_texts(texts, data.tokenizer, data.vocab_size, lowercase=data.lowercase,
                                         progress=progress and rank == 0)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save(tokenizer_path)

    model_config = encoder_config(run.model, tokenizer).replace(num_labels=len(labels), labels=labels)
    if data.max_length > model_config.max_positions:
        raise UserError(f"[data] max_length = {data.max_length} exceeds the model's max_positions = "
                        f"{model_config.max_positions}; lower max_length")
    # The trainer validates on "val": the dev file (or the part of train held out).
    splits = {("val" if split == "dev" else split): EncodedExamples(tokenizer, examples[split], labels, data.max_length)
              for split in examples}
    batches = ClassificationBatches(splits, run.train.batch_size, seed=run.train.seed + rank,
                                    token_types=model_config.type_vocab_size > 0)
    torch.manual_seed(run.train.seed)
    model = EncoderModel(model_config)
    if init_from and not resume:
        load_pretrained(model, Path(init_from))
    extra: dict[str, Any] = {"data": {**run.to_dict()["data"], "files": {k: str(v) for k, v in files.items()}}}
    if init_from:
        extra["init_from"] = str(init_from)

    def dev_metrics(model: nn.Module) -> dict:
        """Accuracy and macro-F1 on the whole dev set, for train.best_metric and the log."""
        return evaluate_classifier(model, batches.eval_batches("val", n_batches=None), labels)

    loss_fn = classification_loss(run.train.label_smoothing, run.train.rdrop)
    trainer = Trainer(model, loss_fn, batches, run.train, model_config, run_dir, tokenizer=tokenizer,
                      extra_config=extra, resume=resume, progress=progress, eval_metrics=dev_metrics)
    result = trainer.fit(pause_after_s=pause_after_s)
    if rank == 0 and not result.interrupted:
        best = run_dir / "checkpoints" / "best"
        if best.is_dir():
            load_model_state(best, trainer.model)
        report: dict[str, Any] = {"checkpoint": str(best if best.is_dir() else result.checkpoint), "labels": labels}
        for split, name in (("dev", "val"), ("test", "test")):
            if name in splits:
                metrics = evaluate_classifier(trainer.model, batches.eval_batches(name, n_batches=None), labels)
                report[split] = metrics
                print(f"{split}: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
                      f"({metrics['examples']} examples)", file=sys.stderr)
        (run_dir / "eval.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result
