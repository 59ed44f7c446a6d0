"""What the three converters share: renaming rules, activation names, checks, finishing touches.

A converter is a list of `Rule`s, one per tensor of our state dict: which Hugging Face tensor(s)
it comes from and how (copied, transposed, concatenated, flattened). The same list runs in both
directions, so import and export cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from nanoformer.errors import UserError

# Hugging Face activation names <-> ours. "gelu" is the exact (erf) GELU in both; GPT-2's
# "gelu_new" is the tanh approximation; Marian calls SiLU "swish".
HF_ACTIVATIONS = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "silu": "silu",
    "swish": "silu",
}


@dataclass(frozen=True)
class Rule:
    """Our tensor `ours` is made from the Hugging Face tensor(s) `theirs` by `op`:

    - "copy": the same tensor;
    - "transpose": GPT-2's Conv1D stores (in, out), nn.Linear stores (out, in);
    - "concat": separate q / k / v (or k / v) projections stacked along the output dimension;
    - "flatten": Marian's final_logits_bias (1, V) is our output bias (V,).
    """

    ours: str
    theirs: tuple[str, ...]
    op: str = "copy"


def rule(ours: str, *theirs: str, op: str = "copy") -> Rule:
    return Rule(ours, tuple(theirs), op)


def linear(ours: str, theirs: str, bias: bool = True) -> list[Rule]:
    """The weight (and bias) of one nn.Linear, same layout on both sides."""
    rules = [rule(f"{ours}.weight", f"{theirs}.weight")]
    if bias:
        rules.append(rule(f"{ours}.bias", f"{theirs}.bias"))
    return rules


def fused(ours: str, theirs: Iterable[str]) -> list[Rule]:
    """One fused projection of ours (qkv_proj, kv_proj) from separate Hugging Face projections."""
    theirs = tuple(theirs)
    return [
        rule(f"{ours}.weight", *(f"{t}.weight" for t in theirs), op="concat"),
        rule(f"{ours}.bias", *(f"{t}.bias" for t in theirs), op="concat"),
    ]


def layer_norm(ours: str, theirs: str) -> list[Rule]:
    return linear(ours, theirs)


def convert_from_hf(rules: list[Rule], hf_state: dict[str, Tensor]) -> tuple[dict[str, Tensor], set[str]]:
    """(our state dict, the Hugging Face keys it used)."""
    ours: dict[str, Tensor] = {}
    used: set[str] = set()
    for r in rules:
        missing = [key for key in r.theirs if key not in hf_state]
        if missing:
            raise UserError(f"the Hugging Face model has no tensor {missing[0]!r}; is it the architecture its config says?")
        parts = [hf_state[key] for key in r.theirs]
        used.update(r.theirs)
        if r.op == "copy":
            tensor = parts[0]
        elif r.op == "transpose":
            tensor = parts[0].t()
        elif r.op == "concat":
            tensor = torch.cat(parts, dim=0)
        elif r.op == "flatten":
            tensor = parts[0].reshape(-1)
        else:  # pragma: no cover - a typo in a rule table
            raise AssertionError(f"unknown rule op {r.op!r}")
        ours[r.ours] = tensor.detach().clone().contiguous()
    return ours, used


def convert_to_hf(rules: list[Rule], our_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The Hugging Face tensors named in `rules`, made from our state dict (the inverse of convert_from_hf)."""
    theirs: dict[str, Tensor] = {}
    for r in rules:
        tensor = our_state[r.ours].detach()
        if r.op == "copy":
            parts = [tensor]
        elif r.op == "transpose":
            parts = [tensor.t()]
        elif r.op == "concat":
            parts = list(tensor.chunk(len(r.theirs), dim=0))
        elif r.op == "flatten":
            parts = [tensor.reshape(1, -1)]
        else:  # pragma: no cover
            raise AssertionError(f"unknown rule op {r.op!r}")
        for key, part in zip(r.theirs, parts):
            theirs[key] = part.clone().contiguous()
    return theirs


def fill_aliases(theirs: dict[str, Tensor], aliases: dict[str, str]) -> None:
    """Hugging Face lists tied tensors under every name (lm_head.weight and wte.weight): fill the copies."""
    for key, source in aliases.items():
        theirs[key] = theirs[source].clone()


def check_unused(hf_state: dict[str, Tensor], used: set[str], ignorable: Iterable[str], what: str) -> None:
    """Refuse to drop Hugging Face weights silently: every tensor is used or known to be redundant."""
    ignorable = tuple(ignorable)
    left = sorted(k for k in hf_state if k not in used and not any(k == i or k.startswith(i) for i in ignorable))
    if left:
        raise UserError(
            f"{what} has weights nanoformer cannot represent ({', '.join(left[:4])}{', ...' if len(left) > 4 else ''}); "
            f"only the standard architecture converts"
        )


def load_exact(model: nn.Module, state: dict[str, Tensor], what: str) -> None:
    """load_state_dict(strict=True) with a message that names the first missing/unexpected key and shape."""
    target = model.state_dict()
    for key, tensor in state.items():
        if key in target and tuple(target[key].shape) != tuple(tensor.shape):
            raise UserError(f"{what}: tensor {key!r} has shape {tuple(tensor.shape)}, expected {tuple(target[key].shape)}")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:  # a converter bug, not a user mistake
        raise RuntimeError(f"{what}: missing {result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}")


def activation_from_hf(name: Any, field: str) -> str:
    if not isinstance(name, str) or name not in HF_ACTIVATIONS:
        raise UserError(f"{field} = {name!r} has no nanoformer equivalent; supported: {', '.join(HF_ACTIVATIONS)}")
    return HF_ACTIVATIONS[name]


def activation_to_hf(name: str, silu_name: str = "silu") -> str:
    names = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new", "silu": silu_name}
    if name not in names:
        raise UserError(f"activation {name!r} has no Hugging Face equivalent in this architecture; use one of {list(names)}")
    return names[name]


def special_id(value: Any, vocab_size: int) -> int | None:
    """A special token id from a Hugging Face config: the first of a list; None when outside the vocabulary
    (small test configs keep GPT-2's 50256 with a 100-token vocabulary)."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None or not 0 <= int(value) < vocab_size:
        return None
    return int(value)


def require(config: Any, target: str, expected: dict[str, Any]) -> None:
    """Raise one UserError listing every field of our config that the target architecture cannot express."""
    wrong = [
        f"{name} = {getattr(config, name)!r} (needs {want!r})"
        for name, want in expected.items()
        if getattr(config, name) != want
    ]
    if wrong:
        raise UserError(f"cannot export to {target}: {'; '.join(wrong)}; only a model of {target}'s shape converts")


def finish(converted: nn.Module, source: nn.Module) -> nn.Module:
    """Give the converted model the source's dtype, device and train/eval mode."""
    reference = next(source.parameters(), None)
    if reference is not None:
        converted = converted.to(device=reference.device, dtype=reference.dtype)
    return converted.train(source.training)


def need_transformers() -> Any:
    try:
        import transformers
    except ImportError as error:  # pragma: no cover - exercised only without the package
        raise UserError("Hugging Face conversion needs the `transformers` package; pip install transformers") from error
    return transformers
