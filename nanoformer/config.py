"""One `ModelConfig` for all three families of the study note, and named presets.

arch = "encoder-decoder" (the paper's translation model), "encoder" (BERT) or "decoder" (GPT).
Every architectural variant is a field, so a preset is just a set of values (as litgpt does) and
weights can be exchanged with Hugging Face models of the same shape.

Which normalisation order each preset uses (a frequent source of confusion): the paper, Marian
and BERT normalise *after* each residual sum (post-LN, x = LN(x + Sublayer(x))); GPT-2 and most
modern models normalise *before* each sublayer (pre-LN, x = x + Sublayer(LN(x))) and add a final
norm after the stack.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The choices of each switch. The layers import these, so config stays the bottom floor.
ARCHS = ("encoder-decoder", "encoder", "decoder")
INITS = ("xavier", "gpt2", "bert")
ATTENTION_IMPLS = ("sdpa", "math")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu")
NORMS = ("layernorm", "rmsnorm")
POSITIONAL_TYPES = ("sinusoidal", "learned", "rope", "alibi", "none")
POOLINGS = ("cls", "mean")
SINUSOIDAL_LAYOUTS = ("interleaved", "half")


@dataclass
class ModelConfig:
    arch: str = "decoder"
    vocab_size: int = 256
    # Target vocabulary of an encoder-decoder model with separate vocabularies (None: same as source).
    target_vocab_size: int | None = None
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    # Per-stack layer counts of an encoder-decoder model (None: n_layers).
    n_encoder_layers: int | None = None
    n_decoder_layers: int | None = None
    d_ff: int = 512
    max_positions: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "gelu"
    bias: bool = True
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"
    # Norm after the last layer of each stack (None: yes for pre-LN, no for post-LN).
    final_norm: bool | None = None
    # LayerNorm right after the embeddings (BERT).
    embedding_norm: bool = False
    positional: str = "learned"
    sinusoidal_layout: str = "interleaved"
    rope_base: float = 10000.0
    # Multiply token embeddings by √d_model (the paper, Marian), so they are not drowned by positions.
    scale_embeddings: bool = False
    # Output projection shares the (target) token embedding matrix.
    tie_embeddings: bool = True
    # Encoder-decoder: source and target share one embedding matrix (needs one joint vocabulary).
    share_embeddings: bool = False
    # Learned bias on the output logits (Marian's final_logits_bias, BERT's MLM decoder bias).
    output_bias: bool = False
    # Segment embeddings for sentence pairs (BERT: 2); 0 = none.
    type_vocab_size: int = 0
    init: str = "gpt2"
    init_std: float = 0.02
    attention_impl: str = "sdpa"
    pad_id: int | None = 0
    unk_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    mask_id: int | None = None
    cls_id: int | None = None
    sep_id: int | None = None
    # First token fed to the decoder of an encoder-decoder model (None: bos_id; Marian uses pad).
    decoder_start_id: int | None = None
    # Encoder classifiers (BERT fine-tuning): num_labels > 0 replaces the masked-LM head by a
    # classification head over `classifier_pooling` ("cls": BERT's pooler, dense + tanh on the
    # [CLS] state; "mean": the mean of the real tokens' states). `labels` names the classes.
    num_labels: int = 0
    labels: list[str] | None = None
    classifier_pooling: str = "cls"
    # Inference-only weights (nanoformer/quantize.py): "int8" = linear layers and token tables stored
    # as int8 with a scale per row, "int8-linear" = the linear layers only. None = the float
    # weights a model trains with.
    quantization: str | None = None

    def __post_init__(self) -> None:
        self.validate()

    # -- derived sizes -------------------------------------------------------------------------
    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def encoder_layers(self) -> int:
        return self.n_layers if self.n_encoder_layers is None else self.n_encoder_layers

    @property
    def decoder_layers(self) -> int:
        return self.n_layers if self.n_decoder_layers is None else self.n_decoder_layers

    @property
    def tgt_vocab_size(self) -> int:
        return self.vocab_size if self.target_vocab_size is None else self.target_vocab_size

    @property
    def use_final_norm(self) -> bool:
        return self.norm_position == "pre" if self.final_norm is None else self.final_norm

    @property
    def start_id(self) -> int | None:
        return self.bos_id if self.decoder_start_id is None else self.decoder_start_id

    # -- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the field, the value given and what is expected."""
        choices = {
            "arch": ARCHS,
            "activation": ACTIVATIONS,
            "norm": NORMS,
            "norm_position": ("pre", "post"),
            "positional": POSITIONAL_TYPES,
            "sinusoidal_layout": SINUSOIDAL_LAYOUTS,
            "init": INITS,
            "attention_impl": ATTENTION_IMPLS,
            "classifier_pooling": POOLINGS,
            "quantization": (None, "int8", "int8-linear"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} = {getattr(self, name)!r}; expected one of {list(allowed)}")
        positive = ["vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_positions"]
        optional_positive = ["target_vocab_size", "n_encoder_layers", "n_decoder_layers"]
        for name in positive + optional_positive:
            value = getattr(self, name)
            if value is None and name in optional_positive:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} = {value!r}; expected a positive integer")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"ModelConfig.d_model = {self.d_model} is not divisible by n_heads = {self.n_heads}; "
                f"choose d_model a multiple of n_heads (e.g. {self.n_heads * max(1, round(self.d_model / self.n_heads))})"
            )
        if self.positional == "rope" and self.d_head % 2 != 0:
            raise ValueError(f"ModelConfig.positional = 'rope' needs an even head size, got d_model/n_heads = {self.d_head}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ModelConfig.{name} = {value!r}; expected a probability in [0, 1)")
        if self.type_vocab_size < 0:
            raise ValueError(f"ModelConfig.type_vocab_size = {self.type_vocab_size}; expected >= 0")
        if self.share_embeddings and self.arch != "encoder-decoder":
            raise ValueError("ModelConfig.share_embeddings only applies to arch = 'encoder-decoder'")
        if self.share_embeddings and self.tgt_vocab_size != self.vocab_size:
            raise ValueError(
                f"ModelConfig.share_embeddings needs one joint vocabulary, but vocab_size = {self.vocab_size} "
                f"and target_vocab_size = {self.target_vocab_size}; drop target_vocab_size or set share_embeddings = false"
            )
        if self.type_vocab_size and self.arch == "decoder":
            raise ValueError("ModelConfig.type_vocab_size (segment embeddings) is for encoders; set it to 0")
        if not isinstance(self.num_labels, int) or isinstance(self.num_labels, bool) or self.num_labels < 0:
            raise ValueError(f"ModelConfig.num_labels = {self.num_labels!r}; expected 0 (no classifier) or at least 2")
        if self.num_labels and (self.arch != "encoder" or self.num_labels < 2):
            raise ValueError(f"ModelConfig.num_labels = {self.num_labels} needs arch = 'encoder' and at least 2 classes")
        if self.labels is not None:
            if isinstance(self.labels, tuple):
                self.labels = list(self.labels)
            if not isinstance(self.labels, list) or not all(isinstance(x, str) for x in self.labels):
                raise ValueError(f"ModelConfig.labels = {self.labels!r}; expected a list of label names")
            if len(self.labels) != self.num_labels or len(set(self.labels)) != len(self.labels):
                raise ValueError(
                    f"ModelConfig.labels has {len(self.labels)} names ({len(set(self.labels))} distinct) but "
                    f"num_labels = {self.num_labels}; give one distinct name per class"
                )
        for name in ("pad_id", "unk_id", "bos_id", "eos_id", "mask_id", "cls_id", "sep_id", "decoder_start_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < max(self.vocab_size, self.tgt_vocab_size):
                raise ValueError(f"ModelConfig.{name} = {value} is outside the vocabulary [0, {self.vocab_size})")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown ModelConfig key(s) {unknown}; valid keys are: {', '.join(sorted(valid))}")
        return cls(**values)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})


