"""Weight initialisation as each family's reference implementation does it.

- "xavier" (the paper's model, as fairseq and the Annotated Transformer do): Xavier-uniform
  matrices, zero biases, embeddings N(0, d_model^-0.5) (they are multiplied by √d_model).
- "gpt2": N(0, 0.02) everywhere, and the projections that write into the residual stream
  (attention output, FFN down) get 0.02 / √(2 · n_layers), so the stream's variance does not
  grow with depth.
- "bert": N(0, 0.02) for matrices and embeddings, zero biases.
Norms start at weight 1, bias 0; padding rows of embeddings start at zero.
"""

from __future__ import annotations

import math

from torch import nn

from nanoformer.config import ModelConfig
from nanoformer.layers.norms import RMSNorm


def init_weights(model: nn.Module, config: ModelConfig, n_layers: int) -> None:
    std = config.init_std
    residual_std = std / math.sqrt(2 * n_layers)
    # A tied output projection shares its matrix with an embedding: initialise it as an embedding.
    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if id(module.weight) in embedding_weights:
                pass
            elif config.init == "xavier":
                nn.init.xavier_uniform_(module.weight)
            elif config.init == "gpt2" and name.endswith(("out_proj", "ffn.down")):
                nn.init.normal_(module.weight, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            emb_std = config.d_model**-0.5 if config.init == "xavier" else std
            nn.init.normal_(module.weight, mean=0.0, std=emb_std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
