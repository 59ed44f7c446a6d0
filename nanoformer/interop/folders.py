"""Hugging Face model folders <-> nanoformer checkpoint folders (`import-hf`, `export-hf`).

A Hugging Face folder (`config.json` + weights, as `save_pretrained` writes it; a hub id works
too when online) becomes one of our checkpoints, tokenizer included when it has a fast
`tokenizer.json` form; and back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nanoformer.errors import UserError
from nanoformer.interop import from_hf, to_hf
from nanoformer.interop.generation import SECTION, generation_from_hf, generation_to_hf
from nanoformer.quantize import refuse_quantized
from nanoformer.tokenizer import Tokenizer

# model_type in a Hugging Face config.json -> the class whose weights we import.
HF_MODEL_CLASSES = {"gpt2": "GPT2LMHeadModel", "bert": "BertForMaskedLM", "marian": "MarianMTModel"}


def load_hf_model(source: str):
    """The Hugging Face model in folder (or hub id) `source`, as the class we convert from."""
    import transformers

    try:
        hf_config = transformers.AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise UserError(f"{source}: not a Hugging Face model folder or reachable hub id ({str(error).splitlines()[0]})") from None
    class_name = HF_MODEL_CLASSES.get(hf_config.model_type)
    if hf_config.model_type == "bert" and "BertForSequenceClassification" in (hf_config.architectures or []):
        class_name = "BertForSequenceClassification"  # keep its classification head
    if class_name is None:
        raise UserError(f"{source}: model_type {hf_config.model_type!r} is not supported; supported: {', '.join(HF_MODEL_CLASSES)}")
    return getattr(transformers, class_name).from_pretrained(source).eval()


def load_hf_tokenizer(source: str) -> Tokenizer | None:
    """The folder's tokenizer as ours, through its fast (tokenizer.json) form; None if it has none."""
    local = Path(source) / "tokenizer.json"
    if local.is_file():
        return Tokenizer.load(local)
    try:
        import transformers

        fast = transformers.AutoTokenizer.from_pretrained(source, use_fast=True)
    except Exception:  # no tokenizer files, or one that needs packages we do not have
        return None
    backend = getattr(fast, "backend_tokenizer", None)
    return Tokenizer(backend) if backend is not None else None


def import_hf(source: str, out: str | Path) -> Path:
    from nanoformer.training.checkpoint import save_checkpoint

    hf_model = load_hf_model(source)
    model = from_hf(hf_model)
    tokenizer = load_hf_tokenizer(source)
    vocab = getattr(model.config, "tgt_vocab_size", model.config.vocab_size)
    if tokenizer is not None and not 1 < tokenizer.vocab_size <= max(vocab, model.config.vocab_size):
        tokenizer = None  # an empty stand-in that transformers builds for folders without tokenizer files
    config = {"model": model.config.to_dict(), "source": {"hf": str(source)}}
    if model.config.arch == "encoder-decoder":
        config[SECTION] = generation_from_hf(hf_model)
    return save_checkpoint(out, model, config, tokenizer)


def export_hf(checkpoint: str | Path, out: str | Path) -> Path:
    from nanoformer.api import load, resolve_checkpoint
    from nanoformer.training.checkpoint import read_config

    model, tokenizer = load(checkpoint)
    refuse_quantized(model.config, "export-hf")
    out = Path(out)
    folder = resolve_checkpoint(checkpoint)
    hf_model = to_hf(model)
    defaults = read_config(folder).get(SECTION)
    if defaults and model.config.arch == "encoder-decoder":
        generation_to_hf(defaults, hf_model)
    hf_model.save_pretrained(out)
    if tokenizer is not None:
        shutil.copyfile(folder / "tokenizer.json", out / "tokenizer.json")
    return out
