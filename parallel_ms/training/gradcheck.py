"""Taylor test of the training objective J(theta) = sum of its terms (3.24).

Remainders E(t) = |J(theta + t d) - J(theta) - t dJ.d| for t = 1e-1 ... 1e-5 along a random
direction d must decay like t^2; the gradient also is compared with a central finite
difference. d is Gaussian (seeded: the same on every rank) scaled to 10 % of the RMS of the
parameters, so that t = 1e-1 is already a small relative perturbation. Pairs of steps whose
remainder is at the float64 round-off floor of J (below 1e-12 |J|) carry no rate and are left
out. J and dJ are global (all-reduced), so every rank count gives the same numbers for the same
global points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from parallel_ms import parallel
from parallel_ms.training.optimizers.base import flat_grad

STEPS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
ROUNDOFF = 1e-12  #: remainders below ROUNDOFF * |J| are round-off, not Taylor remainders


@dataclass
class TaylorResult:
    t: tuple[float, ...]
    remainders: list[float]
    rates: list[float]
    directional: float
    central_fd: float

    @property
    def min_rate(self) -> float:
        """Smallest rate over the pairs above the round-off floor (-inf if there are none)."""
        valid = [r for r in self.rates if r == r]
        return min(valid) if valid else float("-inf")

    @property
    def fd_rel_diff(self) -> float:
        return abs(self.directional - self.central_fd) / max(abs(self.directional), 1e-300)


def taylor_test(params: list[torch.nn.Parameter],
                local_objective: Callable[[], torch.Tensor], seed: int = 1234,
                steps: tuple[float, ...] = STEPS) -> TaylorResult:
    """``local_objective()`` returns this rank's partial sum of J (differentiable)."""
    def value() -> float:
        with torch.enable_grad():
            return float(parallel.allreduce_sum(float(local_objective().detach())))

    for p in params:
        p.grad = None
    local_objective().backward()
    grad = parallel.allreduce_sum(flat_grad(params).detach())
    gen = torch.Generator().manual_seed(seed)
    theta = torch.cat([p.detach().reshape(-1) for p in params])  # replicated: same on all ranks
    scale = 0.1 * float(theta.double().pow(2).mean().sqrt())
    direction = scale * torch.randn(grad.numel(), generator=gen, dtype=torch.float64).to(grad)
    directional = float(grad @ direction)
    theta0 = [p.detach().clone() for p in params]

    def at(t: float) -> float:
        offset = 0
        with torch.no_grad():
            for p, p0 in zip(params, theta0):
                n = p.numel()
                p.copy_(p0 + t * direction[offset:offset + n].reshape(p.shape))
                offset += n
        return value()

    j0 = at(0.0)
    remainders = [abs(at(t) - j0 - t * directional) for t in steps]
    h = steps[2]
    central = (at(h) - at(-h)) / (2 * h)
    at(0.0)
    floor = ROUNDOFF * abs(j0)
    rates = [math.log(remainders[i] / remainders[i + 1]) / math.log(steps[i] / steps[i + 1])
             if remainders[i + 1] > floor else float("nan") for i in range(len(steps) - 1)]
    return TaylorResult(steps, remainders, rates, directional, central)
