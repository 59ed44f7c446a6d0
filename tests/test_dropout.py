"""The CPU dropout of kernels/dropout.py: the rate, the scaling, the same mask forward and backward,
reproducibility from torch's seed, and the cases it hands to torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nanoformer.kernels.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_rate_and_scale(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = dropout(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.003  # 1M draws: the standard error is < 0.0005
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 0.01  # expectation preserved


def test_lanes_are_independent() -> None:
    """Each 64-bit word feeds four neighbouring elements: their drops must not be correlated."""
    torch.manual_seed(1)
    keep = dropout(torch.ones(400_000, 4), 0.5) != 0
    for a in range(4):
        for b in range(a + 1, 4):
            both = (keep[:, a] & keep[:, b]).float().mean().item()
            assert abs(both - 0.25) < 0.005


def test_backward_uses_the_forward_mask() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.2)
    y.backward(torch.ones_like(y))
    expected = (y != 0).float() / 0.8
    assert torch.equal(x.grad, expected)


def test_mask_follows_the_lane_rule_from_torchs_generator() -> None:
    """The output is x · keep · 1/(1-p), keep drawn from torch's 64-bit words as the docstring says
    (four 15-bit lanes a word), also for a non-contiguous input."""
    x = torch.randn(37, 20).t()  # 20 x 37, not contiguous; 740 elements: 185 words
    torch.manual_seed(5)
    words = torch.empty(185, dtype=torch.int64).random_()
    keep = torch.bitwise_and(words.view(torch.int16).view(20, 37), 0x7FFF) >= round(0.3 * 32768)
    torch.manual_seed(5)
    y = dropout(x, 0.3)
    assert torch.equal(y, x * keep * torch.tensor(1 / 0.7))


def test_seeded_runs_repeat_and_eval_is_identity() -> None:
    x = torch.randn(10, 10)
    torch.manual_seed(3)
    a = dropout(x, 0.1)
    torch.manual_seed(3)
    b = dropout(x, 0.1)
    assert torch.equal(a, b)
    assert dropout(x, 0.1, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        dropout(x, 1.5)


def test_module_is_an_nn_dropout() -> None:
    module = Dropout(0.25)
    assert isinstance(module, torch.nn.Dropout) and repr(module) == repr(torch.nn.Dropout(0.25))
    x = torch.ones(200, 200)
    assert module.eval()(x) is x
    dropped = (module.train()(x) == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.01
    inplace = Dropout(0.25, inplace=True).train()  # in place: torch's own kernel
    y = torch.ones(50, 50)
    inplace(y)
    assert (y == 0).any()


def test_attention_dropout_on_cpu_keeps_expectation() -> None:
    """Training-mode attention with dropout takes the explicit path with this dropout: averaged over
    many draws it gives the dropout-free output."""
    from nanoformer.layers.attention import scaled_dot_product_attention

    torch.manual_seed(4)
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    clean, _ = scaled_dot_product_attention(q, k, v, causal=True)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(clean, reference, atol=1e-6, rtol=0)
    mean = sum(scaled_dot_product_attention(q, k, v, causal=True, dropout_p=0.3)[0] for _ in range(4000)) / 4000
    torch.testing.assert_close(mean, clean, atol=0.05, rtol=0)
