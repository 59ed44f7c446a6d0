"""Gather the attention weights of every layer and head, for any model family.

The weights come from the models' own explicit path: `run(..., need_weights=True)` (GPT, BERT)
and `run_encoder` / `run_decoder` (translation) route every attention through the "math" branch
of `scaled_dot_product_attention`, which returns softmax(QKᵀ/√d_k) as it is used. The default
forward pass (the fused SDPA kernel) is never touched.

What each family shows:
- decoder (GPT): masked self-attention over the text (each token sees itself and the past);
- encoder (BERT): bidirectional self-attention over [CLS] text [SEP];
- encoder-decoder (translation): encoder self-attention over the source, decoder self-attention
  over the target and cross-attention from target (queries) to source (keys). The target is the
  one given, or the model's own greedy translation. Decoder rows are labelled by the decoder's
  input token: the row of "go" is what the model looks at while deciding the word after "go".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from nanoformer.errors import UserError

KINDS = {
    "encoder_self": "encoder self-attention",
    "decoder_self": "decoder self-attention",
    "cross": "cross-attention",
}
WEIGHTS_FILE = "attention.safetensors"
INDEX_FILE = "attention.json"


@dataclass
class AttentionMap:
    """One kind of attention: weights (layers, heads, queries, keys), rows sum to 1."""

    kind: str  # "encoder_self" | "decoder_self" | "cross"
    query_tokens: list[str]
    key_tokens: list[str]
    weights: Tensor
    causal: bool = False

    @property
    def title(self) -> str:
        return KINDS[self.kind]

    @property
    def n_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]


@dataclass
class AttentionResult:
    arch: str
    source: str
    maps: list[AttentionMap]
    target: str | None = None
    target_generated: bool = False
    notes: list[str] = field(default_factory=list)

    def get(self, kind: str) -> AttentionMap:
        for m in self.maps:
            if m.kind == kind:
                return m
        raise KeyError(kind)

    def labels(self) -> list[str]:
        """Every token label shown (for font checks)."""
        return [t for m in self.maps for t in (*m.query_tokens, *m.key_tokens)]


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """A readable label per token: its text, special tokens as written, spaces made visible."""
    specials = set(tokenizer.special_ids().values())
    labels = []
    for i in ids:
        if i in specials:
            label = tokenizer.id_to_token(i) or str(i)
        else:
            label = tokenizer.decode([i], skip_special_tokens=False)
            if not label or "\ufffd" in label:  # a byte piece of a longer character
                label = tokenizer.id_to_token(i) or str(i)
        label = label.replace("\n", "↵").replace("\t", "⇥")
        labels.append(label.strip() or "␣")
    return labels


def _truncate(ids: list[int], limit: int, what: str, notes: list[str]) -> list[int]:
    if len(ids) > limit:
        notes.append(f"the {what} has {len(ids)} tokens, more than the {limit} the model's positions allow; "
                     f"showing the first {limit}")
        return ids[:limit]
    return ids


def _encode(tokenizer, text: str, what: str) -> list[int]:
    ids = tokenizer.encode(text)
    if not ids:
        raise UserError(f"the {what} is empty after tokenisation; give some text")
    return ids


def _stack(weights: list[Tensor]) -> Tensor:
    """Per-layer (1, H, Tq, Tk) -> (L, H, Tq, Tk) float32 on the CPU."""
    return torch.stack([w[0] for w in weights]).detach().float().cpu()


def source_ids(model: nn.Module, tokenizer, text: str, notes: list[str]) -> list[int]:
    """Token ids of a translation source as the model reads it: the text, then eos."""
    config = model.config
    ids = _encode(tokenizer, text, "source text")
    tail = [config.eos_id] if config.eos_id is not None else []
    return _truncate(ids, config.max_positions - len(tail), "source text", notes) + tail


@torch.no_grad()
def extract_attention(
    model: nn.Module,
    tokenizer,
    text: str,
    target: str | None = None,
    max_new_tokens: int = 32,
    source_tokenizer=None,
    target_ids: list[int] | None = None,
) -> AttentionResult:
    """Every layer's and head's attention weights for `text` (and `target`, translation only).

    For translation, `tokenizer` is the target's (what `nanoformer.load` returns) and
    `source_tokenizer` the source's when the vocabularies are separate (default: the same).
    Texts longer than the model's positions are truncated; `result.notes` says so. `target_ids`
    (with `target`, its text) reads exactly the tokens a translator produced, not a re-encoding.
    """
    config = model.config
    arch = config.arch
    if target is not None and arch != "encoder-decoder":
        raise UserError(f"a target text needs an encoder-decoder (translation) model, but this model is "
                        f"{arch!r} (no decoder reading a source); drop the target")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    notes: list[str] = []
    try:
        if arch == "decoder":
            ids = _truncate(_encode(tokenizer, text, "text"), config.max_positions, "text", notes)
            out = model.run(torch.tensor([ids], device=device), need_weights=True)
            labels = token_labels(tokenizer, ids)
            maps = [AttentionMap("decoder_self", labels, labels, _stack(out.self_attentions), causal=True)]
            return AttentionResult(arch, text, maps, notes=notes)

        if arch == "encoder":
            wrap = config.cls_id is not None and config.sep_id is not None
            ids = _encode(tokenizer, text, "text")
            ids = _truncate(ids, config.max_positions - (2 if wrap else 0), "text", notes)
            if wrap:
                ids = [config.cls_id, *ids, config.sep_id]
            out = model.run(torch.tensor([ids], device=device), need_weights=True)
            labels = token_labels(tokenizer, ids)
            maps = [AttentionMap("encoder_self", labels, labels, _stack(out.self_attentions))]
            return AttentionResult(arch, text, maps, notes=notes)

        # encoder-decoder
        src_tok = source_tokenizer or tokenizer
        src = source_ids(model, src_tok, text, notes)
        src_tensor = torch.tensor([src], device=device)
        start = config.start_id
        if start is None:
            raise UserError("the model config has neither bos_id nor decoder_start_id, so its decoder has no "
                            "first token; set one in the checkpoint's config.json")
        generated = target is None
        if generated:
            out_ids = model.generate(src_tensor, max_new_tokens=max_new_tokens)[0].tolist()
            body = out_ids[1:]
            if config.eos_id is not None and config.eos_id in body:
                body = body[: body.index(config.eos_id)]
            tgt = [start, *body]
            target = tokenizer.decode(body)
        else:
            body = list(target_ids) if target_ids is not None else _encode(tokenizer, target, "target text")
            tgt = [start, *_truncate(body, config.max_positions - 1, "target text", notes)]
        enc = model.run_encoder(src_tensor, need_weights=True)
        dec = model.run_decoder(torch.tensor([tgt], device=device), enc.hidden, need_weights=True)
        src_labels, tgt_labels = token_labels(src_tok, src), token_labels(tokenizer, tgt)
        maps = [
            AttentionMap("encoder_self", src_labels, src_labels, _stack(enc.self_attentions)),
            AttentionMap("decoder_self", tgt_labels, tgt_labels, _stack(dec.self_attentions), causal=True),
            AttentionMap("cross", tgt_labels, src_labels, _stack(dec.cross_attentions)),
        ]
        return AttentionResult(arch, text, maps, target=target, target_generated=generated, notes=notes)
    finally:
        model.train(was_training)


def alignment(result: AttentionResult, layer: int = -1) -> Tensor:
    """Source × target alignment of a translation: cross-attention of `layer`, mean over heads (Tq, Tk)."""
    return result.get("cross").weights[layer].mean(dim=0)


def save_attention(result: AttentionResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write the exact weights (attention.safetensors, one (L, H, Tq, Tk) tensor per kind) and an
    index (attention.json: tokens, shapes, texts, notes). Returns both paths."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    tensors = {m.kind: m.weights.contiguous() for m in result.maps}
    weights_path, index_path = out_dir / WEIGHTS_FILE, out_dir / INDEX_FILE
    save_file(tensors, str(weights_path), metadata={"format": "pt"})
    index = {
        "arch": result.arch,
        "source": result.source,
        "target": result.target,
        "target_generated": result.target_generated,
        "notes": result.notes,
        "weights_file": WEIGHTS_FILE,
        "maps": [
            {"kind": m.kind, "title": m.title, "layers": m.n_layers, "heads": m.n_heads, "causal": m.causal,
             "query_tokens": m.query_tokens, "key_tokens": m.key_tokens}
            for m in result.maps
        ],
    }
    index_path.write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return weights_path, index_path


def load_attention(out_dir: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(index, {kind: weights}) as written by `save_attention`."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    index = json.loads((out_dir / INDEX_FILE).read_text(encoding="utf-8"))
    return index, load_file(str(out_dir / index["weights_file"]))
