"""The fused output-layer loss equals logits + cross-entropy: value and every gradient, with label
smoothing, ignored targets, bias or none, chunk boundaries anywhere; and the models' `targets=`
path equals their logits path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanoformer.config import ModelConfig
from nanoformer.models import DecoderModel, Seq2SeqTransformer
from nanoformer.layers.losses import head_loss, linear_cross_entropy, token_cross_entropy


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_linear_cross_entropy_equals_logits_then_cross_entropy(smoothing, bias, chunk_rows):
    g = torch.Generator().manual_seed(chunk_rows)
    hidden = torch.randn(3, 23, 16, generator=g).requires_grad_()
    weight = torch.randn(301, 16, generator=g).requires_grad_()
    b = torch.randn(301, generator=g).requires_grad_() if bias else None
    targets = torch.randint(0, 301, (3, 23), generator=g)
    targets[0, :9] = -100
    targets[2, 5] = -100
    params = [hidden, weight] + ([b] if bias else [])
    expected = token_cross_entropy(F.linear(hidden, weight, b), targets, smoothing)
    expected_grads = torch.autograd.grad(expected * 3.0, params)
    got = linear_cross_entropy(hidden, weight, b, targets, smoothing, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(got * 3.0, params)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    for a, e in zip(grads, expected_grads):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-7)


def test_linear_cross_entropy_without_grad_and_all_ignored():
    hidden, weight = torch.randn(5, 8), torch.randn(20, 8)
    targets = torch.randint(0, 20, (5,))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(hidden, weight, None, targets),
                                   F.cross_entropy(hidden @ weight.t(), targets))
    nothing = torch.full((5,), -100)
    assert torch.isnan(linear_cross_entropy(hidden, weight, None, nothing))  # as F.cross_entropy
    assert torch.isnan(F.cross_entropy(hidden @ weight.t(), nothing))


def test_head_loss_takes_the_logits_path_for_other_heads():
    """A hooked head (e.g. an adapter) must be called as a module: its hook changes the loss."""
    head = torch.nn.Linear(8, 20)
    hidden, targets = torch.randn(2, 3, 8), torch.randint(0, 20, (2, 3))
    plain = head_loss(head, hidden, targets)
    torch.testing.assert_close(plain, token_cross_entropy(head(hidden), targets))
    head.register_forward_hook(lambda module, args, out: out * 0.0)
    torch.testing.assert_close(head_loss(head, hidden, targets), torch.tensor(20.0).log())


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_decoder_model_targets_equal_logits_path():
    torch.manual_seed(0)
    config = ModelConfig(arch="decoder", vocab_size=97, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                         max_positions=16, dropout=0.0, pad_id=None)
    model = DecoderModel(config)
    ids = torch.randint(0, 97, (3, 12))
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = -100
    token_cross_entropy(model(ids), targets).backward()
    expected = _grads(model)
    model.zero_grad()
    model(ids, targets=targets).backward()
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_seq2seq_targets_equal_logits_path_with_smoothing():
    torch.manual_seed(1)
    config = ModelConfig.from_preset("marian-base", vocab_size=61, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                                     max_positions=20, pad_id=60, eos_id=0, unk_id=None, decoder_start_id=60,
                                     dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    model = Seq2SeqTransformer(config)
    src, tgt = torch.randint(0, 60, (2, 7)), torch.randint(0, 60, (2, 9))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    targets = torch.randint(0, 60, (2, 9))
    targets[1, 6:] = -100
    expected_loss = token_cross_entropy(model(src, tgt, mask), targets, 0.1)
    expected_loss.backward()
    expected = _grads(model)
    model.zero_grad()
    loss = model(src, tgt, mask, targets=targets, label_smoothing=0.1)
    loss.backward()
    torch.testing.assert_close(loss, expected_loss)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_translation_rdrop_loss():
    """R-Drop for translation: without dropout the two passes agree, so the loss is the plain
    smoothed cross-entropy; with dropout it is the mean cross-entropy of the two passes plus
    rdrop x the symmetric KL per counted token, computed here from the full logits."""
    from nanoformer.recipes.translation import TranslationLoss

    def seq2seq(dropout: float) -> Seq2SeqTransformer:
        torch.manual_seed(2)
        config = ModelConfig.from_preset("marian-base", vocab_size=61, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                                         max_positions=20, pad_id=60, eos_id=0, unk_id=None, decoder_start_id=60,
                                         dropout=dropout, attention_dropout=dropout, activation_dropout=dropout)
        return Seq2SeqTransformer(config)

    src, tgt = torch.randint(0, 60, (3, 7)), torch.randint(0, 60, (3, 9))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    labels = torch.randint(0, 60, (3, 9))
    labels[1, 6:] = -100
    labels[2, 8:] = -100
    batch = {"src_ids": src, "tgt_in": tgt, "src_mask": mask, "labels": labels}

    still = seq2seq(0.0).train()
    torch.testing.assert_close(TranslationLoss(0.1, rdrop=4.0)(still, batch), TranslationLoss(0.1)(still, batch))
    still.eval()
    plain = token_cross_entropy(still(src, tgt, mask), labels)
    torch.testing.assert_close(TranslationLoss(0.1, rdrop=4.0)(still, batch), plain)

    noisy = seq2seq(0.3).train()
    torch.manual_seed(7)
    loss = TranslationLoss(0.1, rdrop=4.0)(noisy, batch)
    torch.manual_seed(7)  # the same dropout masks: one stacked forward, in the same order
    logits = noisy(torch.cat([src, src]), torch.cat([tgt, tgt]), torch.cat([mask, mask])).float()
    first, second = logits.chunk(2)
    counted = labels != -100
    ce = (token_cross_entropy(first, labels, 0.1) + token_cross_entropy(second, labels, 0.1)) / 2
    log_p, log_q = F.log_softmax(first[counted], -1), F.log_softmax(second[counted], -1)
    kl = ((log_p.exp() * (log_p - log_q)).sum(-1) + (log_q.exp() * (log_q - log_p)).sum(-1)).mean() / 2
    assert kl > 1e-3  # two dropout masks disagree
    torch.testing.assert_close(loss, ce + 4.0 * kl, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert noisy.lm_head.weight.grad.abs().sum() > 0

    late = TranslationLoss(0.1, rdrop=4.0, rdrop_from=0.5)  # R-Drop from half the budget on
    torch.manual_seed(7)
    torch.testing.assert_close(late(still.train(), batch), TranslationLoss(0.1)(still, batch))
    late.set_progress(0.4)
    torch.manual_seed(7)
    before = late(noisy, batch)
    late.set_progress(0.5)
    torch.manual_seed(7)
    torch.testing.assert_close(late(noisy, batch), loss)
    assert not torch.allclose(before, loss)