def _paper(d_model: int, n_heads: int, d_ff: int, dropout: float) -> dict[str, Any]:
    """The paper's Table 3 shapes: post-LN, sinusoidal positions, ReLU, shared 37k BPE vocabulary."""
    return dict(
        arch="encoder-decoder", vocab_size=37000, d_model=d_model, n_heads=n_heads, n_layers=6, d_ff=d_ff,
        max_positions=1024, dropout=dropout, activation="relu", norm_position="post", positional="sinusoidal",
        scale_embeddings=True, tie_embeddings=True, share_embeddings=True, init="xavier",
        pad_id=0, unk_id=1, bos_id=2, eos_id=3,
    )


def _bert(n_layers: int, d_model: int, n_heads: int) -> dict[str, Any]:
    """BERT: post-LN encoder, learned positions and segments, GELU, LayerNorm after embeddings."""
    return dict(
        arch="encoder", vocab_size=30522, d_model=d_model, n_heads=n_heads, n_layers=n_layers,
        d_ff=4 * d_model, max_positions=512, dropout=0.1, attention_dropout=0.1, activation="gelu",
        norm_eps=1e-12, norm_position="post", embedding_norm=True, positional="learned",
        tie_embeddings=True, output_bias=True, type_vocab_size=2, init="bert",
        pad_id=0, unk_id=100, cls_id=101, sep_id=102, mask_id=103,
    )


