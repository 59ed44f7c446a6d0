"""The same models on a GPU: equal to the CPU, on every path a user takes there.

The device is CUDA, or $NANOFORMER_TEST_DEVICE ("mps"; "cpu" checks these tests themselves).
Skipped where it is not there (CI, these CPU machines); `benchmarks/gpu_check.sh` runs them on a
lent GPU. fp32 on both sides with TF32 off, so the two devices differ only by summation order:
outputs agree to 1e-4 and greedy / beam outputs token for token. Training on the GPU runs bf16
autocast (the GPU configs' dtype), so there the test asks for a falling loss and an exact-enough
resume, not equality with the CPU.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch

from nanoformer.cli import main
from nanoformer.config import ModelConfig
from nanoformer.models import DecoderModel, EncoderModel, Seq2SeqTransformer
from tests.test_cli import losses as train_losses

DEVICE = os.environ.get("NANOFORMER_TEST_DEVICE", "cuda")
AVAILABLE = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
pytestmark = pytest.mark.skipif(not AVAILABLE.get(DEVICE, False), reason=f"needs a {DEVICE} device")

POSITIONALS = ["learned", "sinusoidal", "rope", "alibi"]


@pytest.fixture(autouse=True)
def no_tf32():
    """TF32 matmuls keep 10 mantissa bits: fp32 equality with the CPU needs them off."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def build(arch: str, positional: str = "learned", **overrides):
    torch.manual_seed(0)
    config = ModelConfig(
        arch=arch, vocab_size=97, d_model=64, n_heads=4, n_layers=2, d_ff=128, max_positions=160, dropout=0.0,
        positional=positional, pad_id=0, bos_id=1, eos_id=2, **overrides,
    )
    model_class = {"decoder": DecoderModel, "encoder": EncoderModel, "encoder-decoder": Seq2SeqTransformer}[arch]
    cpu = model_class(config).eval()
    return cpu, copy.deepcopy(cpu).to(DEVICE)


def padded_batch(lengths: list[int], vocab: int = 97) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]
    return torch.randint(3, vocab, mask.shape).masked_fill(~mask, 0), mask


@pytest.mark.parametrize("positional", POSITIONALS)
def test_decoder_logits_match_the_cpu(positional):
    cpu, gpu = build("decoder", positional)
    ids = torch.randint(3, 97, (3, 40))
    with torch.no_grad():
        torch.testing.assert_close(gpu(ids.to(DEVICE)).cpu(), cpu(ids), atol=1e-4, rtol=0)


def test_encoder_and_seq2seq_outputs_match_the_cpu_with_padding():
    ids, mask = padded_batch([12, 7, 3])
    cpu, gpu = build("encoder")
    with torch.no_grad():
        torch.testing.assert_close(gpu(ids.to(DEVICE), mask.to(DEVICE)).cpu()[mask], cpu(ids, mask)[mask], atol=1e-4, rtol=0)
    cpu, gpu = build("encoder-decoder", share_embeddings=True)
    tgt = torch.randint(3, 97, (3, 9))
    with torch.no_grad():
        expected = cpu(ids, tgt, src_padding_mask=mask)
        torch.testing.assert_close(gpu(ids.to(DEVICE), tgt.to(DEVICE), src_padding_mask=mask.to(DEVICE)).cpu(), expected,
                                   atol=1e-4, rtol=0)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_generation_equals_uncached_and_the_cpu(positional):
    cpu, gpu = build("decoder", positional)
    prompt = torch.randint(3, 97, (2, 7))
    on_gpu = gpu.generate(prompt.to(DEVICE), max_new_tokens=60, eos_id=None).cpu()
    sequence = prompt.to(DEVICE)
    with torch.no_grad():
        for _ in range(60):  # no cache: the whole sequence every step
            sequence = torch.cat([sequence, gpu(sequence)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(on_gpu, sequence.cpu())
    assert torch.equal(on_gpu, cpu.generate(prompt, max_new_tokens=60, eos_id=None))


def test_greedy_and_beam_translation_match_the_cpu():
    cpu, gpu = build("encoder-decoder", share_embeddings=True)
    src, mask = padded_batch([9, 5, 7, 2])
    for beams in (1, 4):
        expected = cpu.generate(src, 16, mask, beam_size=beams)
        got = gpu.generate(src.to(DEVICE), 16, mask.to(DEVICE), beam_size=beams)
        assert torch.equal(got.cpu(), expected), f"beam {beams}"


def test_padding_free_training_step_matches_the_padded_one():
    """kernels/packing.py on the GPU: the same loss and gradients as the step on the CPU."""
    cpu, gpu = build("encoder-decoder", share_embeddings=True)
    src, mask = padded_batch([14, 3, 9, 2])
    tgt, tgt_mask = padded_batch([11, 2, 8, 4])
    targets = tgt.masked_fill(~tgt_mask, -100)

    def step(model, device):
        model.train()
        loss = model(src.to(device), tgt.to(device), src_padding_mask=mask.to(device), targets=targets.to(device),
                     label_smoothing=0.1)
        loss.backward()
        return loss.item(), {n: p.grad.cpu() for n, p in model.named_parameters() if p.grad is not None}

    cpu_loss, cpu_grads = step(cpu, "cpu")
    gpu_loss, gpu_grads = step(gpu, DEVICE)
    assert gpu_loss == pytest.approx(cpu_loss, abs=1e-5)
    assert cpu_grads.keys() == gpu_grads.keys()
    for name in cpu_grads:
        torch.testing.assert_close(gpu_grads[name], cpu_grads[name], atol=1e-5, rtol=1e-4, msg=name)


CONFIG = """
[model]
arch = "decoder"
d_model = 64
n_heads = 4
n_layers = 2
d_ff = 128
max_positions = 32
dropout = 0.1

[data]
path = "corpus.txt"
tokenizer = "char"
block_size = 32

[train]
max_steps = {steps}
batch_size = 16
lr = 3e-3
warmup_steps = 2
schedule = "inverse_sqrt"
eval_interval = 10
eval_batches = 2
log_interval = 1
dtype = "bf16"
device = "{device}"
"""

TEXT = "나는 학교에 간다. I go to school.\n" * 60 + "The quick brown fox jumps over the lazy dog.\n" * 60


def test_cli_trains_bf16_resumes_and_generates(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG.format(steps=40, device=DEVICE), encoding="utf-8")
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main(["train", str(config), "--out", str(whole), "--quiet"]) == 0
    losses = train_losses(whole)
    assert len(losses) == 40 and sum(losses[-5:]) < 0.6 * sum(losses[:5])
    assert main(["train", str(config), "--out", str(split), "--quiet", "--set", "train.max_steps=20"]) == 0
    assert main(["train", str(config), "--out", str(split), "--quiet", "--resume"]) == 0
    # Resume restores the CUDA RNG and data position; GPU kernels may sum in another order run
    # to run (atomics), so equal to rounding rather than to the bit.
    assert train_losses(split) == pytest.approx(losses, abs=1e-3)
    capsys.readouterr()
    assert main(["generate", str(whole), "--prompt", "나는", "--max-new-tokens", "20", "--device", DEVICE]) == 0
    assert capsys.readouterr().out.startswith("나는")
