"""Classifier metrics: accuracy and F1 (per class, macro-averaged, and the positive class of a
binary task), from predicted and true class indices."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn


def classification_metrics(predictions: Sequence[int], targets: Sequence[int], labels: Sequence[str]) -> dict:
    """accuracy, macro_f1, f1 per label, and for two classes `f1` of the second (positive) class.

    F1 of a class = 2·TP / (2·TP + FP + FN); a class never predicted nor present scores 0.
    """
    predictions, targets = list(map(int, predictions)), list(map(int, targets))
    if len(predictions) != len(targets) or not targets:
        raise ValueError(f"need as many predictions as targets (got {len(predictions)} and {len(targets)}), at least one")
    correct = sum(p == t for p, t in zip(predictions, targets))
    per_label = {}
    for c, name in enumerate(labels):
        tp = sum(p == c and t == c for p, t in zip(predictions, targets))
        fp = sum(p == c and t != c for p, t in zip(predictions, targets))
        fn = sum(p != c and t == c for p, t in zip(predictions, targets))
        per_label[name] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    result = {
        "examples": len(targets),
        "accuracy": correct / len(targets),
        "macro_f1": sum(per_label.values()) / len(per_label),
        "f1_per_label": per_label,
    }
    if len(labels) == 2:
        result["f1"] = per_label[labels[1]]
    return result


@torch.inference_mode()
def predict(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(class probabilities (N, C), true classes (N,) or None) over `batches`."""
    model.eval()
    device = next(model.parameters()).device
    probs, targets = [], []
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels", None)
        probs.append(model(**batch).float().softmax(-1).cpu())
        if labels is not None:
            targets.append(labels.cpu())
    return torch.cat(probs), (torch.cat(targets) if targets else None)


def evaluate_classifier(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], labels: Sequence[str]) -> dict:
    probs, targets = predict(model, batches)
    if targets is None:
        raise ValueError("evaluate_classifier needs batches with labels")
    return classification_metrics(probs.argmax(-1).tolist(), targets.tolist(), labels)
