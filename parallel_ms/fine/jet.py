"""Second-order forward jets: value, gradient and Laplacian pushed through a network.

A :class:`Jet` of a field a(x) at M points holds ``value`` (M, n), ``grad`` (d, M, n) — the
derivative along each coordinate direction — and ``lap`` (M, n) = sum_k d_k^2 a. Affine maps
act on all three with one matrix product; a pointwise nonlinearity s acts by the chain rule

    grad s(z) = s'(z) grad z,    lap s(z) = s'(z) lap z + s''(z) sum_k (d_k z)^2.

This is the fast derivative path for the residual -K lap v - grad K . grad v: one forward pass
(and one backward pass for training) instead of double-backward autograd.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Jet:
    value: torch.Tensor  # (M, n)
    grad: torch.Tensor   # (d, M, n)
    lap: torch.Tensor    # (M, n)

    @staticmethod
    def of_input(x: torch.Tensor) -> "Jet":
        """The jet of the identity map x -> x at the points x (M, d)."""
        m, d = x.shape
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        return Jet(x, eye[:, None, :].expand(d, m, d), torch.zeros_like(x))

    def linear(self, layer: torch.nn.Linear) -> "Jet":
        """z = W a + b. Value, gradient and Laplacian in one stacked matrix product."""
        d, m, n = self.grad.shape
        stacked = torch.cat([self.value[None], self.grad, self.lap[None]], dim=0)  # (d+2, M, n)
        out = stacked @ layer.weight.T
        value = out[0] + layer.bias if layer.bias is not None else out[0]
        return Jet(value, out[1:d + 1], out[d + 1])

    def tanh(self) -> "Jet":
        y = torch.tanh(self.value)
        dy = 1 - y * y
        ddy = -2 * y * dy
        return Jet(y, dy * self.grad, dy * self.lap + ddy * (self.grad * self.grad).sum(0))

    def sin_cos(self) -> "Jet":
        """[cos z, sin z] for an affine z (lap z may be nonzero in general)."""
        c, s = torch.cos(self.value), torch.sin(self.value)
        g2 = (self.grad * self.grad).sum(0)
        return Jet(torch.cat([c, s], -1),
                   torch.cat([-s * self.grad, c * self.grad], -1),
                   torch.cat([-s * self.lap - c * g2, c * self.lap - s * g2], -1))

    def scaled(self, a: float, b: float = 0.0) -> "Jet":
        """a * self + b."""
        return Jet(a * self.value + b, a * self.grad, a * self.lap)

    def plus(self, other: "Jet") -> "Jet":
        return Jet(self.value + other.value, self.grad + other.grad, self.lap + other.lap)

    def concat(self, other: "Jet") -> "Jet":
        """[self, other] along the feature axis."""
        return Jet(torch.cat([self.value, other.value], -1), torch.cat([self.grad, other.grad], -1),
                   torch.cat([self.lap, other.lap], -1))

    def times(self, other: "Jet") -> "Jet":
        """Pointwise product (broadcast over the last axis)."""
        return Jet(self.value * other.value,
                   self.grad * other.value + self.value * other.grad,
                   self.lap * other.value + 2 * (self.grad * other.grad).sum(0)
                   + self.value * other.lap)
