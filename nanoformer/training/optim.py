"""AdamW with weight decay on weight matrices only.

Decay is a prior that weights should be small; it makes sense for the matrices that mix features
(attention projections, FFN, output head) but not for biases and normalisation gains, whose
scale is meaningful by itself: decaying a LayerNorm gain towards 0 fights the very
normalisation it implements. The rule "decay tensors with dim >= 2" captures this without
knowing module names, so it works for all three model families.

Embeddings are matrices, so the rule decays them. We keep that by default because it is what
the references we reproduce do (GPT-2/nanoGPT and the original BERT code decay their token
embeddings), and with tied embeddings the same tensor is the output projection, which should be
decayed like any other. The cost is that AdamW's decoupled decay shrinks rows of rare tokens
even on steps where they get no gradient; pass `decay_embeddings=False` to exempt every
`nn.Embedding` weight (a tied output head then goes undecayed too).
"""

from __future__ import annotations

import torch
from torch import nn

from nanoformer.training.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = True) -> list[dict]:
    """Two AdamW groups, "decay" and "no_decay", in the model's parameter order.

    Shared (tied) parameters appear once. Frozen parameters (requires_grad False) are left out.
    """
    embedding_params = set()
    if not decay_embeddings:
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                embedding_params.add(id(module.weight))
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # named_parameters() yields a tied tensor only once
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and id(p) not in embedding_params:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, config: TrainConfig, decay_embeddings: bool = True) -> torch.optim.AdamW:
    """AdamW over `param_groups`, using the fused kernel where this torch has one for the device.

    The fused kernel updates all parameters in one launch per dtype; where it is missing
    (older torch on CPU or MPS) we fall back to the multi-tensor `foreach` implementation.
    The learning rate set here is a placeholder: the trainer writes the schedule's value each step.
    """
    groups = param_groups(model, config.weight_decay, decay_embeddings)
    kwargs = dict(lr=config.lr, betas=config.betas, eps=config.eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused AdamW for this device in this torch
        return torch.optim.AdamW(groups, foreach=True, **kwargs)
