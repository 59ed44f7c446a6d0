"""Export the encoder family (BERT-style) to ONNX, for onnxruntime and every runtime that reads ONNX.

One graph takes `input_ids` and `attention_mask` (and `token_type_ids` when the model has
segments), with dynamic batch and length axes, and returns three outputs:
- `logits`: the masked-LM logits (B, T, V), or a classifier's class logits (B, C);
- `hidden`: the last layer's states (B, T, D);
- `embeddings`: mean-pooled, L2-normalised sentence vectors (B, D), as `nanoformer embed`.
The graph is traced with torch's TorchScript-based exporter (the model's input checks are Python
and run once, at export), and checked against onnxruntime by tests/test_interop_onnx.py.

The decoder and encoder-decoder families are refused: an exact export needs an explicit KV-cache
interface (inputs and outputs for every layer's keys and values), which is not built yet.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from nanoformer.errors import UserError
from nanoformer.models.encoder import mean_pool
from nanoformer.quantize import refuse_quantized

OPSET = 18


class EncoderGraph(nn.Module):
    """The encoder's three outputs from one pass, as the ONNX graph computes them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None):
        model = self.model
        hidden = model.encode(input_ids, attention_mask, token_type_ids)
        if model.is_classifier:
            logits = model.classifier(hidden, attention_mask)
        else:
            logits = model.mlm_head(hidden)
        return logits, hidden, torch.nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)


def export_encoder(model: nn.Module, path: Path) -> Path:
    """Write `model` (an EncoderModel) as an ONNX graph at `path`."""
    config = model.config
    if config.arch != "encoder":
        raise UserError(f"export-onnx: arch {config.arch!r} needs an explicit KV-cache interface to export exactly, "
                        "which is not built; export the encoder family, or use export-ct2 for decoders and translators")
    refuse_quantized(config, "export-onnx")
    model = model.float().eval()
    segments = config.type_vocab_size > 0
    ids = torch.full((2, 8), config.pad_id if config.pad_id is not None else 0, dtype=torch.long)
    ids[:, :6] = torch.arange(6) % config.vocab_size
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0  # a padded row, so that the traced graph keeps the masking
    inputs = (ids, mask) + ((torch.zeros_like(ids),) if segments else ())
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if segments else [])
    axes = {name: {0: "batch", 1: "length"} for name in names}
    axes.update({"hidden": {0: "batch", 1: "length"}, "embeddings": {0: "batch"}})
    axes["logits"] = {0: "batch"} if model.is_classifier else {0: "batch", 1: "length"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side checks, which run once here
        torch.onnx.export(EncoderGraph(model), inputs, str(path), input_names=names,
                          output_names=["logits", "hidden", "embeddings"], dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    return path


def export_onnx(checkpoint: str | Path, out: str | Path, force: bool = False) -> Path:
    """A folder with model.onnx, the tokenizer and the config of an encoder checkpoint."""
    from nanoformer.api import load
    from nanoformer.training.checkpoint import resolve_checkpoint

    out = Path(out)
    if out.exists() and not (force and out.is_dir()):
        raise UserError(f"{out}: already exists; choose another folder or pass --force to replace it")
    model, _ = load(checkpoint)
    folder = resolve_checkpoint(checkpoint)
    if model.config.arch != "encoder":
        export_encoder(model, out / "model.onnx")  # raises the one-line refusal
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    export_encoder(model, out / "model.onnx")
    for name in ("tokenizer.json", "config.json"):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out / name)
    return out
