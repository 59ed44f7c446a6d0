"""Validation loss as a function of model size and training tokens, fitted to measured runs.

The form is Chinchilla's (Hoffmann et al. 2022, approach 3):

    L(N, D) = E + A / N^alpha + B / D^beta

N counts the non-embedding parameters, D the tokens the run trained on (each run annealed its
learning rate over exactly its own D). E is the loss no model of this family reaches on this
data; the two power laws are what a larger model and a longer run each buy. Like the paper, the
fit minimises a Huber loss of log-residuals, from a grid of starting points, because a few
noisy runs must not pull the whole curve, with both exponents kept within EXPONENT_RANGE.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

# The exponents stay in a range seen in practice (Chinchilla fits 0.34 and 0.28): with only a few
# model sizes, an unbounded fit can turn a power law into a step (alpha = 12) that fits the
# points and says nothing between or beyond them.
EXPONENT_RANGE = (0.05, 1.5)


@dataclass(frozen=True)
class ScalingLaw:
    E: float
    A: float
    alpha: float
    B: float
    beta: float

    def predict(self, n_params: float, tokens: float) -> float:
        return self.E + self.A / n_params**self.alpha + self.B / tokens**self.beta

    def to_dict(self) -> dict[str, float]:
        return {key: round(value, 6) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class LossPoint:
    """One training run of the study: its size, its tokens, and the loss it reached."""

    n_params: float
    tokens: float
    loss: float


def fit_scaling_law(points: Sequence[LossPoint], huber_delta: float = 1e-3, steps: int = 200) -> ScalingLaw:
    """The law with the least Huber loss on log L over `points` (at least five, for five constants).

    Parameterised as in the paper: A = exp(a), B = exp(b), E = exp(e), so every constant stays
    positive; L-BFGS from each start of a small grid, keeping the best.
    """
    if len(points) < 5:
        raise ValueError(f"fitting five constants needs at least 5 runs, got {len(points)}")
    log_n = torch.tensor([math.log(p.n_params) for p in points], dtype=torch.float64)
    log_d = torch.tensor([math.log(p.tokens) for p in points], dtype=torch.float64)
    log_l = torch.tensor([math.log(p.loss) for p in points], dtype=torch.float64)

    def exponents(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = EXPONENT_RANGE
        return low + (high - low) * torch.sigmoid(theta[3]), low + (high - low) * torch.sigmoid(theta[4])

    def objective(theta: torch.Tensor) -> torch.Tensor:
        a, b, e = theta[:3]
        alpha, beta = exponents(theta)
        predicted = torch.logsumexp(torch.stack([a - alpha * log_n, b - beta * log_d, e.expand_as(log_n)]), dim=0)
        return torch.nn.functional.huber_loss(predicted, log_l, delta=huber_delta, reduction="sum")

    def logit(exponent: float) -> float:  # the inverse of `exponents`, for the starting grid
        low, high = EXPONENT_RANGE
        fraction = (exponent - low) / (high - low)
        return math.log(fraction / (1 - fraction))

    best: tuple[float, torch.Tensor] | None = None
    floor = math.log(min(p.loss for p in points))
    grid = itertools.product((0.0, 5.0, 10.0), (0.0, 5.0, 10.0), (floor - 1.0, floor - 0.3), (0.2, 0.5), (0.2, 0.5))
    for a0, b0, e0, alpha0, beta0 in grid:
        theta = torch.tensor((a0, b0, e0, logit(alpha0), logit(beta0)), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([theta], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            value = objective(theta)
            value.backward()
            return value

        optimizer.step(closure)
        value = float(objective(theta.detach()))
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, theta.detach().clone())
    assert best is not None
    a, b, e = (float(v) for v in best[1][:3])
    alpha, beta = (float(v) for v in exponents(best[1]))
    return ScalingLaw(E=math.exp(e), A=math.exp(a), alpha=alpha, B=math.exp(b), beta=beta)