PRESETS: dict[str, dict[str, Any]] = {
    "transformer-base": _paper(d_model=512, n_heads=8, d_ff=2048, dropout=0.1),
    "transformer-big": _paper(d_model=1024, n_heads=16, d_ff=4096, dropout=0.3),
    "gpt2-small": dict(
        arch="decoder", vocab_size=50257, d_model=768, n_heads=12, n_layers=12, d_ff=3072, max_positions=1024,
        dropout=0.1, attention_dropout=0.1, activation="gelu_tanh", norm_position="pre", positional="learned",
        tie_embeddings=True, init="gpt2", pad_id=None, bos_id=50256, eos_id=50256,
    ),
    "bert-base": _bert(n_layers=12, d_model=768, n_heads=12),
    "bert-mini": _bert(n_layers=4, d_model=256, n_heads=4),
    "marian-base": dict(
        arch="encoder-decoder", vocab_size=58101, d_model=512, n_heads=8, n_layers=6, d_ff=2048,
        max_positions=512, dropout=0.1, activation="silu", norm_position="post", positional="sinusoidal",
        sinusoidal_layout="half", scale_embeddings=True, tie_embeddings=True, share_embeddings=True,
        output_bias=True, init="xavier", pad_id=58100, unk_id=1, eos_id=0, decoder_start_id=58100,
    ),
    # Small shapes that train in minutes on a laptop CPU.
    "tiny-decoder": dict(
        arch="decoder", vocab_size=256, d_model=128, n_heads=4, n_layers=4, d_ff=512, max_positions=256,
        dropout=0.0, activation="gelu", norm_position="pre", positional="learned", init="gpt2", pad_id=0,
    ),
    "tiny-encoder": dict(
        arch="encoder", vocab_size=256, d_model=128, n_heads=4, n_layers=4, d_ff=512, max_positions=256,
        dropout=0.1, activation="gelu", norm_eps=1e-12, norm_position="post", embedding_norm=True,
        positional="learned", output_bias=True, type_vocab_size=2, init="bert", pad_id=0,
    ),
    "tiny-seq2seq": dict(
        arch="encoder-decoder", vocab_size=256, d_model=128, n_heads=4, n_layers=2, d_ff=512,
        max_positions=256, dropout=0.1, activation="relu", norm_position="post", positional="sinusoidal",
        scale_embeddings=True, share_embeddings=True, init="xavier", pad_id=0, bos_id=2, eos_id=3,
    ),
    # The ~9M-parameter shape translation tutorials train on Multi30k (d 256, 3+3 layers, 8k BPE).
    "seq2seq-small": dict(
        arch="encoder-decoder", vocab_size=8000, d_model=256, n_heads=4, n_layers=3, d_ff=1024,
        max_positions=256, dropout=0.1, activation="relu", norm_position="pre", positional="sinusoidal",
        scale_embeddings=True, share_embeddings=True, init="xavier", pad_id=0, bos_id=2, eos_id=3,
    ),
}


def closed_form_parameter_count(config: ModelConfig) -> int:
    """Parameter count from the shapes alone, without building the model (used by `info` and tests)."""
    d, f, bias = config.d_model, config.d_ff, int(config.bias)
    norm = d * (2 if config.norm == "layernorm" and config.bias else 1)
    attention = 4 * d * d + 4 * d * bias
    n_ffn_in = 2 if config.activation == "swiglu" else 1
    ffn = n_ffn_in * (d * f + f * bias) + f * d + d * bias
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = attention + ffn + 2 * norm
    cross_layer = 2 * attention + ffn + 3 * norm
    final = norm if config.use_final_norm else 0
    positions = config.max_positions * d if config.positional == "learned" else 0

    def embeddings(vocab: int, types: int = config.type_vocab_size) -> int:
        return vocab * d + positions + types * d + (norm if config.embedding_norm else 0)

    def head(vocab: int) -> int:
        return (0 if config.tie_embeddings else vocab * d) + (vocab if config.output_bias else 0)

    if config.arch == "decoder":
        return embeddings(config.vocab_size) + config.n_layers * decoder_layer + final + head(config.vocab_size)
    if config.arch == "encoder":
        body = embeddings(config.vocab_size) + config.n_layers * encoder_layer + final
        if config.num_labels:  # classification head instead of the masked-LM head
            pooler = d * d + d if config.classifier_pooling == "cls" else 0
            return body + pooler + d * config.num_labels + config.num_labels
        mlm_transform = d * d + d + norm
        return body + mlm_transform + head(config.vocab_size)
    source = embeddings(config.vocab_size)
    target = embeddings(0 if config.share_embeddings else config.tgt_vocab_size, types=0)
    stacks = config.encoder_layers * encoder_layer + config.decoder_layers * cross_layer + 2 * final
    return source + target + stacks + head(config.tgt_vocab_size)


def describe_size(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"

