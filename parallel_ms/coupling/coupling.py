"""The coupling term and the reduced gradient of the hybrid objective (paper 000 §3, §4).

    J(y, v) = J_PINN(v) + tau_2 R(y, v),   R = sum_i w_i ((Q v)(x_i) - y(x_i))^2     (3.1), (3.25)
    subject to K~[v]_11 A y = F                                                       (3.17)

Upscaling (4.10) by Monte Carlo over the interior points: K~_11 = (1/M) sum_i K_i (d_1 v_i + 1),
kept inside the Reuss/Voigt bounds of K_eps (coercivity safeguard: projection, whose derivative
is zero while the bound is active, so the gradient stays that of what is applied).

Reduced gradient (3.13)/(4.28): with the adjoint K~ A p = 2 tau_2 W (Q v - y) (= -dJ/dy),

    dJ^/dtheta = dJ/dtheta |_{y fixed} + (p^T A y) dK~_11/dtheta.

:meth:`Coupling.term` returns a per-rank surrogate whose gradient is exactly that (the autodiff
part through Q^T and the network, the adjoint part as the detached scalar p^T A y times the
differentiable local share of K~) and whose value is tau_2 R, so it enters the same
all-reduce as the PINN terms.
"""
from __future__ import annotations

from dataclasses import dataclass

import firedrake as fd
import numpy as np
import torch

from parallel_ms import parallel
from parallel_ms.coarse.problem import CoarseProblem
from parallel_ms.coupling.compression import Compression
from parallel_ms.errors import UserError
from parallel_ms.problems import Problem

WEIGHTS = ("uniform", "lumped")


@dataclass
class CouplingState:
    k11: float            # the applied (bounded) K~_11 of the current coarse state
    k11_raw: float        # the Monte-Carlo value before the bound
    bound_active: bool
    coupling: float       # R (without tau_2)


class Coupling:
    def __init__(self, problem: Problem, mesh: fd.MeshGeometry, n: int, points: np.ndarray,
                 k_points: torch.Tensor, n_global: int, delta: float, tau2: float,
                 weights: str = "uniform", k12: float | None = None,
                 k22: float | None = None) -> None:
        self.comm = mesh.comm
        if (k12 is not None or k22 is not None) and problem.dim != 2:
            raise UserError(f"coupling.k12/k22 are for 2D cases; '{problem.name}' is "
                            f"{problem.dim}D", collective=True)
        self.coarse = CoarseProblem(mesh, problem, k12, k22)
        self.compression = Compression(self.coarse.V, n, points, delta)
        self.tau2 = tau2
        if weights == "lumped":
            self.w = fd.assemble(fd.TestFunction(self.coarse.V) * fd.dx).dat.data_ro.copy()
        else:
            self.w = np.ones(len(self.compression.node_coords))
        self.k_points = k_points
        self.n_global = n_global
        k = k_points.double().cpu().numpy()
        self.voigt = parallel.allreduce_sum(float(k.sum()), self.comm) / n_global
        self.reuss = n_global / parallel.allreduce_sum(float((1 / k).sum()), self.comm)
        if k22 is not None and (k12 or 0.0) ** 2 >= self.reuss * k22:
            raise UserError(f"coupling.k12 = {k12} with coupling.k22 = {k22}: K~ would not be "
                            f"positive definite for K~_11 down to the Reuss bound "
                            f"{self.reuss:.4g} (allowed: k12^2 < {self.reuss:.4g} * k22)",
                            collective=True)
        self.y = np.zeros(len(self.w))
        self.state = CouplingState(float("nan"), float("nan"), False, float("nan"))

    @property
    def node_points(self) -> np.ndarray:
        """Owned coarse nodes (where the network is evaluated for the near-boundary nodes)."""
        return self.compression.node_coords

    def k_local(self, grad_v: torch.Tensor) -> torch.Tensor:
        """This rank's share of K~_11 = (1/M) sum_i K_i (d_1 v_i + 1) (differentiable)."""
        return (self.k_points * (grad_v[:, 0] + 1)).sum() / self.n_global

    def k_global(self, grad_v: torch.Tensor) -> float:
        """K~_11 (Monte Carlo, all ranks)."""
        return parallel.allreduce_sum(float(self.k_local(grad_v).detach()), self.comm)

    def bounded(self, k_raw: float) -> tuple[float, bool]:
        k = min(max(k_raw, self.reuss), self.voigt)
        return k, k != k_raw

    def refresh(self, k_raw: float) -> None:
        """Solve the state for the (bounded) K~_11: y = A^{-1} F / K~_11."""
        k, active = self.bounded(k_raw)
        self.y = self.coarse.state(k)
        self.state = CouplingState(k, k_raw, active, self.state.coupling)

    def term(self, v: torch.Tensor, grad_v: torch.Tensor, v_nodes: torch.Tensor
             ) -> torch.Tensor:
        """Local surrogate of tau_2 R with the reduced gradient (see the module docstring)."""
        qv = self.compression.apply(v.detach().double().cpu().numpy(),
                                    v_nodes.detach().double().cpu().numpy())
        e = qv - self.y
        r_local = float((self.w * e * e).sum())
        self.state.coupling = parallel.allreduce_sum(r_local, self.comm)
        rhs = 2 * self.tau2 * self.w * e                      # -dJ/dy
        g_points, g_nodes = self.compression.transpose(rhs)  # d(tau_2 R)/dv, y fixed
        as_t = lambda a: torch.as_tensor(a, dtype=v.dtype, device=v.device)  # noqa: E731
        s = as_t(g_points) @ v + as_t(g_nodes) @ v_nodes
        if not self.state.bound_active:
            p = self.coarse.adjoint(self.state.k11, rhs)
            s = s + self.coarse.energy(p, self.y) * self.k_local(grad_v)
        value = self.tau2 * r_local
        return s + (value - s.detach())
