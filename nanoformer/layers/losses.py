"""Token-level cross-entropy with label smoothing, the loss every family's `loss_fn` builds on.

The trainer never computes a loss itself (it cannot know which tensors are targets); each
family's `loss_fn(model, batch)` calls the model and then this function. It lives with the
layers, not the trainer, because the models call it themselves (`model(ids, targets=...)`):
models import layers, never training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nanoformer.kernels.cross_entropy import can_fuse, linear_cross_entropy

IGNORE_INDEX = -100  # targets with this id (padding, unmasked MLM positions) do not count; torch's default too

__all__ = ["IGNORE_INDEX", "head_loss", "linear_cross_entropy", "rdrop_consistency", "token_cross_entropy"]


def token_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy over the non-ignored tokens of (..., V) logits and (...) targets.

    Label smoothing (the original Transformer used 0.1) moves `label_smoothing` of the target
    probability mass uniformly onto the whole vocabulary: it hurts perplexity but improves BLEU,
    because the model learns to be less sure. Computed in float32 for stability under autocast.
    """
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


def rdrop_consistency(logits: torch.Tensor) -> torch.Tensor:
    """R-Drop's term for (2N, V) logits whose halves are two dropout passes over the same N rows:
    the mean over rows of (KL(p||q) + KL(q||p)) / 2, computed in float32."""
    log_p, log_q = F.log_softmax(logits.float(), dim=-1).chunk(2)
    return (F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
            + F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")) / 2


def head_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean token cross-entropy of `head(hidden)` (B, T, V) against targets (B, T).

    Fast version: kernels/cross_entropy.py, the output layer and this loss fused in row chunks.
    """
    if can_fuse(head, hidden):
        return linear_cross_entropy(hidden, head.weight, head.bias, targets, label_smoothing)
    return token_cross_entropy(head(hidden), targets, label_smoothing)
