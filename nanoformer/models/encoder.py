"""BERT-style encoder: every position attends to the whole sentence, both sides at once.

Trained by masked-language modelling ("나는 [MASK]에 갔다": predict the hidden word from its left
and right context). The MLM head is BERT's: dense + activation + LayerNorm, then a projection
onto the vocabulary tied to the token embeddings, plus a bias.

Fine-tuned for classification, the same encoder carries a classification head instead
(`config.num_labels > 0`): BERT's pooler (dense + tanh on the [CLS] state), dropout and a linear
layer onto the classes; or, with `classifier_pooling = "mean"`, dropout and the linear layer on
the mean of the real tokens' states. The head is chosen by the config, so one class loads every
encoder checkpoint, and `forward` returns the logits of whichever head the model has:
(B, T, V) for masked LM, (B, num_labels) for a classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nanoformer.config import ModelConfig
from nanoformer.layers.blocks import Encoder, StackOutput
from nanoformer.kernels.dropout import Dropout  # nn.Dropout, fast on the CPU: kernels/dropout.py
from nanoformer.layers.embedding import Embeddings
from nanoformer.layers.feedforward import activation_fn
from nanoformer.kernels.gemm import Linear  # nn.Linear on this CPU's fast GEMM: kernels/gemm.py
from nanoformer.layers.masks import padding_mask
from nanoformer.layers.norms import make_norm
from nanoformer.models.init import init_weights
from nanoformer.models.inputs import check_ids, check_length, check_mask, check_same_shape, default_position_ids


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """The mean of the real tokens' states (B, T, D) -> (B, D)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class MaskedLMHead(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = Linear(config.d_model, config.d_model)
        self.act = activation_fn("gelu" if config.activation == "swiglu" else config.activation)
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.decoder = Linear(config.d_model, config.vocab_size, bias=config.output_bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))))


class ClassificationHead(nn.Module):
    """Sentence logits from the encoder's states.

    "cls" pooling is BERT's: the first ([CLS]) state through dense + tanh (the "pooler"), then
    dropout and a linear layer onto the classes (Hugging Face's BertForSequenceClassification).
    "mean" pooling averages the real tokens' states and skips the pooler.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pooling = config.classifier_pooling
        self.dense = Linear(config.d_model, config.d_model) if self.pooling == "cls" else None
        self.dropout = Dropout(config.dropout)
        self.out = Linear(config.d_model, config.num_labels)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if self.dense is not None:
            pooled = torch.tanh(self.dense(hidden[:, 0]))
        else:
            pooled = mean_pool(hidden, attention_mask)
        return self.out(self.dropout(pooled))


class EncoderModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch != "encoder":
            raise ValueError(f"EncoderModel needs arch = 'encoder', got {config.arch!r}")
        self.config = config
        self.embeddings = Embeddings.from_config(config, config.vocab_size, config.type_vocab_size)
        self.encoder = Encoder(config, config.n_layers)
        # One head, chosen by the config: a classifier has no MLM head (no unused parameters,
        # which DDP would refuse).
        self.mlm_head: MaskedLMHead | None = None
        self.classifier: ClassificationHead | None = None
        if config.num_labels:
            self.classifier = ClassificationHead(config)
        else:
            self.mlm_head = MaskedLMHead(config)
            if config.tie_embeddings:
                self.mlm_head.decoder.weight = self.embeddings.tokens.weight
        init_weights(self, config, config.n_layers)

    @property
    def is_classifier(self) -> bool:
        return self.classifier is not None

    def run(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        need_weights: bool = False,
        keep: Tensor | None = None,
    ) -> StackOutput:
        """The encoder's states; with `keep` (B, Tq) positions, only those, (B, Tq, D)."""
        check_ids("input_ids", input_ids, self.config.vocab_size)
        check_length("input_ids", input_ids.shape[1], 0, self.config.max_positions)
        check_mask("attention_mask", attention_mask, input_ids)
        check_same_shape("token_type_ids", token_type_ids, input_ids)
        if token_type_ids is not None:
            check_ids("token_type_ids", token_type_ids, max(self.config.type_vocab_size, 1))
        position_ids = default_position_ids(input_ids.shape[1], 0, None, input_ids.device)
        x = self.embeddings(input_ids, position_ids, token_type_ids)
        # An all-ones mask hides nothing: dropping it lets attention take its unmasked fast path.
        has_padding = attention_mask is not None and not bool(attention_mask.all())
        mask = padding_mask(attention_mask) if has_padding else None
        return self.encoder(x, position_ids, mask=mask, need_weights=need_weights, keep=keep)

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Contextual hidden states (B, T, D)."""
        return self.run(input_ids, attention_mask, token_type_ids).hidden

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        masked_positions: Tensor | None = None,
    ) -> Tensor:
        """Masked-LM logits (B, T, V); a classifier's class logits (B, num_labels).

        masked_positions: a bool (B, T) tensor; the MLM head then runs on those positions only
        and returns (N, V) logits in row-major order, which saves most of the head's work when
        training on 15% masked tokens.
        """
        if self.classifier is not None:
            if masked_positions is not None:
                raise ValueError("masked_positions is for masked-LM models; this model is a classifier")
            if self.classifier.pooling == "cls":  # the pooler reads [CLS] alone: the last layer computes only it
                first = torch.zeros(input_ids.shape[0], 1, dtype=torch.long, device=input_ids.device)
                return self.classifier(self.run(input_ids, attention_mask, token_type_ids, keep=first).hidden)
            return self.classifier(self.encode(input_ids, attention_mask, token_type_ids), attention_mask)
        if masked_positions is None:
            return self.mlm_head(self.encode(input_ids, attention_mask, token_type_ids))
        check_same_shape("masked_positions", masked_positions, input_ids)
        selected = masked_positions.bool()
        counts = selected.sum(dim=1)
        width = int(counts.max()) if selected.numel() else 0
        if width == 0:
            hidden = self.encode(input_ids, attention_mask, token_type_ids)
            return self.mlm_head(hidden[selected])
        # Each row's selected positions in order, padded to the longest row with position 0 (its
        # outputs are dropped): the last layer then computes (B, width) states instead of (B, T).
        keep = torch.sort((~selected).to(torch.int8), dim=1, stable=True).indices[:, :width]
        hidden = self.run(input_ids, attention_mask, token_type_ids, keep=keep).hidden
        real = torch.arange(width, device=counts.device) < counts.unsqueeze(1)
        return self.mlm_head(hidden[real])  # row-major, as hidden[selected] would be

    def embed(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        normalize: bool = True,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """Sentence vectors (B, D): the mean of the real tokens' hidden states, L2-normalised."""
        pooled = mean_pool(self.encode(input_ids, attention_mask, token_type_ids), attention_mask)
        return F.normalize(pooled, dim=-1) if normalize else pooled
