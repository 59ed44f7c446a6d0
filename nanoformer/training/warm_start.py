"""A translator warm-started from pre-trained parts: a BERT-style encoder and a GPT-style decoder.

Rothe, Narayan & Severyn (2020), "Leveraging Pre-trained Checkpoints for Sequence Generation
Tasks": the encoder of a sequence-to-sequence model starts from a masked-LM encoder, its decoder
from a language model, and only the cross-attention (which neither part has) starts new. This is
the study note's pre-training put to work: monolingual text is plentiful, parallel text is not.

In a translation config:

```toml
[model]
init_encoder = "runs/ko-en/encoder"   # an encoder run (masked LM or classifier): the source side
init_decoder = "runs/ko-en/decoder"   # a decoder run (next-token LM): the target side
cross_attention_init = "random"       # or "zero" (the decoder starts as the LM), or "self"
```

Each part fixes the shape of its side and brings its tokenizer: source and target keep their own
vocabularies. What a translator has only once (width, heads, FFN size, norm order, positions)
must agree between the parts and with the config; a mismatch is a one-line error naming both.
Copied: the encoder stack and its embeddings (segment 0's vector folded into the token vectors,
exact since every source token is segment 0); the decoder stack, its embeddings and output layer.
Not copied: the masked-LM head. New: every cross-attention sublayer and its norm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from nanoformer.config import ModelConfig
from nanoformer.errors import UserError
from nanoformer.training.checkpoint import read_config, resolve_init_from

# The [model] keys that warm-start a translator from pre-trained parts.
WARM_START_KEYS = ("init_encoder", "init_decoder", "cross_attention_init")
CROSS_ATTENTION_INITS = ("random", "zero", "self")

# Fields a translator has once for both stacks: the parts must agree on them.
SHARED_FIELDS = ("d_model", "n_heads", "d_ff", "activation", "bias", "norm", "norm_eps", "norm_position",
                 "final_norm", "embedding_norm", "positional", "sinusoidal_layout", "rope_base", "scale_embeddings")
ROLE_ARCH = {"init_encoder": "encoder", "init_decoder": "decoder"}
ROLE_TAKES = {"init_encoder": "an encoder run (BERT-style, e.g. nanoformer train configs/bert_mlm_ko.toml)",
              "init_decoder": "a decoder run (GPT-style, e.g. nanoformer train configs/gpt_bpe_gutenberg.toml)"}


class PretrainedPart:
    """One pre-trained run named by init_encoder or init_decoder: its folder and model config."""

    def __init__(self, role: str, value: Any, config_file: Path | None, where: str) -> None:
        self.role = role
        self.folder = resolve_init_from(value, config_file, key=role)
        saved = read_config(self.folder)
        self.values: dict[str, Any] = dict(saved.get("model", saved))
        arch = self.values.get("arch")
        if arch != ROLE_ARCH[role]:
            raise UserError(f"{where}: [model] {role} = {str(value)!r} is a {arch!r} run; {role} takes "
                            f"{ROLE_TAKES[role]}")
        if self.values.get("quantization"):
            raise UserError(f"{where}: [model] {role} = {str(value)!r} holds {self.values['quantization']} weights for "
                            "inference only; name the float run it was quantized from")
        self.config = ModelConfig.from_dict(self.values)

    def shared(self, name: str) -> Any:
        return self.config.use_final_norm if name == "final_norm" else getattr(self.config, name)

    def __str__(self) -> str:
        return f"{self.role} {str(self.folder)!r}"


def warm_start_values(model_values: dict[str, Any], config_file: Path | None,
                      where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """[model] values with the pre-trained parts' shapes filled in, and the warm-start record.

    Returns (values to build the translator's ModelConfig from, {"init_encoder": folder, ...}).
    A key the config gives that a part fixes must have the part's value.
    """
    values = dict(model_values)
    named = {key: values.pop(key) for key in WARM_START_KEYS if key in values}
    cross_init = named.pop("cross_attention_init", "random")
    if cross_init not in CROSS_ATTENTION_INITS:
        raise UserError(f"{where}: [model] cross_attention_init = {cross_init!r}; expected one of "
                        f"{list(CROSS_ATTENTION_INITS)}")
    named = {key: value for key, value in named.items() if value not in ("", "none")}
    if not named:
        return values, {}
    if values.get("arch", "encoder-decoder") != "encoder-decoder":
        raise UserError(f"{where}: [model] {', '.join(named)} warm-start a translator; it needs "
                        f"arch = 'encoder-decoder', not {values['arch']!r}")
    if "preset" in values:
        raise UserError(f"{where}: [model] preset = {values['preset']!r} and {', '.join(named)} both give the shape; "
                        "remove the preset (the pre-trained parts fix it)")
    if "init_from" in values:
        raise UserError(f"{where}: [model] init_from and {', '.join(named)} both say where the weights come from; "
                        "keep one")
    parts = [PretrainedPart(role, value, config_file, where) for role, value in named.items()]
    if len(parts) == 2:
        for name in SHARED_FIELDS:
            a, b = parts[0].shared(name), parts[1].shared(name)
            if a != b:
                raise UserError(f"{parts[0]} has {name} = {a!r} but {parts[1]} has {name} = {b!r}; a translator has "
                                f"one {name}: pre-train both parts with the same value")
    fixed: dict[str, tuple[Any, PretrainedPart]] = {}  # field -> (value, the part that fixes it)
    for part in parts:
        fixed.update({name: (part.shared(name), part) for name in SHARED_FIELDS})
        if part.role == "init_encoder":
            fixed["n_encoder_layers"] = (part.config.n_layers, part)
        else:
            fixed["n_decoder_layers"] = (part.config.n_layers, part)
            fixed["tie_embeddings"] = (part.config.tie_embeddings, part)
            fixed["output_bias"] = (part.config.output_bias, part)
    for name, (value, part) in fixed.items():
        given = values.get(name)
        if name in values and given != value:
            raise UserError(f"{where}: [model] {name} = {given!r}, but {part} has {name} = {value!r} (its "
                            f"config.json); remove {name} from [model] or pre-train with {name} = {given!r}")
    values.update({name: value for name, (value, _) in fixed.items()})
    longest = min(part.config.max_positions for part in parts)
    if values.get("max_positions", 0) > longest and values["positional"] == "learned":
        raise UserError(f"{where}: [model] max_positions = {values['max_positions']}, but the pre-trained position "
                        f"tables hold {longest}; lower it to {longest} or less")
    values.setdefault("max_positions", longest)
    values["arch"] = "encoder-decoder"
    record = {part.role: str(part.folder) for part in parts}
    record["cross_attention_init"] = cross_init
    return values, record


# --------------------------------------------------------------------------- the weights


def load_part_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """A pre-trained part's weights, checked against their checksum first."""
    from safetensors.torch import load_file

    from nanoformer.training.checkpoint import MODEL_FILE, verify_files

    verify_files(Path(folder), [MODEL_FILE])
    return load_file(str(Path(folder) / MODEL_FILE))


def _copy(target: nn.Module, state: dict[str, torch.Tensor], prefix: str, leading_rows: bool = False) -> list[str]:
    """Copy state[prefix + name] into each parameter/buffer of `target`; returns the names copied.

    leading_rows: tables (tokens, positions) may differ in length; the rows both have are copied
    (a longer position table gives its first rows; a vocabulary grown by a tag token keeps its new row).
    """
    copied = []
    with torch.no_grad():
        for name, tensor in list(target.named_parameters()) + list(target.named_buffers()):
            key = prefix + name
            if key not in state:
                continue
            source = state[key]
            if leading_rows and source.dim() == tensor.dim() and source.shape[1:] == tensor.shape[1:]:
                rows = min(source.shape[0], tensor.shape[0])
                tensor[:rows].copy_(source[:rows])
            elif source.shape == tensor.shape:
                tensor.copy_(source)
            else:
                raise UserError(f"pre-trained tensor {key!r} has shape {tuple(source.shape)} but the translator's "
                                f"has {tuple(tensor.shape)}; build the translator from the run's config")
            copied.append(key)
    return copied


def _copy_embeddings(target: nn.Module, state: dict[str, torch.Tensor], scale: float) -> list[str]:
    """The embeddings of a part; a segment table's row 0 is folded into the token vectors (exact)."""
    copied = _copy(target, {k: v for k, v in state.items() if not k.startswith("embeddings.token_types.")},
                   "embeddings.", leading_rows=True)
    types = state.get("embeddings.token_types.weight")
    if types is not None:
        with torch.no_grad():
            target.tokens.weight.add_(types[0] / scale)
        copied.append("embeddings.token_types.weight")
    return copied


def warm_start(model: nn.Module, record: dict[str, Any]) -> dict[str, list[str]]:
    """Copy the pre-trained parts named in `record` into the new translator `model`, in place.

    Returns, per part, the names of the pre-trained tensors copied (for the run's record and tests).
    """
    copied: dict[str, list[str]] = {}
    scale = model.src_embeddings.scale
    if "init_encoder" in record:
        state = load_part_state(record["init_encoder"])
        names = _copy_embeddings(model.src_embeddings, state, scale)
        names += _copy(model.encoder, state, "encoder.")
        copied["init_encoder"] = names
    if "init_decoder" in record:
        state = load_part_state(record["init_decoder"])
        names = _copy_embeddings(model.tgt_embeddings, state, scale)
        names += _copy(model.decoder, state, "decoder.")
        if model.lm_head.weight is not model.tgt_embeddings.tokens.weight:
            names += _copy(model.lm_head, state, "lm_head.")
        elif "lm_head.bias" in state and model.lm_head.bias is not None:
            names += _copy(model.lm_head, {"lm_head.bias": state["lm_head.bias"]}, "lm_head.")
        copied["init_decoder"] = names
        init_cross_attention(model, record.get("cross_attention_init", "random"))
    return copied


def init_cross_attention(model: nn.Module, how: str) -> None:
    """The new cross-attention sublayers: as initialised ("random"), silent ("zero"), or copies of
    the self-attention beside them ("self": queries from q, keys and values from k and v)."""
    if how == "random":
        return
    with torch.no_grad():
        for layer in model.decoder.layers:
            cross, self_attn = layer.cross_attn, layer.self_attn
            if how == "zero":
                cross.out_proj.weight.zero_()
                if cross.out_proj.bias is not None:
                    cross.out_proj.bias.zero_()
                continue
            d = cross.d_model
            cross.q_proj.weight.copy_(self_attn.qkv_proj.weight[:d])
            cross.kv_proj.weight.copy_(self_attn.qkv_proj.weight[d:])
            cross.out_proj.weight.copy_(self_attn.out_proj.weight)
            if cross.q_proj.bias is not None:
                cross.q_proj.bias.copy_(self_attn.qkv_proj.bias[:d])
                cross.kv_proj.bias.copy_(self_attn.qkv_proj.bias[d:])
                cross.out_proj.bias.copy_(self_attn.out_proj.bias)
            layer.cross_attn_norm.load_state_dict(layer.self_attn_norm.state_dict())
