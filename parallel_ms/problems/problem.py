"""A two-scale heat-conduction problem on the unit interval or square (paper 000, §4.1).

    -div(K_eps grad w) = q  in (0,1)^d,    w = x_1 on the boundary      (4.6), i = 1

lifted to homogeneous boundary values by w = u + x_1:

    -div(K_eps grad u) = q + d_1 K_eps,    u = 0 on the boundary       (4.8)

A :class:`Problem` holds K_eps and q as formulas over a math namespace (:mod:`.math`), so the
same definition yields torch functions (batched over points, with the exact gradient of K_eps by
autodiff) and UFL expressions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from parallel_ms.problems.math import TORCH, ufl_math

Formula = Callable[[Sequence[Any], Any], Any]

#: Gauss–Legendre nodes of the source's antiderivative along x_1 (Problem.lifted_source_flux)
FLUX_NODES = 32


def axis_waves(period: Sequence[float]) -> tuple[tuple[float, ...], ...]:
    """The wave vectors e_i / period_i of a cell [0, period_1] x ... (units of eps)."""
    return tuple(tuple(1.0 / p if j == i else 0.0 for j in range(len(period)))
                 for i, p in enumerate(period))


@dataclass(frozen=True)
class Problem:
    """Domain (0,1)^dim, conductivity K_eps, source q, scale eps.

    ``conductivity(x, m)`` and ``source(x, m)`` take the coordinate components and a math
    namespace. ``period``, when given, says K_eps(x) = a(x / eps) with ``a`` periodic on the cell
    [0, period_1] x ... (in units of eps): the homogenized tensor K* then exists
    (:mod:`parallel_ms.reference.cell`). ``fast_waves``, when given, says K_eps(x) =
    a(x, k_1 . x / eps, ..., k_m . x / eps) with ``a`` 1-periodic in each fast phase (wave
    vectors k_j in units of 1/eps): a locally periodic medium a(x, x/eps) has the axes' unit
    vectors, a quasi-periodic one incommensurate k_j; a periodic case has e_i / period_i
    (:attr:`waves`). ``min_period`` is the shortest oscillation length in
    units of eps; the reference mesh resolves it (:func:`parallel_ms.reference.solver.cells_for`).
    ``bounds`` are known lower/upper bounds of K_eps (alpha <= K_eps <= beta).
    """

    name: str
    dim: int
    eps: float
    conductivity: Formula
    source: Formula
    description: str
    bounds: tuple[float, float]
    period: tuple[float, ...] | None = None
    fast_waves: tuple[tuple[float, ...], ...] | None = None
    min_period: float = 1.0
    params: dict[str, float] = field(default_factory=dict)

    @property
    def waves(self) -> tuple[tuple[float, ...], ...] | None:
        """The fast wave vectors (units of 1/eps): ``fast_waves``, else those of the period
        cell, else None (no fast structure known: the two-scale network does not apply)."""
        if self.fast_waves is not None:
            return self.fast_waves
        return None if self.period is None else axis_waves(self.period)

    # ---- torch side (points x: tensor of shape (M, dim)) -----------------------------------
    def _torch(self, formula: Formula, x: torch.Tensor) -> torch.Tensor:
        val = formula([x[:, i] for i in range(self.dim)], TORCH)
        return torch.as_tensor(val, dtype=x.dtype, device=x.device).expand(x.shape[0])

    def k(self, x: torch.Tensor) -> torch.Tensor:
        """K_eps at the points, shape (M,)."""
        return self._torch(self.conductivity, x)

    def grad_k(self, x: torch.Tensor) -> torch.Tensor:
        """Exact gradient of K_eps at the points (autodiff of the formula), shape (M, dim)."""
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.k(xr).sum(), xr)
        return g

    def q(self, x: torch.Tensor) -> torch.Tensor:
        """Source q at the points, shape (M,)."""
        return self._torch(self.source, x)

    def lifted_source(self, x: torch.Tensor, direction: int = 0) -> torch.Tensor:
        """f_eps = q + d_i K_eps, the right-hand side of the lifted problem (4.8) for the
        temperature drop along e_i (i = ``direction``; the paper's is e_1)."""
        return self.q(x) + self.grad_k(x)[:, direction]

    def lifted_source_flux(self, x: torch.Tensor,
                           k: torch.Tensor | None = None) -> torch.Tensor:
        """A flux sigma_f of the lifted source, div sigma_f = -f_eps (f_eps = q + d_1 K_eps),
        shape (M, d): sigma_f = -(Q + K_eps) e_1 with Q(x) = int_0^{x_1} q(s, x_2, ...) ds by
        Gauss–Legendre with :data:`FLUX_NODES` nodes (exact for polynomial q up to degree
        2 FLUX_NODES - 1; the cases' sources are constant or a Gaussian of width 0.1). The
        energy form of the fine problem's residual (:mod:`parallel_ms.fine.residual`); ``k``:
        K_eps at the points when the caller holds it already."""
        t, w = (torch.as_tensor(a, dtype=x.dtype, device=x.device)
                for a in np.polynomial.legendre.leggauss(FLUX_NODES))
        t, w = 0.5 * (t + 1), 0.5 * w                          # on (0, 1)
        along = x[:, None, :].repeat(1, FLUX_NODES, 1)
        along[..., 0] = x[:, None, 0] * t                      # (M, nodes, d): (t x_1, x_2, ...)
        q = self.q(along.reshape(-1, self.dim)).reshape(-1, FLUX_NODES)
        sigma = torch.zeros_like(x)
        sigma[:, 0] = -(x[:, 0] * (q @ w) + (self.k(x) if k is None else k))
        return sigma

    # ---- UFL side ---------------------------------------------------------------------------
    def k_ufl(self, mesh: Any) -> Any:
        """K_eps as a UFL expression on a Firedrake mesh."""
        return self.conductivity(self._ufl_coords(mesh), ufl_math())

    def q_ufl(self, mesh: Any) -> Any:
        """q as a UFL expression on a Firedrake mesh."""
        return self.source(self._ufl_coords(mesh), ufl_math())

    def _ufl_coords(self, mesh: Any) -> list[Any]:
        import ufl
        x = ufl.SpatialCoordinate(mesh)
        return [x[i] for i in range(self.dim)]

    def summary(self) -> str:
        """One line for ``python -m parallel_ms cases``."""
        return f"{self.dim}D, eps={self.eps:g}: {self.description}"
