"""The shapes a family's model may take when `size = "auto"` chooses one: its ladder of rungs.

A rung is a whole recipe, not only a shape: depth, width, heads, context, the batch it trains on
and its peak learning rate, because the best rate and batch change with the width. The budget
rule (budget.py) picks one rung; the scaling study (benchmarks/scaling_study.py) trains them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rung:
    """One shape of a family's ladder, with the batch and peak learning rate it trains at."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    context: int
    batch_size: int
    lr: float

    @property
    def d_ff(self) -> int:
        return 4 * self.d_model

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context

    @property
    def n_params(self) -> int:
        """Non-embedding parameters, as the scaling law counts them: attention, FFN and norms of each layer."""
        d, f = self.d_model, self.d_ff
        per_layer = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 4 * d
        return self.n_layers * per_layer

    def describe(self) -> str:
        return f"{self.n_layers} x {self.d_model}, context {self.context}, batch {self.batch_size}, lr {self.lr:g}"


# Decoder-only language models. Every rung trains on 2,048 tokens a step, so a budget's steps grow
# with its speed alone. Peak rates are set by hand (2e-3 is the shipped config's for 4 x 256;
# wider models take lower ones, as nanoGPT's 6 x 384 at 1e-3); the law is fitted with these rates.
DECODER_LADDER: tuple[Rung, ...] = (
    Rung("2x64-c64", 2, 64, 2, 64, 32, 3e-3),
    Rung("4x128-c64", 4, 128, 4, 64, 32, 3e-3),
    Rung("4x192-c128", 4, 192, 4, 128, 16, 2.5e-3),
    Rung("4x256-c128", 4, 256, 4, 128, 16, 2e-3),
    Rung("6x384-c256", 6, 384, 6, 256, 8, 1.5e-3),
    Rung("8x512-c256", 8, 512, 8, 256, 8, 1e-3),
)


@dataclass(frozen=True)
class TranslationRung:
    """One shape of the encoder-decoder ladder: as many encoder as decoder layers, batches of
    `max_tokens` (sentences x longest side, as [data] max_tokens), and the Noam schedule's peak rate."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    max_tokens: int
    lr: float  # the peak: the Noam multiplier is set from it and the warm-up (budget.apply_rung)

    @property
    def d_ff(self) -> int:
        return 4 * self.d_model

    @property
    def tokens_per_step(self) -> int:
        """Batch tokens with padding: the law's D counts these, since every rung batches alike."""
        return self.max_tokens

    @property
    def n_params(self) -> int:
        """Non-embedding parameters: encoder layers (self-attention, FFN, 2 norms) and decoder
        layers (those plus cross-attention and its norm)."""
        d, f = self.d_model, self.d_ff
        attention, ffn, norm = 4 * d * d + 4 * d, 2 * d * f + f + d, 2 * d
        return self.n_layers * ((attention + ffn + 2 * norm) + (2 * attention + ffn + 3 * norm))

    def describe(self) -> str:
        return f"{self.n_layers}+{self.n_layers} x {self.d_model}, {self.max_tokens} tokens a batch, peak lr {self.lr:g}"


# Encoder-decoder translators, from the shipped Multi30k shape (3+3 x 256, 4 heads, 4,096-token
# batches, Noam peak 2e-3) down. Peak rates scale as d^-0.5, the Noam schedule's own rule.
ENCODER_DECODER_LADDER: tuple[TranslationRung, ...] = (
    TranslationRung("3x128", 3, 128, 4, 4096, 2.83e-3),
    TranslationRung("3x192", 3, 192, 4, 4096, 2.31e-3),
    TranslationRung("3x256", 3, 256, 4, 4096, 2e-3),
)

# BERT-style encoders (masked-LM pre-training, configs/bert_mlm_ko.toml's family), up to the shipped
# bert-mini width (4 x 256). Every rung trains on 32 sequences of 128 tokens; D counts all of a
# batch's tokens, though only the masked ~15% give a loss. The recipe is pre-LN (the config's
# norm_position) at rates above post-LN BERT's: under post-LN at 5e-4 to 1e-3 and batches of 64 a
# short run never leaves the "frequent words" plateau (docs/benchmarks.md), and half the batch
# gives twice the updates a minute, which is what leaving it takes.
ENCODER_LADDER: tuple[Rung, ...] = (
    Rung("2x128", 2, 128, 2, 128, 32, 2e-3),
    Rung("4x128", 4, 128, 2, 128, 32, 2e-3),
    Rung("4x256", 4, 256, 4, 128, 32, 1e-3),
)
LADDERS: dict[str, tuple[Rung, ...] | tuple[TranslationRung, ...]] = {
    "decoder": DECODER_LADDER, "encoder-decoder": ENCODER_DECODER_LADDER, "encoder": ENCODER_LADDER}
