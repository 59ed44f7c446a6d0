"""Int8 inference (nanoformer/quantize.py, kernels/int8.py): close to float32, smaller, and inference only."""

from __future__ import annotations

import json

import pytest
import torch

import nanoformer
from nanoformer.cli import main
from nanoformer.errors import UserError
from nanoformer.kernels.int8 import Int8Embedding, Int8Linear, int8_available, quantize_rows
from nanoformer.quantize import quantize
from tests.test_cli import write_config
from tests.test_models import ids, make

pytestmark = pytest.mark.skipif(not int8_available(), reason="this torch build has no x86 int8 kernels")


def test_rows_quantize_symmetrically_and_the_product_stays_close() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 64)
    q, scale = quantize_rows(layer.weight)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127 and scale.shape == (64,)
    assert (q.float() * scale[:, None] - layer.weight).abs().max() <= scale.max() / 2 + 1e-7
    int8 = Int8Linear.from_linear(layer)
    for x in (torch.randn(3, 5, 96), torch.randn(4, 50, 96)):  # a few rows (float32 product), many (int8 GEMM)
        exact, approx = layer(x), int8(x)
        assert approx.shape == exact.shape
        assert 0 < (approx - exact).norm() / exact.norm() < 0.02
        again = Int8Linear(96, 64)
        again.load_state_dict(int8.state_dict())
        assert torch.equal(again(x), approx)  # the state dict is all it takes


def test_small_int8_products_at_a_few_rows_run_in_float32_on_the_int8_weights() -> None:
    """At a decoding step's rows, a small layer multiplies its dequantized int8 weight in float32
    (the int8 call's fixed cost is more than that product); at training's rows, or for a large
    weight, the int8 GEMM quantizes the input too, and so differs from the float32 product."""
    torch.manual_seed(0)
    small, large = Int8Linear.from_linear(torch.nn.Linear(128, 512)), Int8Linear.from_linear(torch.nn.Linear(128, 1024))
    assert small.small and not large.small
    for layer in (small, large):
        weight = layer.weight_int8.float() * layer.weight_scale[:, None]
        few, many = torch.randn(16, 1, 128), torch.randn(2, 100, 128)
        on_float = [torch.equal(layer(x), torch.nn.functional.linear(x, weight, layer.bias)) for x in (few, many)]
        assert on_float == [layer is small, False]
        assert (layer(few) - torch.nn.functional.linear(few, weight, layer.bias)).abs().max() < 0.05


def test_a_quantized_model_predicts_as_the_float_one_and_steps_fast() -> None:
    model = make("decoder", d_model=64, n_heads=4, d_ff=128, vocab_size=60, max_positions=64).eval()
    x = ids(4, 12, seed=1, vocab=60)
    with torch.no_grad():
        exact = model(x)
        quantize(model)
        approx = model(x)
    assert model.config.quantization == "int8"
    assert any(isinstance(m, Int8Linear) for m in model.modules()) and any(isinstance(m, Int8Embedding) for m in model.modules())
    cosine = torch.nn.functional.cosine_similarity(exact.flatten(1), approx.flatten(1)).min()
    assert cosine > 0.99 and not torch.equal(exact, approx)
    with model.decoding():  # the functional decoding steps take int8 layers too
        assert model.decoder._step_weights is not None
    with torch.no_grad():
        fast = model.generate(x[:, :4], max_new_tokens=8)
        cache = model.new_cache(16)
        steps = [model.decode_step(x[:, :4], cache)[:, -1].argmax(-1, keepdim=True)]
        for _ in range(7):
            steps.append(model.decode_step(steps[-1], cache)[:, -1].argmax(-1, keepdim=True))
    assert torch.equal(fast[:, 4:], torch.cat(steps, 1))  # fast steps == module steps, in int8


def test_quantize_command_writes_a_small_checkpoint_that_loads_for_inference_only(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", str(write_config(tmp_path, steps=6)), "--out", str(run_dir), "--quiet"]) == 0
    out = tmp_path / "int8"
    assert main(["quantize", str(run_dir), str(out)]) == 0
    assert main(["quantize", str(run_dir), str(out)]) == 2  # exists: --force
    model, tokenizer = nanoformer.load(out)
    assert model.config.quantization == "int8" and tokenizer is not None
    assert json.loads((out / "config.json").read_text())["model"]["quantization"] == "int8"
    float_size = (run_dir / "checkpoints" / "best" / "model.safetensors").stat().st_size
    assert (out / "model.safetensors").stat().st_size < 0.45 * float_size  # norms and biases stay float32
    capsys.readouterr()
    assert main(["generate", str(out), "--prompt", "나는", "--max-new-tokens", "8", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("나는")
    assert main(["generate", str(run_dir), "--prompt", "나는", "--max-new-tokens", "8", "--int8"]) == 0
    assert main(["export-hf", str(out), str(tmp_path / "hf")]) == 2
    assert "inference only" in capsys.readouterr().err
    with pytest.raises(UserError, match="inference only"):
        from nanoformer.run_config import apply_init_from

        apply_init_from({"init_from": str(out)})
    linear_only = tmp_path / "int8-linear"
    assert main(["quantize", str(run_dir), str(linear_only), "--float-embeddings"]) == 0
    model, _ = nanoformer.load(linear_only)  # the config says which layers are int8
    assert model.config.quantization == "int8-linear"
    assert not any(isinstance(m, Int8Embedding) for m in model.modules())
    assert main(["generate", str(linear_only), "--prompt", "나는", "--max-new-tokens", "4"]) == 0


def test_shared_tables_stay_shared() -> None:
    """A joint vocabulary's one table (source and target) is quantized once, not twice, and so is a
weight the output layer shares with it."""
    model = make("encoder-decoder", share_embeddings=True, target_vocab_size=None)
    assert model.src_embeddings.tokens is model.tgt_embeddings.tokens
    tied = model.lm_head.weight is model.tgt_embeddings.tokens.weight
    quantize(model)
    assert isinstance(model.src_embeddings.tokens, Int8Embedding)
    assert model.src_embeddings.tokens is model.tgt_embeddings.tokens
    assert tied and model.lm_head.weight_int8 is model.tgt_embeddings.tokens.weight_int8  # the tied output layer
