"""`export-ct2`: CTranslate2 runs our exported models and computes what ours compute.

Each configuration is exported with CTranslate2's own spec API, loaded by CTranslate2, and held
against our model on the same inputs: the log-probability of every target token (CTranslate2's
`score_batch`) within 1e-4, and greedy outputs token for token; for encoders, the hidden states
of every real token (and BERT's pooled output) within 1e-4. The models are small but not
degenerate: their greedy outputs depend on the whole input, which each test checks first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nanoformer.errors import UserError
from nanoformer.interop.ctranslate2 import decoder_spec, encoder_spec, export_ct2, save_spec, seq2seq_spec
from tests.test_models import ids, make

ctranslate2 = pytest.importorskip("ctranslate2")

V = 40
SMALL = dict(d_model=32, n_heads=4, d_ff=64, vocab_size=V, max_positions=64)
SPECIALS = {0: "<pad>", 1: "<s>", 2: "</s>"}  # make(): pad 0, bos 1, eos 2


def names(size: int) -> list[str]:
    return [SPECIALS.get(i, f"t{i}") for i in range(size)]


def as_tokens(rows: torch.Tensor, vocab: list[str]) -> list[list[str]]:
    return [[vocab[i] for i in row.tolist()] for row in rows]


def log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0]


SEQ2SEQ = [
    dict(positional="sinusoidal"),  # post-LN, interleaved sinusoids, scaled embeddings, as make() builds it
    dict(positional="sinusoidal", sinusoidal_layout="half", tie_embeddings=False),
    dict(positional="learned", norm_position="pre", activation="gelu"),
    dict(positional="rope", norm_position="pre", norm="rmsnorm", activation="swiglu", bias=False),
    dict(positional="none", norm_position="pre", activation="gelu_tanh", output_bias=False),
]
DECODER = [
    dict(positional="learned", norm_position="pre", activation="gelu_tanh"),  # GPT-2's layout
    dict(positional="rope", norm="rmsnorm", activation="swiglu", bias=False),
    dict(positional="sinusoidal", norm_position="post", activation="relu", seed=2),  # other seeds give degenerate continuations
]


def label(case: dict) -> str:
    return "-".join(f"{v}" for v in case.values())


@pytest.mark.parametrize("case", SEQ2SEQ, ids=label)
def test_exported_translator_scores_and_translates_as_ours(case: dict, tmp_path: Path) -> None:
    model = make("encoder-decoder", **{**SMALL, "target_vocab_size": V, **case}).eval()
    vocab = names(V)
    save_spec(seq2seq_spec(model, vocab, vocab), tmp_path)
    translator = ctranslate2.Translator(str(tmp_path), device="cpu", intra_threads=1)
    src = ids(6, 7, seed=3, vocab=V)
    src[:, -1] = 2  # sources end with eos, as ours are encoded
    ours = model.generate(src, max_new_tokens=12)
    assert len({tuple(row) for row in ours.tolist()}) > 1, "degenerate: every source translates alike"

    theirs = translator.translate_batch(as_tokens(src, vocab), beam_size=1, max_decoding_length=12)
    for mine, result in zip(ours.tolist(), theirs):
        mine = [vocab[i] for i in mine[1:]]
        mine = mine[: mine.index("</s>")] if "</s>" in mine else mine
        assert result.hypotheses[0] == mine

    target = ids(6, 9, seed=4, vocab=V)
    scored = translator.score_batch(as_tokens(src, vocab), as_tokens(target, vocab))
    with torch.no_grad():
        start = torch.full((6, 1), model.config.start_id)
        logits = model(src, torch.cat([start, target], 1))
    expected = log_probs(logits, torch.cat([target, torch.full((6, 1), 2)], 1))  # CTranslate2 scores eos too
    got = torch.tensor([r.log_probs for r in scored])
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("case", DECODER, ids=label)
def test_exported_generator_scores_and_continues_as_ours(case: dict, tmp_path: Path) -> None:
    model = make("decoder", **{**SMALL, **case}).eval()
    vocab = names(V)
    save_spec(decoder_spec(model, vocab), tmp_path)
    generator = ctranslate2.Generator(str(tmp_path), device="cpu", intra_threads=1)
    prompts = ids(4, 6, seed=5, vocab=V)
    ours = model.generate(prompts, max_new_tokens=12, eos_id=None)[:, 6:]
    changed = prompts.clone()
    changed[:, 0] = (changed[:, 0] + 1) % V
    assert (model.generate(changed, max_new_tokens=12, eos_id=None)[:, 6:] != ours).any(), \
        "degenerate: the continuation ignores the start of the prompt"

    theirs = generator.generate_batch(as_tokens(prompts, vocab), max_length=12, sampling_topk=1,
                                      include_prompt_in_result=False, end_token=[])
    assert [r.sequences[0] for r in theirs] == as_tokens(ours, vocab)

    scored = generator.score_batch(as_tokens(prompts, vocab))
    with torch.no_grad():
        expected = log_probs(model(prompts)[:, :-1], prompts[:, 1:])
    assert (torch.tensor([r.log_probs for r in scored]) - expected).abs().max() < 1e-4


@pytest.mark.parametrize("case", [dict(), dict(num_labels=2), dict(positional="rope", norm_position="pre", type_vocab_size=0)],
                         ids=["bert", "classifier-pooler", "rope-pre-ln"])
def test_exported_encoder_gives_our_hidden_states(case: dict, tmp_path: Path) -> None:
    model = make("encoder", **{**SMALL, **case}).eval()
    vocab = names(V)
    save_spec(encoder_spec(model, vocab), tmp_path)
    encoder = ctranslate2.Encoder(str(tmp_path), device="cpu", intra_threads=1)
    x = ids(3, 9, seed=6, vocab=V)
    lengths = [9, 6, 4]
    tokens = [[vocab[i] for i in row[:n]] for row, n in zip(x.tolist(), lengths)]
    mask = (torch.arange(9)[None] < torch.tensor(lengths)[:, None]).long()
    types = (torch.arange(9)[None] >= 3).long().expand(3, -1) * mask if model.config.type_vocab_size else None
    kwargs = {"token_type_ids": [row[:n] for row, n in zip(types.tolist(), lengths)]} if types is not None else {}
    out = encoder.forward_batch(tokens, **kwargs)
    hidden = torch.as_tensor(np.array(out.last_hidden_state))
    with torch.no_grad():
        expected = model.encode(x, mask, types)
    for row, n in enumerate(lengths):
        assert (hidden[row, :n] - expected[row, :n]).abs().max() < 1e-4
    if model.is_classifier and model.classifier.dense is not None:
        pooled = torch.as_tensor(np.array(out.pooler_output))
        assert (pooled - torch.tanh(model.classifier.dense(expected[:, 0]))).abs().max() < 1e-4


def test_int8_export_is_smaller_and_close(tmp_path: Path) -> None:
    model = make("decoder", **{**SMALL, "positional": "learned", "norm_position": "pre"}).eval()
    vocab = names(V)
    save_spec(decoder_spec(model, vocab), tmp_path / "fp32")
    save_spec(decoder_spec(model, vocab), tmp_path / "int8", quantization="int8")
    size = {name: (tmp_path / name / "model.bin").stat().st_size for name in ("fp32", "int8")}
    assert size["int8"] < 0.5 * size["fp32"]
    prompts = as_tokens(ids(4, 6, seed=5, vocab=V), vocab)
    full, small = (ctranslate2.Generator(str(tmp_path / name), device="cpu").score_batch(prompts) for name in size)
    diff = max(abs(a - b) for x, y in zip(full, small) for a, b in zip(x.log_probs, y.log_probs))
    assert 0 < diff < 0.1


def test_what_ctranslate2_cannot_hold_is_refused_in_one_line(tmp_path: Path) -> None:
    model = make("decoder", **{**SMALL, "positional": "alibi"}).eval()
    with pytest.raises(UserError, match="alibi"):
        decoder_spec(model, names(V))
    with pytest.raises(UserError, match="final norm"):
        seq2seq_spec(make("encoder-decoder", **{**SMALL, "target_vocab_size": V, "final_norm": True}), names(V), names(V))
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match="--force"):
        export_ct2(tmp_path / "missing-run", tmp_path / "out")
