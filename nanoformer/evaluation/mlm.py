"""Masked-language-model evaluation and fill-mask.

- `evaluate_mlm`: on held-out sequences masked the way training masks them (with fixed seeds, so
  the numbers are reproducible), the masked-token accuracy (the fraction of selected positions
  whose original token is the model's top prediction) and the MLM loss and perplexity
  exp(mean cross-entropy over the selected positions). Positions replaced by a random token or
  left unchanged count too, as in training.
- `fill_mask`: the top-k candidates, with probabilities, for every [MASK] in a text. Each mask is
  predicted from the same forward pass, independently of the others (as BERT is trained).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from nanoformer.errors import UserError
from nanoformer.layers.losses import IGNORE_INDEX

if TYPE_CHECKING:
    from nanoformer.tokenizer import Tokenizer


@dataclass
class MLMResult:
    loss: float
    perplexity: float
    accuracy: float
    masked_tokens: int
    sequences: int


@torch.inference_mode()
def evaluate_mlm(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], max_tokens: int | None = None) -> MLMResult:
    """Loss, perplexity and accuracy over the selected (label != -100) positions of `batches`."""
    model.eval()
    device = next(model.parameters()).device
    total, correct, count, sequences = 0.0, 0, 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        selected = labels != IGNORE_INDEX
        logits = model(**batch, masked_positions=selected).float()
        targets = labels[selected]
        total += float(F.cross_entropy(logits, targets, reduction="sum"))
        correct += int((logits.argmax(-1) == targets).sum())
        count += int(targets.numel())
        sequences += int(labels.shape[0])
        if max_tokens is not None and count >= max_tokens:
            break
    if count == 0:
        raise UserError("no masked tokens to evaluate; give more held-out text")
    loss = total / count
    return MLMResult(loss=loss, perplexity=math.exp(loss), accuracy=correct / count, masked_tokens=count,
                     sequences=sequences)


@dataclass
class Candidate:
    token: str  # the token as text, "##" removed
    token_id: int
    probability: float
    sequence: str  # the text with this mask filled in (the other masks left as [MASK])


@torch.inference_mode()
def fill_mask(model: nn.Module, tokenizer: Tokenizer, text: str, top_k: int = 5) -> list[list[Candidate]]:
    """For each [MASK] in `text`, left to right, its `top_k` most likely tokens."""
    from nanoformer.data.fill_mask import MASK_TEXT, encode_masked_text

    if getattr(model, "mlm_head", None) is None:
        raise UserError("fill-mask needs a masked-LM model; this checkpoint is a classifier (it has no MLM head)")
    if top_k < 1:
        raise UserError(f"--top-k {top_k}: expected at least 1")
    ids = encode_masked_text(tokenizer, text)
    mask_id = tokenizer.mask_id
    positions = [i for i, t in enumerate(ids) if t == mask_id]
    if not positions:
        raise UserError(f"no {MASK_TEXT} in the text {text!r}; write {MASK_TEXT} where a word should be "
                        f"predicted, e.g. \"나는 {MASK_TEXT}에 갔다\"")
    limit = model.config.max_positions
    if len(ids) > limit:
        raise UserError(f"the text has {len(ids)} tokens with [CLS]/[SEP], more than the model's {limit} "
                        "positions; shorten it")
    model.eval()
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    selected = torch.zeros_like(input_ids, dtype=torch.bool)
    selected[0, positions] = True
    probs = model(input_ids, masked_positions=selected).float().softmax(-1)
    k = min(top_k, probs.shape[-1])
    result = []
    for row, position in enumerate(positions):
        values, indices = probs[row].topk(k)
        candidates = []
        for p, index in zip(values.tolist(), indices.tolist()):
            filled = list(ids)
            filled[position] = index
            sequence = tokenizer.decode([t for t in filled[1:-1]], skip_special_tokens=False)
            sequence = sequence.replace(tokenizer.id_to_token(mask_id) or MASK_TEXT, MASK_TEXT)
            token = tokenizer.id_to_token(index) or ""
            candidates.append(Candidate(token[2:] if token.startswith("##") else token, index, p, sequence))
        result.append(candidates)
    return result
