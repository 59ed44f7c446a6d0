"""The Transformer's building blocks, shared by all three model families."""

from nanoformer.layers.attention import MultiHeadAttention, scaled_dot_product_attention
from nanoformer.layers.blocks import Decoder, DecoderLayer, Encoder, EncoderLayer, StackOutput
from nanoformer.layers.cache import KVCache, LayerCache
from nanoformer.layers.embedding import Embeddings
from nanoformer.layers.feedforward import FeedForward
from nanoformer.layers.masks import causal_mask, from_blocked_mask, padding_mask
from nanoformer.layers.norms import RMSNorm, make_norm
from nanoformer.layers.positional import (
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    sinusoidal_table,
)

__all__ = [
    "MultiHeadAttention", "scaled_dot_product_attention", "Decoder", "DecoderLayer", "Encoder", "EncoderLayer",
    "StackOutput", "KVCache", "LayerCache", "Embeddings", "FeedForward", "causal_mask", "from_blocked_mask",
    "padding_mask", "RMSNorm", "make_norm", "LearnedPositions", "RotaryEmbedding", "SinusoidalPositions",
    "alibi_bias", "alibi_slopes", "apply_rotary", "sinusoidal_table",
]
