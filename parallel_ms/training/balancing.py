"""Gradient-norm loss balancing (paper 000 §4.4, its ref. [63]; jaxpi's grad-norm weighting).

Every ``every`` steps, with g_i = ||grad_theta L_i|| the norm of the GLOBAL gradient of term i:

    lambda_hat_i = (sum_j g_j) / g_i,      lambda_i <- alpha lambda_i + (1 - alpha) lambda_hat_i

The total loss is sum_i lambda_i L_i. Terms are named, so the hybrid method's coupling term is
one more entry. Weights are identical on every rank (computed from all-reduced gradients).
"""
from __future__ import annotations

import torch

from parallel_ms import parallel


class GradNormBalancer:
    def __init__(self, names: list[str], every: int = 100, alpha: float = 0.9,
                 enabled: bool = True) -> None:
        self.weights = {n: 1.0 for n in names}
        self.every, self.alpha, self.enabled = every, alpha, enabled

    def due(self, step: int) -> bool:
        return self.enabled and step % self.every == 0

    def update(self, local_terms: dict[str, torch.Tensor],
               params: list[torch.nn.Parameter]) -> dict[str, float]:
        """New weights from the per-term gradient norms; ``local_terms`` are this rank's
        partial sums (their sum over ranks is the global term)."""
        norms = {}
        for name, term in local_terms.items():
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                              for g, p in zip(grads, params)])
            norms[name] = float(torch.linalg.vector_norm(parallel.allreduce_sum(flat)))
        total = sum(norms.values())
        for name, g in norms.items():
            if g > 0:
                self.weights[name] = self.alpha * self.weights[name] + (1 - self.alpha) * total / g
        return dict(self.weights)

    def combine(self, local_terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weights[n] * t for n, t in local_terms.items())  # type: ignore

    def state_dict(self) -> dict[str, float]:
        return dict(self.weights)

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.weights.update(state)

