"""The PINN terms of the objective (3.24) on this rank's collocation points.

    J_PINN(v) = |Omega|/M sum_i r(x_i)^2 + tau_1 |dOmega|/M_b sum_b v(x_b)^2,
    r = -K_eps lap v - grad K_eps . grad v - f_eps,   f_eps = q + d_1 K_eps     (4.8)/(4.11)

and, with ``loss.tau_weak > 0``, the weak residual ||Phi r||^2 (:mod:`.weak_residual`).

M and M_b are the GLOBAL point counts, so each rank's terms are partial sums whose sum over
ranks is the serial value for the same global point set. K_eps, grad K_eps and f_eps are
evaluated once per point set.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from parallel_ms.coupling.coupling import Coupling
from parallel_ms.fine.derivatives import derivatives
from parallel_ms.fine.sampling import Shard
from parallel_ms.problems import Problem
from parallel_ms.training.weak_residual import WeakResidual

TERMS = ("residual", "boundary")


def residual(k: torch.Tensor, grad_k: torch.Tensor, f: torch.Tensor, lap: torch.Tensor,
             grad: torch.Tensor) -> torch.Tensor:
    """r = -K lap v - grad K . grad v - f (the lifted problem (4.8)); for a network with n
    outputs (one per temperature drop) lap and f are (M, n) and grad is (M, d, n)."""
    if lap.dim() == 2:
        k, grad_k = k[:, None], grad_k[:, :, None]
    return -k * lap - (grad_k * grad).sum(1) - f


class PINNObjective:
    """Local partial sums of the PINN terms for one shard of points."""

    def __init__(self, problem: Problem, shard: Shard, dtype: torch.dtype,
                 device: torch.device, tau1: float = 1.0, hard_bc: bool = False,
                 outputs: int = 1) -> None:
        self.problem = problem
        self.outputs = outputs
        self.dtype, self.device = dtype, device
        self.tau1 = tau1
        self.hard_bc = hard_bc
        self.coupling: Coupling | None = None
        self.weak: WeakResidual | None = None
        self._weak_of: Callable[[Shard], WeakResidual] | None = None
        self.x_nodes = torch.empty((0, problem.dim), dtype=dtype, device=device)
        #: decides, from the current Monte-Carlo K~_11, whether to re-solve the coarse state
        self.refresh_policy: Callable[[Any], bool] = lambda k: True
        self.set_points(shard)

    def set_points(self, shard: Shard) -> None:
        as_t = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)  # noqa: E731
        x64 = torch.as_tensor(shard.interior, dtype=torch.float64).reshape(-1, self.problem.dim)
        self.x_int = as_t(x64)
        self.k = as_t(self.problem.k(x64))
        self.grad_k = as_t(self.problem.grad_k(x64))
        self.f = as_t(self._source(x64))
        self.x_bnd = as_t(shard.boundary).reshape(-1, self.problem.dim)
        self.w_int = 1.0 / shard.n_interior  # |Omega| = 1
        boundary_measure = 2.0 if self.problem.dim == 1 else 4.0  # end points / perimeter
        self.w_bnd = self.tau1 * boundary_measure / max(shard.n_boundary, 1)
        self.shard = shard
        if self._weak_of is not None:
            self.weak = self._weak_of(shard)
        if self.coupling is not None:
            self.coupling.set_points(shard.interior, self.k, shard.n_interior)

    def _source(self, x64: torch.Tensor) -> torch.Tensor:
        """f_eps per output: (M,) for one output, (M, n) for the temperature drops e_1..e_n."""
        if self.outputs == 1:
            return self.problem.lifted_source(x64)
        return torch.stack([self.problem.lifted_source(x64, i) for i in range(self.outputs)], 1)

    def attach_coupling(self, coupling: Coupling) -> None:
        """Hybrid method: add the coupling term tau_2 R (3.25) with its adjoint gradient."""
        self.coupling = coupling
        self.x_nodes = torch.tensor(coupling.node_points, dtype=self.dtype,
                                       device=self.device)

    def attach_weak(self, cells: int, tau: float, comm: Any) -> None:
        """Add the weak residual tau_w ||Phi r||^2 on hat functions of ``cells`` cells per
        direction (:mod:`.weak_residual`)."""
        self._weak_of = lambda shard: WeakResidual(
            shard.interior.reshape(-1, self.problem.dim), shard.n_interior, cells, tau,
            self.outputs, comm)
        self.set_points(self.shard)

    @property
    def term_names(self) -> list[str]:
        return (["residual"] + ([] if self.hard_bc else ["boundary"])
                + ([] if self.weak is None else ["weak"])
                + ([] if self.coupling is None else ["coupling"]))

    def terms(self, forward: nn.Module) -> dict[str, torch.Tensor]:
        """Local partial sums {residual, boundary, weak, coupling} (boundary only with soft
        BCs, weak and coupling when attached) through ``forward`` (a
        :class:`~parallel_ms.fine.model.PINNForward`, maybe DDP-wrapped)."""
        v, g, lap, v_b, v_nodes = forward(self.x_int, self.x_bnd, self.x_nodes)
        r = residual(self.k, self.grad_k, self.f, lap, g)
        out = {"residual": self.w_int * (r ** 2).sum()}
        if not self.hard_bc:
            out["boundary"] = self.w_bnd * (v_b ** 2).sum()
        if self.weak is not None:
            out["weak"] = self.weak.term(r)
        if self.coupling is not None:
            k_raw = self.coupling.k_global(g)
            if self.refresh_policy(k_raw):
                self.coupling.refresh(k_raw)
            out["coupling"] = self.coupling.term(v, g, v_nodes)
        return out

    def pointwise_residual(self, net: nn.Module, x: np.ndarray) -> np.ndarray:
        """|r| at arbitrary local points (for adaptive resampling; the Euclidean norm over
        the outputs)."""
        x64 = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.problem.dim)
        xt = x64.to(self.dtype).to(self.device)
        with torch.enable_grad():
            _, g, lap = derivatives(net, xt, "jet")
        p = self.problem
        r = residual(p.k(x64).to(xt), p.grad_k(x64).to(xt), self._source(x64).to(xt), lap, g)
        r = r.detach().abs()
        return (r if r.dim() == 1 else r.norm(dim=1)).cpu().double().numpy()
