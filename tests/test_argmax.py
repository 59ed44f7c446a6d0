"""`last_dim_argmax` gives torch's argmax indices exactly: ties, NaN, tails and leading dims included."""

import pytest
import torch

from nanoformer.kernels.argmax import BLOCK, MIN_ELEMENTS, last_dim_argmax


@pytest.mark.parametrize("shape", [(16, 8000), (64, 8003), (5, 7, 8000), (4, 50_257), (3, 2 * BLOCK + 1)])
@pytest.mark.parametrize("values", ["normal", "ties", "one_value"])
def test_matches_torch_argmax(shape, values):
    g = torch.Generator().manual_seed(sum(shape))
    if values == "normal":
        x = torch.randn(shape, generator=g)
    elif values == "ties":  # four distinct values: every row's maximum occurs many times
        x = torch.randint(0, 4, shape, generator=g).float()
    else:
        x = torch.full(shape, 0.5)
    assert torch.equal(last_dim_argmax(x), x.argmax(dim=-1))


def test_the_two_pass_path_runs_on_a_decoding_batch_and_keeps_first_occurrences():
    x = torch.randn(16, 8000, generator=torch.Generator().manual_seed(0))
    assert x.numel() >= MIN_ELEMENTS  # the two-pass path, not torch's argmax
    x[3, 7000] = x[3, 100] = x[3, 4321] = 50.0  # the first of three ties, in different blocks
    x[5, 7999] = 60.0  # the last value of the row
    x[6, 64:128] = 70.0  # a whole block of ties
    got = last_dim_argmax(x)
    assert got[3] == 100 and got[5] == 7999 and got[6] == 64
    assert torch.equal(got, x.argmax(dim=-1))


@pytest.mark.parametrize("where", [10, 7000, 8001])  # first block, a later block, the tail
def test_nan_wins_as_in_torch(where):
    x = torch.randn(16, 8003, generator=torch.Generator().manual_seed(1))
    assert x.numel() >= MIN_ELEMENTS  # the two-pass path, not torch's argmax
    x[2, where] = float("nan")
    x[4, 8002] = float("nan")
    x[4, 30] = float("nan")
    assert torch.equal(last_dim_argmax(x), x.argmax(dim=-1))


def test_the_tail_wins_only_when_strictly_larger():
    x = torch.zeros(8, 4 * BLOCK + 3)
    x[0, 5] = x[0, -1] = 1.0  # a tie between the body and the tail: the body's comes first
    x[1, -2] = 1.0  # the tail alone holds the maximum
    assert x.numel() < MIN_ELEMENTS  # so force the two-pass path through a larger batch
    big = x.repeat(MIN_ELEMENTS // x.numel() + 1, 1)
    got = last_dim_argmax(big)
    assert got[0] == 5 and got[1] == x.shape[1] - 2
    assert torch.equal(got, big.argmax(dim=-1))


def test_other_inputs_keep_torchs_argmax():
    ints = torch.randint(0, 100, (64, 1000))
    assert torch.equal(last_dim_argmax(ints), ints.argmax(dim=-1))
    assert last_dim_argmax(torch.randn(4, 100)).shape == (4,)
