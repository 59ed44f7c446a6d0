"""Language-model loss and perplexity over a whole token stream.

Training reports the loss on random windows; a final evaluation should cover every token once,
so it walks the stream in consecutive windows of the model's context (each token predicted from
the tokens before it within its window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


@dataclass
class PerplexityResult:
    loss: float
    perplexity: float
    tokens: int


@torch.inference_mode()
def evaluate_stream(
    model: nn.Module, tokens: np.ndarray, block_size: int, batch_size: int = 16, max_tokens: int | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """Mean next-token cross-entropy over consecutive windows of `block_size` + 1 tokens."""
    if max_tokens is not None:
        tokens = tokens[: max_tokens + 1]
    n_windows = (len(tokens) - 1) // block_size
    if n_windows == 0:
        raise ValueError(f"the text has {len(tokens)} tokens, fewer than one window of {block_size + 1}")
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    starts = np.arange(n_windows) * block_size
    for i in tqdm(range(0, n_windows, batch_size), disable=not progress, desc="evaluate", unit="batch"):
        index = starts[i : i + batch_size, None] + np.arange(block_size + 1)
        window = torch.from_numpy(tokens[index].astype(np.int64)).to(device)
        logits = model(window[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), window[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += window[:, 1:].numel()
    mean = total / count
    return PerplexityResult(loss=mean, perplexity=math.exp(mean), tokens=count)
