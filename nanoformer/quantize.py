"""Int8 inference: a trained model's linear layers (and token embeddings) with int8 weights.

`quantize(model)` swaps every linear layer, the output layer included, for an `Int8Linear`
(kernels/int8.py: one symmetric scale per weight row, activations quantized on the fly, torch's
x86 int8 GEMM; a small layer at a decoding step's few rows multiplies in float32 on the same int8
values) and, with `embeddings=True` (the default), every token table for an
`Int8Embedding`. Norms, positions and biases stay float32. The model is then for inference only:
its config says `quantization = "int8"`, training and `export-hf` refuse it, and a checkpoint of
it (`nanoformer quantize RUN OUT`) is ordinary safetensors that `nanoformer.load` rebuilds.
"""

from __future__ import annotations

import dataclasses
import warnings

from torch import nn

from nanoformer.errors import UserError
from nanoformer.kernels.int8 import Int8Embedding, Int8Linear, int8_available


def quantize(model: nn.Module, embeddings: bool = True, strict: bool = False) -> nn.Module:
    """The model with int8 weights, in place (and returned), in eval mode.

    Where torch has no x86 int8 GEMM (e.g. ARM builds), the model stays float32 with a warning,
    or `strict=True` raises.
    """
    if not int8_available():
        message = "int8: this torch build has no x86 int8 kernels (fbgemm); the model stays float32"
        if strict:
            raise UserError(message)
        warnings.warn(message, stacklevel=2)
        return model
    if model.config.quantization:
        return model
    _swap(model, embeddings, empty=False, swapped={})
    model.config = dataclasses.replace(model.config, quantization="int8" if embeddings else "int8-linear")
    return model.eval()


def quantized_structure(model: nn.Module) -> nn.Module:
    """A model built from an int8 checkpoint's config, with its int8 layers in place (empty), ready to load it."""
    _swap(model, embeddings=model.config.quantization == "int8", empty=True, swapped={})
    return model.eval()


def _swap(module: nn.Module, embeddings: bool, empty: bool, swapped: dict[int, nn.Module],
          rows: dict[int, tuple] | None = None) -> None:
    """Replace linear layers (and token tables) below `module`. What the float model shares stays
    shared: a module with two parents (the source and target tables of a joint vocabulary) is
    replaced once, and a weight used twice (an output layer tied to the token table) is stored
    once, as one int8 matrix and its scales."""
    rows = {} if rows is None else rows  # id of a float weight -> its (int8 rows, scales)
    for name, child in module.named_children():
        if id(child) in swapped:
            setattr(module, name, swapped[id(child)])
            continue
        if isinstance(child, nn.Linear):
            new = (Int8Linear(child.in_features, child.out_features, child.bias is not None) if empty
                   else Int8Linear.from_linear(child))
        elif isinstance(child, nn.Embedding) and embeddings and name == "tokens":
            new = Int8Embedding(child.num_embeddings, child.embedding_dim) if empty else Int8Embedding.from_embedding(child)
        else:
            _swap(child, embeddings, empty, swapped, rows)
            continue
        if id(child.weight) in rows:  # quantize_rows of the same weight: the same values, kept once
            new.weight_int8, new.weight_scale = rows[id(child.weight)]
        else:
            rows[id(child.weight)] = (new.weight_int8, new.weight_scale)
        swapped[id(child)] = new
        setattr(module, name, new)


def refuse_quantized(config, what: str) -> None:
    """One line for a quantized checkpoint given to something that needs float weights."""
    if getattr(config, "quantization", None):
        raise UserError(f"{what}: this checkpoint holds {config.quantization} weights for inference only; "
                        "give it the float checkpoint it was quantized from")
