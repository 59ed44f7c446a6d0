"""`export-onnx`: the encoder family as one ONNX graph, held against onnxruntime within 1e-4.

Compared at every real token; the states at padding positions (which no real token reads) are
left out, as their values are not part of either model's contract."""

from __future__ import annotations

import pytest
import torch

from nanoformer.errors import UserError
from nanoformer.interop.onnx import export_encoder
from tests.test_models import ids, make

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

V = 40
SMALL = dict(d_model=32, n_heads=4, d_ff=64, vocab_size=V, max_positions=64)


def run_graph(path, **inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy() for name, value in inputs.items()})


@pytest.mark.parametrize("case", [dict(), dict(positional="rope", norm_position="pre", type_vocab_size=0),
                                  dict(num_labels=3, classifier_pooling="mean")],
                         ids=["bert", "rope-pre-ln", "classifier"])
def test_onnx_graph_equals_the_model_at_other_shapes(case, tmp_path):
    model = make("encoder", **{**SMALL, **case}).eval()
    path = export_encoder(model, tmp_path / "model.onnx")
    for batch, length in ((3, 13), (1, 5)):  # neither is the shape the graph was traced with
        x = ids(batch, length, seed=batch, vocab=V)
        mask = torch.ones_like(x)
        mask[0, length - 2:] = 0  # padding
        inputs = {"input_ids": x, "attention_mask": mask}
        if model.config.type_vocab_size:
            inputs["token_type_ids"] = (torch.arange(length) >= length // 2).long().expand(batch, -1).contiguous()
        logits, hidden, vectors = run_graph(path, **inputs)
        with torch.no_grad():
            types = inputs.get("token_type_ids")
            expected_hidden = model.encode(x, mask, types)
            expected_logits = model(x, attention_mask=mask, token_type_ids=types)
            expected_vectors = model.embed(x, mask, token_type_ids=types)
        assert logits.shape == tuple(expected_logits.shape)
        real = mask.bool()  # states at padding positions are read by nothing, and differ
        if not model.is_classifier:
            logits, expected_logits = torch.from_numpy(logits)[real], expected_logits[real]
        for got, want in ((logits, expected_logits), (torch.from_numpy(hidden)[real], expected_hidden[real]),
                          (vectors, expected_vectors)):
            assert abs(torch.as_tensor(got) - want).max() < 1e-4


def test_decoders_are_refused_in_one_line(tmp_path):
    for arch in ("decoder", "encoder-decoder"):
        with pytest.raises(UserError, match="KV-cache interface"):
            export_encoder(make(arch, **SMALL), tmp_path / "x.onnx")
