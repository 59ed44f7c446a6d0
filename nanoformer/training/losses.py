"""Token-level cross-entropy with label smoothing, the loss every family's `loss_fn` builds on.

The trainer never computes a loss itself (it cannot know which tensors are targets); each
family's `loss_fn(model, batch)` calls the model and then this function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # targets with this id (padding, unmasked MLM positions) do not count


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
