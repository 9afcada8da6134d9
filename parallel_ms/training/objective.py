"""The training objective (3.24)/(3.25) on this rank's points, defined once: as weighted
residual rows, whose squared norms are the loss terms.

    residual  sqrt(|Omega| / M) r(x_i),   r = -K_eps lap v - grad K_eps . grad v - f_eps  (4.8)
              (``form = "energy"``: the d rows rho(x_i) = (K_eps grad v - sigma_f) / sqrt(K_eps)
              of the Ritz energy instead, :mod:`parallel_ms.fine.residual`)
    boundary  sqrt(tau_1 |dOmega| / M_b) v(x_b)                             (soft BCs only)
    weak      Phi r        (r tested against coarse hat functions, loss.tau_weak > 0: .weak_residual)
    coupling  sqrt(tau_2 w_n) (Q v_i - y_i(K~(theta)))_n                  (owned coarse dofs)
              (``coupling.form = "galerkin"``: sqrt(tau_2 D_jj) c_j, c = (R^T A R)^-1 Phi r the
              error's projection onto V_ms, owned multiscale dofs: .galerkin)

so J_PINN(v) = |Omega|/M sum_i r(x_i)^2 + tau_1 |dOmega|/M_b sum_b v(x_b)^2 (+ the weak term,
+ tau_2 R (3.25) for the hybrid method) is the sum over ranks and terms of ||rows||^2. The
rows are differentiable: the weak and coupling rows, computed by PETSc, are torch autograd
functions whose backward is their adjoint (for the coupling the reduced gradient (3.13)/(4.28):
the compression's transpose and one adjoint coarse solve per output), so the scalar loss,
its gradient (Adam, L-BFGS: :meth:`PINNObjective.terms`) and the Gauss-Newton products
(:mod:`.residuals`: reverse mode through the same rows, forward mode through
:meth:`PINNObjective.row_tangents`) all derive from :meth:`PINNObjective.rows`.

M and M_b are the GLOBAL point counts, so each rank's terms are partial sums whose sum over
ranks is the serial value for the same global point set. K_eps, grad K_eps and f_eps are
evaluated once per point set (with the energy form: K_eps and sigma_f).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from parallel_ms.coupling.coupling import Coupling
from parallel_ms.fine.derivatives import derivatives
from parallel_ms.fine.residual import energy_residual, residual
from parallel_ms.fine.sampling import Shard
from parallel_ms.problems import Problem
from parallel_ms.training.schedules import CoarseRefresh, Tau2Continuation
from parallel_ms.training.weak_residual import WeakResidual

#: the network's outputs at the objective's points: v, grad v, lap v (interior), v (boundary),
#: v (owned coarse nodes, for the coupling)
Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _tensor(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


class _WeakRows(torch.autograd.Function):
    """Phi r (collective), backward Phi^T u."""

    @staticmethod
    def forward(ctx: Any, r: torch.Tensor, weak: WeakResidual) -> torch.Tensor:
        ctx.weak, ctx.shape = weak, r.shape
        return _tensor(weak.rows(r), r)

    @staticmethod
    def backward(ctx: Any, u: torch.Tensor) -> tuple[torch.Tensor, None]:
        c = ctx.weak.cotangent(u.detach().double().cpu().numpy())
        return _tensor(c, u).reshape(ctx.shape), None


class _CouplingRows(torch.autograd.Function):
    """sqrt(tau_2 w) (Q v - y(K~)) at the owned dofs (collective); backward: the reduced
    gradient through Q^T (y fixed) and the adjoint coarse solve (through K~ and grad v)."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, grad_v: torch.Tensor, v_nodes: torch.Tensor,
                coupling: Coupling) -> torch.Tensor:
        ctx.coupling, ctx.shapes = coupling, (v.shape, v_nodes.shape)
        ctx.save_for_backward(grad_v)
        return _tensor(coupling.rows(v, v_nodes), v)

    @staticmethod
    def backward(ctx: Any, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        (grad_v,) = ctx.saved_tensors
        cv, cg, cn = ctx.coupling.rows_cotangent(u.detach().double().cpu().numpy(), grad_v)
        return (_tensor(cv, u).reshape(ctx.shapes[0]), cg.to(grad_v).expand_as(grad_v),
                _tensor(cn, u).reshape(ctx.shapes[1]), None)


class PINNObjective:
    """The objective's rows and terms for one shard of points (with the coupling and the weak
    residual when attached). ``refresh`` decides when the coarse state is re-solved; ``form``
    is the fine residual's (``loss.form``: ``"strong"`` or ``"energy"``, the latter with one
    output)."""

    def __init__(self, problem: Problem, shard: Shard, dtype: torch.dtype,
                 device: torch.device, tau1: float = 1.0, hard_bc: bool = False,
                 outputs: int = 1, refresh: CoarseRefresh | None = None,
                 form: str = "strong") -> None:
        self.problem = problem
        self.form = form
        self.outputs = outputs
        self.dtype, self.device = dtype, device
        self.tau1 = tau1
        self.hard_bc = hard_bc
        self.refresh = refresh or CoarseRefresh()
        self.coupling: Coupling | None = None
        self.tau2: Tau2Continuation | None = None
        self.weak: WeakResidual | None = None
        self._weak_cells: tuple[int, float, Any, str] | None = None
        #: bumped whenever the objective's definition changes (points, tau_2): what a cached
        #: linearization (Gauss-Newton) depends on besides the parameters
        self.version = 0
        self.x_nodes = torch.empty((0, problem.dim), dtype=dtype, device=device)
        self.set_points(shard)

    def set_points(self, shard: Shard) -> None:
        as_t = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)  # noqa: E731
        x64 = torch.as_tensor(shard.interior, dtype=torch.float64).reshape(-1, self.problem.dim)
        self.x_int = as_t(x64)
        k64 = self.problem.k(x64)
        self.k = as_t(k64)
        self.grad_k = as_t(self.problem.grad_k(x64))
        self.f = as_t(self._source(x64))
        if self.form == "energy":
            self.sigma = as_t(self.problem.lifted_source_flux(x64, k64))
        self.x_bnd = as_t(shard.boundary).reshape(-1, self.problem.dim)
        self.w_int = 1.0 / (shard.n_interior if shard.weights is None  # |Omega| = 1
                            else shard.weight_total)
        boundary_measure = 2.0 if self.problem.dim == 1 else 4.0  # end points / perimeter
        self.w_bnd = self.tau1 * boundary_measure / max(shard.n_boundary, 1)
        #: the rows' quadrature scales, sqrt(|Omega| / M) and sqrt(tau_1 |dOmega| / M_b); with
        #: weighted points (a boundary layer) sqrt(|Omega| w_i / sum w) per interior point
        self.row_scale = {"residual": math.sqrt(self.w_int), "boundary": math.sqrt(self.w_bnd)}
        self.point_scale = (None if shard.weights is None
                            else as_t(np.sqrt(shard.weights * self.w_int)))
        self.shard = shard
        if self._weak_cells is not None:
            cells, tau, comm, norm = self._weak_cells
            self.weak = WeakResidual(shard.interior.reshape(-1, self.problem.dim),
                                     shard.n_interior, cells, tau, self.outputs, comm, norm)
        if self.coupling is not None:
            self.coupling.set_points(shard.interior, self.k, shard.n_interior)
        self.version += 1

    def _source(self, x64: torch.Tensor) -> torch.Tensor:
        """f_eps per output: (M,) for one output, (M, n) for the temperature drops e_1..e_n."""
        if self.outputs == 1:
            return self.problem.lifted_source(x64)
        return torch.stack([self.problem.lifted_source(x64, i) for i in range(self.outputs)], 1)

    def attach_coupling(self, coupling: Coupling, tau2: Tau2Continuation | None = None) -> None:
        """Hybrid method: add the coupling term tau_2 R (3.25), tau_2 over the steps by
        ``tau2`` (default: the coupling's own, constant)."""
        self.coupling, self.tau2 = coupling, tau2
        self.x_nodes = torch.tensor(coupling.node_points, dtype=self.dtype, device=self.device)

    def attach_weak(self, cells: int, tau: float, comm: Any, norm: str = "l2") -> None:
        """Add the weak residual tau_w ||Phi r||^2 on hat functions of ``cells`` cells per
        direction, in the norm ``norm`` (:mod:`.weak_residual`)."""
        self._weak_cells = (cells, tau, comm, norm)
        self.set_points(self.shard)

    def advance(self, step: int) -> None:
        """The objective of training step ``step``: tau_2 from its continuation, the step
        the coarse-refresh rule counts."""
        self.refresh.step = step
        if self.coupling is not None and self.tau2 is not None:
            tau2 = self.tau2(step)
            if tau2 != self.coupling.tau2:
                self.coupling.tau2 = tau2
                self.version += 1

    @property
    def coefficients(self) -> tuple[torch.Tensor, ...]:
        """The per-point coefficient data of :meth:`point_residual`: K (energy form) or
        K, grad K (strong form); the residual is linear in the network's outputs given them."""
        return (self.k,) if self.form == "energy" else (self.k, self.grad_k)

    @property
    def load(self) -> torch.Tensor:
        """The residual's affine part per point: the lifted source's flux sigma_f (energy
        form) or the lifted source f_eps (strong form)."""
        return self.sigma if self.form == "energy" else self.f

    @property
    def extras(self) -> tuple[torch.Tensor, ...]:
        """The per-point data of :meth:`point_residual` besides the network's outputs."""
        return (*self.coefficients, self.load)

    def point_residual(self, *extras_lap_grad: torch.Tensor) -> torch.Tensor:
        """The fine residual in this objective's form from ``(*extras, lap v, grad v)``
        (:attr:`extras`; a zero :attr:`load` gives its linear change)."""
        *extras, lap, g = extras_lap_grad
        return energy_residual(*extras, g) if self.form == "energy" else residual(
            *extras, lap, g)

    def scale_residual(self, r: torch.Tensor, factor: float = 1.0, in_place: bool = False
                       ) -> torch.Tensor:
        """The residual's rows (or their Jacobian), one slice per point along the first axis,
        times ``factor`` and their quadrature scale (:attr:`row_scale`, per point with
        weighted points), in one pass."""
        scale = (factor * self.row_scale["residual"] if self.point_scale is None
                 else (factor * self.point_scale).reshape(-1, *[1] * (r.dim() - 1)))
        return r.mul_(scale) if in_place else r * scale

    @property
    def term_names(self) -> list[str]:
        return (["residual"] + ([] if self.hard_bc else ["boundary"])
                + ([] if self.weak is None else ["weak"])
                + ([] if self.coupling is None else ["coupling"]))

    def outputs_of(self, forward: nn.Module) -> Outputs:
        """The network's outputs at this shard's points through ``forward`` (a
        :class:`~parallel_ms.fine.model.PINNForward`, maybe DDP-wrapped)."""
        return forward(self.x_int, self.x_bnd, self.x_nodes)

    def rows(self, outs: Outputs, consistent: bool = True) -> dict[str, torch.Tensor]:
        """This rank's rows per term (the module docstring), differentiable with respect to
        the network's outputs ``outs``. With a coupling the coarse state is re-solved first
        when ``consistent`` or the refresh rule says so (collective)."""
        v, g, lap, v_b, v_nodes = outs
        r = self.point_residual(*self.extras, lap, g)
        out = {"residual": self.scale_residual(r).reshape(-1)}
        if not self.hard_bc:
            out["boundary"] = self.row_scale["boundary"] * v_b.reshape(-1)
        if self.weak is not None:
            out["weak"] = _WeakRows.apply(r, self.weak)
        if self.coupling is not None:
            k_raw = self.coupling.k_global(g.detach())
            if self.refresh.due(k_raw, consistent):
                self.coupling.refresh(k_raw)
            c = self.coupling
            out["coupling"] = (_CouplingRows.apply(v, g, v_nodes, c) if c.galerkin is None
                               else math.sqrt(c.tau2) * _WeakRows.apply(r, c.galerkin))
        return out

    def row_tangents(self, dv: torch.Tensor, dg: torch.Tensor, dlap: torch.Tensor,
                     dv_b: torch.Tensor, dv_nodes: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows' change for a change (dv, d grad v, d lap v, dv_b, dv_nodes) of the
        network's outputs (forward mode; the coupling's through the tangent-linear coarse
        problem at the current coarse state, collective)."""
        dr = self.point_residual(*self.coefficients, torch.zeros_like(self.load), dlap, dg)
        out = {"residual": self.scale_residual(dr).reshape(-1)}
        if not self.hard_bc:
            out["boundary"] = self.row_scale["boundary"] * dv_b.reshape(-1)
        if self.weak is not None:
            out["weak"] = _tensor(self.weak.rows(dr), dr)
        if self.coupling is not None:
            c = self.coupling
            out["coupling"] = _tensor(c.rows_tangent(dv, dg, dv_nodes) if c.galerkin is None
                                      else math.sqrt(c.tau2) * c.galerkin.tangent(dr), dv)
        return out

    def terms(self, forward: nn.Module, consistent: bool = True) -> dict[str, torch.Tensor]:
        """Local partial sums ||rows||^2 per term (:meth:`rows`), differentiable."""
        return {name: (r * r).sum()
                for name, r in self.rows(self.outputs_of(forward), consistent).items()}

    def pointwise_residual(self, net: nn.Module, x: np.ndarray) -> np.ndarray:
        """|r| of the strong residual at arbitrary local points (for adaptive resampling, in
        either form; the Euclidean norm over the outputs)."""
        x64 = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.problem.dim)
        xt = x64.to(self.dtype).to(self.device)
        with torch.enable_grad():
            _, g, lap = derivatives(net, xt, "jet")
        p = self.problem
        r = residual(p.k(x64).to(xt), p.grad_k(x64).to(xt), self._source(x64).to(xt), lap, g)
        r = r.detach().abs()
        return (r if r.dim() == 1 else r.norm(dim=1)).cpu().double().numpy()
