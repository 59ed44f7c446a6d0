"""The output layer and its cross-entropy in one pass over row chunks, without the logits tensor.

In a small model the (tokens x vocabulary) logits are the largest tensor of a training step, and
most of the output layer's time goes to passes over it (softmax, its backward, the smoothing
term, zero fills, copies; the profile is in docs/benchmarks.md, "The fused output-layer loss").
Here rows go through in chunks; each chunk's logits turn into its softmax in place and at once
into the gradients of hidden, weight and bias, so the backward pass only scales them. Same
value and gradients as `F.cross_entropy(F.linear(hidden, weight, bias), ...)` (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nanoformer.kernels.gemm import Linear, accumulate_weight_gradient, input_gradient, linear, weight_gradient

def can_fuse(head: nn.Module, hidden: Tensor) -> bool:
    """True when `head(hidden)` is exactly `F.linear(hidden, head.weight, head.bias)` in float32.

    A wrapped or hooked head (LoRA, a probe) must run its own forward, and autocast changes the
    product's dtype: those compute the logits first.
    """
    plain = (
        type(head) in (nn.Linear, Linear)
        and not (head._forward_hooks or head._forward_pre_hooks)
        and not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
    )
    return (plain and hidden.dtype == head.weight.dtype == torch.float32
            and not torch.is_autocast_enabled(hidden.device.type))


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    chunk_rows: int = 512,
) -> torch.Tensor:
    """Mean (label-smoothed) cross-entropy of `F.linear(hidden, weight, bias)` against targets.

    hidden (..., D) float32, weight (V, D), bias (V,) or None, targets (...), ignore_index not
    counted. The contract of `layers.losses.token_cross_entropy` on the logits, without them.
    """
    return _LinearCrossEntropy.apply(
        hidden.reshape(-1, hidden.shape[-1]), weight, bias, targets.reshape(-1), float(label_smoothing),
        ignore_index, chunk_rows,
    )


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, label_smoothing, ignore_index, chunk_rows):
        needs = ctx.needs_input_grad
        vocab = weight.shape[0]
        valid = targets != ignore_index
        count = int(valid.sum())
        all_rows, rows_kept = hidden, None
        if count < len(targets):
            # Ignored rows (padding) have no loss and no gradient: they skip the output layer.
            rows_kept = valid.nonzero()[:, 0]
            hidden, targets = hidden.index_select(0, rows_kept), targets.index_select(0, rows_kept)
        scale = 1.0 / count if count else 0.0  # the mean over counted rows, folded into the products
        grad_hidden = torch.empty_like(hidden) if needs[0] else None
        grad_weight = None  # made by the first chunk's product
        grad_bias = torch.zeros_like(bias) if bias is not None and needs[2] else None
        if label_smoothing:
            # The mean logit of a row, h·mean(W) + mean(b), without a pass over the logits.
            mean_weight = weight.mean(dim=0)
            mean_bias = bias.mean() if bias is not None else 0.0
        total = hidden.new_zeros((), dtype=torch.float64)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            h, t = hidden[rows], targets[rows, None]
            logits = linear(h, weight, bias)  # (c, V)
            target_logit = logits.gather(1, t)[:, 0]
            top = logits.amax(dim=1, keepdim=True)
            probs = logits.sub_(top).exp_()  # in place: the logits are not needed any more
            norm = probs.sum(dim=1, keepdim=True)
            lse = (top + norm.log())[:, 0]
            # -log p(target), and for smoothing the mean of -log p over the vocabulary.
            row_loss = lse - target_logit
            if label_smoothing:
                row_loss = (1.0 - label_smoothing) * row_loss + label_smoothing * (lse - (h @ mean_weight + mean_bias))
            total += row_loss.sum(dtype=torch.float64)
            if not (needs[0] or needs[1] or needs[2]):
                continue
            # d loss_row / d logits = softmax - (1 - ε)·onehot(target) - ε/V, in one pass.
            grad = torch.addcmul(probs.new_full((), -label_smoothing / vocab), probs, norm.reciprocal(), out=probs)
            grad.scatter_add_(1, t, grad.new_full(t.shape, -(1.0 - label_smoothing)))
            if grad_hidden is not None:
                input_gradient(grad, weight, out=grad_hidden[rows])  # torch's kernel writes in place
            if needs[1]:
                if grad_weight is None:
                    grad_weight = torch.mul(weight_gradient(grad, h), scale, out=torch.empty_like(weight))
                else:
                    accumulate_weight_gradient(grad_weight, grad, h, alpha=scale)
            if grad_bias is not None:
                grad_bias += grad.sum(dim=0)
        if needs[1] and grad_weight is None:  # no counted rows
            grad_weight = torch.zeros_like(weight)
        for g in (grad_hidden, grad_bias):
            if g is not None:
                g.mul_(scale)
        if grad_hidden is not None and rows_kept is not None:
            grad_hidden = all_rows.new_zeros(all_rows.shape).index_copy_(0, rows_kept, grad_hidden)
        ctx.save_for_backward(*(g if g is not None else torch.empty(0) for g in (grad_hidden, grad_weight, grad_bias)))
        return (total * scale).to(hidden.dtype) if count else hidden.new_full((), float("nan"))

    @staticmethod
    def backward(ctx, grad_loss):
        grads = [g * grad_loss if need else None for g, need in zip(ctx.saved_tensors, ctx.needs_input_grad[:3])]
        return (*grads, None, None, None, None)
