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

import re

import torch
from torch import nn

from nanoformer.training.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = True,
                 layer_lr_decay: float = 1.0) -> list[dict]:
    """Two AdamW groups, "decay" and "no_decay", in the model's parameter order.

    Shared (tied) parameters appear once. Frozen parameters (requires_grad False) are left out.

    layer_lr_decay < 1 (layer-wise learning-rate decay, as ELECTRA's and DeBERTa's fine-tuning
    recipes use) splits each group by depth: a parameter of `layers.<i>` gets `lr_scale` =
    decay ** (L - i), the embeddings decay ** (L + 1), the rest (heads, final norms) 1; so
    fine-tuning moves the general lower layers less than the task-specific top. `set_lr`
    multiplies the schedule's rate by each group's `lr_scale`.
    """
    embedding_params = set()
    if not decay_embeddings:
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                embedding_params.add(id(module.weight))
    depth = _depths(model) if layer_lr_decay != 1.0 else {}
    top = max(depth.values(), default=0)
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in model.named_parameters():  # named_parameters() yields a tied tensor only once
        if not p.requires_grad:
            continue
        decayed = p.dim() >= 2 and id(p) not in embedding_params
        below_top = top - depth.get(name, top)
        key = (decayed, below_top)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": weight_decay if decayed else 0.0,
                           "name": ("decay" if decayed else "no_decay") + (f"_{below_top}" if below_top else "")}
            if layer_lr_decay != 1.0:
                groups[key]["lr_scale"] = layer_lr_decay**below_top
        groups[key]["params"].append(p)
    for decayed in (True, False):  # both groups exist, even if empty (the optimiser state's layout)
        groups.setdefault((decayed, 0), {"params": [], "weight_decay": weight_decay if decayed else 0.0,
                                         "name": "decay" if decayed else "no_decay"})
    return sorted(groups.values(), key=lambda g: (not g["name"].startswith("decay"), g["name"]))


def _depths(model: nn.Module) -> dict[str, int]:
    """Parameter name -> depth: 0 for embeddings, i + 1 inside `layers.<i>`, L + 1 above them."""
    layered = re.compile(r"(?:^|\.)layers\.(\d+)\.")
    depth: dict[str, int] = {}
    for name, _ in model.named_parameters():
        match = layered.search(name)
        if match:
            depth[name] = int(match.group(1)) + 1
        elif "embeddings" in name.split(".")[0]:  # embeddings, src_embeddings, tgt_embeddings
            depth[name] = 0
    top = max(depth.values(), default=0) + 1
    return {name: depth.get(name, top) for name, _ in model.named_parameters()}


def build_optimizer(model: nn.Module, config: TrainConfig, decay_embeddings: bool = True) -> torch.optim.AdamW:
    """AdamW over `param_groups`, using the fused kernel where this torch has one for the device.

    The fused kernel updates all parameters in one launch per dtype; where it is missing
    (older torch on CPU or MPS) we fall back to the multi-tensor `foreach` implementation.
    The learning rate set here is a placeholder: the trainer writes the schedule's value each step.
    """
    groups = param_groups(model, config.weight_decay, decay_embeddings, config.layer_lr_decay)
    kwargs = dict(lr=config.lr, betas=config.betas, eps=config.eps)
    try:
        return torch.optim.AdamW(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused AdamW for this device in this torch
        return torch.optim.AdamW(groups, foreach=True, **kwargs)
