"""The models a server holds: each loaded once, named, and sorted by what it can do.

A model's family decides its routes: a GPT-style decoder completes text, an encoder-decoder
translates, a BERT-style encoder fills masks and embeds (and classifies once fine-tuned). Every
family answers `/v1/attention`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from nanoformer.errors import UserError

FAMILIES = {"decoder": "generator", "encoder-decoder": "translator", "encoder": "encoder"}


@dataclass
class ServedModel:
    name: str
    path: str
    model: nn.Module
    tokenizer: object
    source_tokenizer: object  # translators with separate vocabularies; else the tokenizer
    # The checkpoint's decoding defaults (an imported Marian model's beam, limits, banned and forced
    # tokens: interop/generation.py); a request's own fields win.
    generation: dict = field(default_factory=dict)

    @property
    def arch(self) -> str:
        return self.model.config.arch

    @property
    def family(self) -> str:
        return FAMILIES[self.arch]

    @property
    def context(self) -> int:
        return self.model.config.max_positions

    def routes(self) -> list[str]:
        """The API routes this model answers."""
        if self.arch == "decoder":
            routes = ["/v1/completions"]
        elif self.arch == "encoder-decoder":
            routes = ["/v1/translate"]
        else:
            routes = ["/v1/embeddings"]
            if getattr(self.model, "mlm_head", None) is not None:
                routes.append("/v1/fill-mask")
            if getattr(self.model, "is_classifier", False):
                routes.append("/v1/classify")
        return routes + ["/v1/attention"]

    def describe(self) -> dict:
        """The model as `GET /v1/models` lists it (OpenAI's fields, then ours)."""
        config = self.model.config
        info = {"id": self.name, "object": "model", "created": 0, "owned_by": "nanoformer",
                "family": self.family, "arch": self.arch, "context": self.context,
                "quantization": getattr(config, "quantization", None) or "float32", "routes": self.routes()}
        if getattr(self.model, "is_classifier", False):
            info["labels"] = config.labels or [str(i) for i in range(config.num_labels)]
        return info


def load_models(paths: list[str], names: list[str] | None = None, int8: bool = False,
                device: str = "cpu", verify: bool = True) -> list[ServedModel]:
    """Load each checkpoint or run folder; a model is named by its folder unless `names` says otherwise."""
    from nanoformer.api import load
    from nanoformer.recipes.translation import load_source_tokenizer
    from nanoformer.training.checkpoint import read_config, resolve_checkpoint

    names = list(names or [])
    if len(names) > len(paths):
        raise UserError(f"{len(names)} --name options for {len(paths)} model(s); give at most one name per model")
    served: list[ServedModel] = []
    for index, path in enumerate(paths):
        name = names[index] if index < len(names) else Path(path).resolve().name
        if any(m.name == name for m in served):
            raise UserError(f"two models are named {name!r} ({served[[m.name for m in served].index(name)].path} and "
                            f"{path}); name them apart with --name")
        try:
            model, tokenizer = load(path, device=device, quantize="int8" if int8 else None, verify=verify)
        except UserError as error:
            raise UserError(f"{path}: not a checkpoint that can be served ({error})") from None
        if tokenizer is None:
            raise UserError(f"{path}: the checkpoint has no tokenizer.json; a server needs one to read text")
        source = load_source_tokenizer(resolve_checkpoint(path), tokenizer) if model.config.arch == "encoder-decoder" \
            else tokenizer
        generation = read_config(resolve_checkpoint(path)).get("generation") or {}
        served.append(ServedModel(name, str(path), model, tokenizer, source, generation))
    if not served:
        raise UserError("no model to serve; give one or more run or checkpoint folders")
    return served
