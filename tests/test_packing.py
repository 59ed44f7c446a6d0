"""Padding-free training (kernels/packing.py): the token-wise sublayers skip padding, and nothing
else changes. A training step with packing has the loss and gradients of the padded step."""

from __future__ import annotations

import copy

import pytest
import torch

from nanoformer.config import ModelConfig
from nanoformer.kernels import packing as packing_module
from nanoformer.kernels.packing import TokenPacking, through_last
from nanoformer.models import EncoderModel, Seq2SeqTransformer


def test_pack_unpack_round_trip_and_gradients():
    torch.manual_seed(0)
    real = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    packing = TokenPacking(real)
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    packed = packing.pack(x)
    assert packed.shape == (8, 5)
    assert torch.equal(packed, x[real])  # row-major order of the real tokens
    back = packing.unpack(packed)
    assert torch.equal(back, x * real.unsqueeze(-1))  # zeros at padding
    assert torch.autograd.gradcheck(lambda t: packing.unpack(packing.pack(t) * 2), (x,))


def test_worth_it_needs_enough_padding():
    mostly_real = torch.ones(2, 20, dtype=torch.bool)
    mostly_real[0, -1] = False
    assert TokenPacking.worth_it(mostly_real) is None
    mostly_real[1, -3:] = False
    assert TokenPacking.worth_it(mostly_real) is not None  # 4 of 40 padding: 10%


def padded_ids(vocab: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (specials below 3 excluded) right-padded with 0 to the longest length, and the mask."""
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)).long()
    return torch.randint(3, vocab, mask.shape).masked_fill(mask == 0, 0), mask


def _never_pack(monkeypatch):
    monkeypatch.setattr(packing_module.TokenPacking, "worth_it", classmethod(lambda cls, real, min_padding=0.1: None))


def _loss_and_grads(model, run):
    model = copy.deepcopy(model).train()
    loss = run(model)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_same_step(model, run, monkeypatch, calls):
    """The training step with packing == without it (dropout 0, so both are deterministic)."""
    original = packing_module.TokenPacking.__init__
    made = []

    def counting_init(self, real):
        made.append(real.shape)
        original(self, real)

    monkeypatch.setattr(packing_module.TokenPacking, "__init__", counting_init)
    packed_loss, packed_grads = _loss_and_grads(model, run)
    assert len(made) == calls  # the test really exercises packing
    with monkeypatch.context() as m:
        _never_pack(m)
        loss, grads = _loss_and_grads(model, run)
    assert torch.allclose(packed_loss, loss, atol=1e-6)
    assert packed_grads.keys() == grads.keys()
    for name in grads:
        assert torch.allclose(packed_grads[name], grads[name], atol=1e-6), name


@pytest.mark.parametrize("changes", [dict(norm_position="pre"), dict(norm_position="post"),
                                     dict(positional="rope"), dict(positional="alibi", norm="rmsnorm")])
def test_seq2seq_training_step_is_unchanged(changes, monkeypatch):
    config = ModelConfig.from_preset("marian-base", vocab_size=60, d_model=32, n_heads=4, n_layers=2, d_ff=64,
                                     max_positions=32, pad_id=0, eos_id=1, unk_id=2, decoder_start_id=0,
                                     dropout=0.0, **changes)
    torch.manual_seed(0)
    model = Seq2SeqTransformer(config)
    src, src_mask = padded_ids(60, lengths=[11, 6, 2, 11])
    tgt = torch.randint(3, 60, (4, 9))
    labels = torch.randint(3, 60, (4, 9))
    labels[1, 5:] = -100  # trailing padding: skipped
    labels[3, 1:] = -100
    labels[0, 3] = -100  # an ignored target inside a sentence: still computed (later positions read it)

    def run(m):
        return m(src, tgt, src_padding_mask=src_mask, targets=labels, label_smoothing=0.1)

    _assert_same_step(model, run, monkeypatch, calls=2)  # encoder and decoder


def test_decoder_keeps_positions_through_the_last_counted_target():
    labels = torch.tensor([[5, -100, 7, -100, -100], [-100, -100, -100, -100, -100], [1, 2, 3, 4, 5]])
    assert through_last(labels != -100).tolist() == [[True, True, True, False, False], [False] * 5, [True] * 5]


@pytest.mark.parametrize("changes", [{}, dict(num_labels=3), dict(num_labels=2, classifier_pooling="mean"),
                                     dict(masked_positions=True)])
def test_encoder_training_step_is_unchanged(changes, monkeypatch):
    """MLM logits over all positions, the two classifier poolings (the [CLS] one computes only
    position 0 in its last layer), and the MLM head on selected positions (the last layer computes
    those only): packing holds in every layer before that."""
    selected = changes.pop("masked_positions", False)
    config = ModelConfig.from_preset("tiny-encoder", vocab_size=50, d_model=32, n_heads=2, n_layers=2, d_ff=64,
                                     max_positions=24, dropout=0.0, attention_dropout=0.0, **changes)
    torch.manual_seed(0)
    model = EncoderModel(config)
    ids, mask = padded_ids(50, lengths=[12, 8, 4])
    if config.num_labels:
        labels = torch.tensor([0, 1, 1])

        def run(m):
            return torch.nn.functional.cross_entropy(m(ids, attention_mask=mask), labels)
    elif selected:
        chosen = torch.zeros_like(mask, dtype=torch.bool)
        chosen[0, [1, 5, 9]] = True
        chosen[1, 2] = True
        chosen[2, [0, 3]] = True
        targets = torch.randint(7, 50, (6,))

        def run(m):
            return torch.nn.functional.cross_entropy(m(ids, attention_mask=mask, masked_positions=chosen), targets)
    else:
        targets = torch.randint(7, 50, (3, 12))

        def run(m):
            logits = m(ids, attention_mask=mask)
            return torch.nn.functional.cross_entropy(logits[mask.bool()], targets[mask.bool()])

    _assert_same_step(model, run, monkeypatch, calls=1)


def test_evaluation_keeps_the_padded_layout():
    """In eval mode padding positions hold the values a padded pass gives them, as in other
    implementations; in training they are zeros (nothing reads them)."""
    config = ModelConfig.from_preset("tiny-encoder", vocab_size=50, d_model=32, n_heads=2, n_layers=2, d_ff=64,
                                     max_positions=24, dropout=0.0, attention_dropout=0.0)
    model = EncoderModel(config)
    ids, mask = padded_ids(50, lengths=[10, 3])
    evaluated = model.eval().encode(ids, mask)
    trained = model.train().encode(ids, mask)
    assert evaluated[1, 5].abs().sum() > 0
    assert torch.equal(trained[1, 5], torch.zeros(32))
    assert torch.allclose(trained[mask.bool()], evaluated[mask.bool()], atol=1e-6)
