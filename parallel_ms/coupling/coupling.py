"""The coupling term and the reduced gradient of the hybrid objective (paper 000 §3, §4).

    J(y, v) = J_PINN(v) + tau_2 R(y, v),   R = sum_i sum_n w_n ((Q v_i)(x_n) - y_i(x_n))^2
    subject to B(K~[v]) y_i = F_i(K~[v])                                   (3.1), (3.25), (3.17)

one coarse state y_i per network output (one for the paper's K~_11 upscaling, two for the
block-tensor upscaling of Algorithm 4.1). The upscaling and its coercivity safeguard live in
:mod:`.upscaling`, the coarse problems in :mod:`parallel_ms.coarse`; on the GMsFEM space
(``space = "gmsfem"``) the state is the multiscale solution of :mod:`.multiscale_state`, which
takes K_eps itself (no K~, no adjoint part); there the ``galerkin`` form replaces the term by
the error's Galerkin projection onto V_ms (:mod:`.galerkin`: rows from the fine residual, no
state to match, zero at the solution).

Reduced gradient (3.13)/(4.28): with the adjoints B p_i = 2 tau_2 W (Q v_i - y_i) (= -dJ/dy_i),

    dJ^/dtheta = dJ/dtheta |_{y fixed} + <dJ^/dK~, dK~/dtheta>,

where dJ^/dK~ comes from the coarse problem's ``sensitivity(p, y)``. The term is defined by its
rows sqrt(tau_2 w) (Q v_i - y_i) (:meth:`Coupling.rows`, tau_2 R the sum over ranks of their
squares); :meth:`Coupling.rows_cotangent` is their adjoint (Q^T, and the adjoint coarse solve
for the path through K~), which the training objective uses as the rows' backward, so the
reduced gradient above is 2 J^T rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import firedrake as fd
import numpy as np
import torch

from parallel_ms import parallel
from parallel_ms.coarse.block_problem import BlockCoarseProblem
from parallel_ms.coarse.problem import CoarseProblem, describe_solver
from parallel_ms.config import GmsfemConfig
from parallel_ms.coupling.compression import Compression
from parallel_ms.coupling.galerkin import GalerkinProjection
from parallel_ms.coupling.multiscale_state import MultiscaleState, NoUpscaling
from parallel_ms.coupling.upscaling import BlockTensorUpscaling, ScalarUpscaling
from parallel_ms.errors import UserError
from parallel_ms.problems import Problem


@dataclass
class CouplingState:
    k: Any                # the applied (bounded) K~ of the current coarse state
    k_raw: Any            # the Monte-Carlo value before the bound
    bound_active: Any     # bool (scalar) / number of blocks (block tensor)
    coupling: float       # R (without tau_2)


class Coupling:
    def __init__(self, problem: Problem, mesh: fd.MeshGeometry, *, cells: int,
                 points: np.ndarray, k_points: torch.Tensor, n_global: int, delta: float,
                 tau2: float, weights: str = "uniform", k12: float | None = None,
                 k22: float | None = None, upscaling: str = "isotropic",
                 blocks: Sequence[int] = (1, 1), space: str = "p1",
                 gmsfem: GmsfemConfig | None = None, partitioner: str = "simple",
                 form: str = "compression", residual_form: str = "strong") -> None:
        """The coupling of the fine problem on this rank's collocation ``points`` (with the
        points ``k_points`` of the Monte-Carlo upscaling, ``n_global`` of them on all ranks) to
        the coarse problem on ``mesh`` (``cells`` per direction): compression radius ``delta``
        of Q_delta (2.9), (3.26), weight ``tau2`` (3.1), node weights ``weights`` (uniform |
        lumped), the given K~_12, K~_22 ``k12``/``k22`` (2D), the ``upscaling`` (isotropic
        (4.10) | block-tensor, Algorithm 4.1) and its ``blocks`` per direction; the coarse
        ``space``: p1 (the upscaled K~, paper 000) | gmsfem (:mod:`.multiscale_state` with the
        ``gmsfem`` settings on nested meshes partitioned by ``partitioner``, 2D); the term's
        ``form``: compression (3.25) | galerkin (the GMsFEM space only: the error's projection
        onto V_ms from the fine residual rows of ``residual_form``, :mod:`.galerkin`; its
        rows are the objective's)."""
        n = cells
        self.comm = mesh.comm
        if (k12 is not None or k22 is not None or upscaling != "isotropic"
                or space != "p1") and problem.dim != 2:
            raise UserError(f"coupling.k12/k22, block-tensor upscaling and the GMsFEM coarse "
                            f"space are for 2D cases; "
                            f"'{problem.name}' is {problem.dim}D", collective=True)
        if upscaling == "block-tensor" and any(n % b for b in blocks):
            raise UserError(f"coupling.blocks = {list(blocks)} with coarse.cells = {n}: blocks "
                            f"must be unions of coarse cells (allowed: divisors of {n})",
                            collective=True)
        if form == "galerkin" and space != "gmsfem":
            raise UserError(f"coupling.form = 'galerkin' with coarse.space = '{space}' "
                            f"(allowed: 'compression' on the P1 space; the Galerkin form tests "
                            f"with V_ms's basis)", collective=True)
        self.n, self.delta, self.kind, self.blocks = n, delta, upscaling, tuple(blocks)
        self.form, self.residual_form = form, residual_form
        #: the Galerkin form's rows (coupling.form = "galerkin"), rebuilt per point set
        self.galerkin: GalerkinProjection | None = None
        self.coarse: CoarseProblem | BlockCoarseProblem | MultiscaleState = (
            MultiscaleState(problem, mesh, n, gmsfem or GmsfemConfig(), partitioner)
            if space == "gmsfem"
            else BlockCoarseProblem(mesh, problem, blocks) if upscaling == "block-tensor"
            else CoarseProblem(mesh, problem, k12, k22))
        self.set_points(points, k_points, n_global)
        if k22 is not None:
            reuss = self.upscaling.reuss
            if (k12 or 0.0) ** 2 >= reuss * k22:
                raise UserError(f"coupling.k12 = {k12} with coupling.k22 = {k22}: K~ would not "
                                f"be positive definite for K~_11 down to the Reuss bound "
                                f"{reuss:.4g} (allowed: k12^2 < {reuss:.4g} * k22)",
                                collective=True)
        self.tau2 = tau2
        if weights == "lumped":
            self.w = fd.assemble(fd.TestFunction(self.coarse.V) * fd.dx).dat.data_ro.copy()
        else:
            self.w = np.ones(len(self.compression.node_coords))
        self.ys = [np.zeros(len(self.w))] * self.upscaling.outputs
        self.state = CouplingState(float("nan"), float("nan"), False, float("nan"))

    def set_points(self, points: np.ndarray, k_points: torch.Tensor, n_global: int) -> None:
        """(New) collocation points, e.g. after adaptive resampling: the compression operator
        and the upscaling's point data are rebuilt (a multiscale state is compressed anew);
        the coarse problem is kept."""
        self.compression = Compression(self.coarse.V, self.n, points, self.delta)
        self.upscaling: ScalarUpscaling | BlockTensorUpscaling | NoUpscaling
        if isinstance(self.coarse, MultiscaleState):
            self.upscaling = NoUpscaling()
            self.coarse.compress(self.compression, points)
            if self.form == "galerkin":
                k = k_points.double().cpu().numpy() if self.residual_form == "energy" else None
                self.galerkin = GalerkinProjection(self.coarse, points, n_global, k)
        elif self.kind == "block-tensor":
            self.upscaling = BlockTensorUpscaling(points, k_points, self.blocks, self.comm)
        else:
            self.upscaling = ScalarUpscaling(k_points, n_global, self.comm)

    @property
    def outputs(self) -> int:
        """Network outputs the coupling needs (1, or 2 temperature drops for Algorithm 4.1)."""
        return self.upscaling.outputs

    @property
    def node_points(self) -> np.ndarray:
        """Owned coarse nodes (where the network is evaluated for the near-boundary nodes)."""
        return self.compression.node_coords

    def k_global(self, grad_v: torch.Tensor) -> Any:
        """K~ before the bound (Monte Carlo, all ranks)."""
        return self.upscaling.measure(grad_v)

    def refresh(self, k_raw: Any) -> None:
        """Solve the coarse states for the bounded K~."""
        k, active = self.upscaling.bound(k_raw)
        self.ys = self.coarse.states(k)
        self.state = CouplingState(k, k_raw, active, self.state.coupling)

    def describe(self) -> str:
        """The coarse problem's size and solver in words, for a run's header."""
        if isinstance(self.coarse, MultiscaleState):
            return self.coarse.describe() + (
                "; coupling: the error's Galerkin projection onto V_ms from the "
                f"{self.residual_form}-form residual" if self.galerkin is not None else "")
        return describe_solver(self.coarse.V)

    def log_values(self) -> dict[str, Any]:
        st = self.state
        r = st.coupling if self.galerkin is None else self.galerkin.norm2
        return {**self.upscaling.log_values(st.k, st.k_raw, st.bound_active),
                "R": r, "tau2": self.tau2}

    def _errors(self, v: torch.Tensor, v_nodes: torch.Tensor) -> list[np.ndarray]:
        """e_i = Q v_i - y_i at the owned coarse dofs, one per output; records the global R."""
        vs, vn = _columns(v), _columns(v_nodes)
        e = [self.compression.apply(vs[:, i], vn[:, i]) - y for i, y in enumerate(self.ys)]
        r_local = float(sum((self.w * ei * ei).sum() for ei in e))
        self.state.coupling = parallel.allreduce_sum(r_local, self.comm)
        return e

    # ---- the coupling term as residual rows (docs/second-order.md §2) -------------------
    def _row_scale(self) -> np.ndarray:
        return np.sqrt(self.tau2 * self.w)

    def rows(self, v: torch.Tensor, v_nodes: torch.Tensor) -> np.ndarray:
        """sqrt(tau_2 w) (Q v_i - y_i) at the owned dofs, outputs concatenated: tau_2 R is the
        sum over ranks of their squares. Call after :meth:`refresh` at the current K~."""
        return np.concatenate([self._row_scale() * e for e in self._errors(v, v_nodes)])

    def rows_tangent(self, dv: torch.Tensor, d_grad_v: torch.Tensor, dv_nodes: torch.Tensor
                     ) -> np.ndarray:
        """The rows' derivative along a change (dv, d grad v, dv_nodes) of the network:
        sqrt(tau_2 w) (Q dv_i - dy_i), dy from the tangent-linear coarse problem for
        dK~ = tangent(d grad v) (collective)."""
        dys = self.coarse.tangents(self.state.k, self.upscaling.tangent(d_grad_v), self.ys)
        dvs, dvn = _columns(dv), _columns(dv_nodes)
        return np.concatenate([self._row_scale() * (self.compression.apply(dvs[:, i], dvn[:, i])
                                                    - dy) for i, dy in enumerate(dys)])

    def rows_tangent_columns(self, dv: torch.Tensor, dv_nodes: torch.Tensor, dk: np.ndarray
                             ) -> np.ndarray:
        """:meth:`rows_tangent` for the P changes along the last axis of dv and dv_nodes, with
        a scalar K~ whose changes are ``dk`` (P,): (rows, P), the coupling's block of the
        explicit Jacobian. The tangent-linear coarse state is linear in one number, dy = dK~
        (dy/dK~), so one coarse tangent serves every column and the compression is one
        sparse-dense product (the block tensor takes :meth:`rows_tangent` per column)."""
        (unit,) = self.coarse.tangents(self.state.k, 1.0, self.ys)
        as_np = lambda t: t.detach().reshape(len(t), -1).double().cpu().numpy()  # noqa: E731
        qv = self.compression.apply_columns(as_np(dv), as_np(dv_nodes))
        return self._row_scale()[:, None] * (qv - unit[:, None] * dk[None, :])

    def rows_cotangent(self, u: np.ndarray, grad_v: torch.Tensor
                       ) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        """The adjoint of :meth:`rows_tangent` applied to u (owned dofs, outputs
        concatenated): cotangents of v at the points (M, n), of grad v (its shape) and of v
        at the owned nodes (collective: one adjoint solve per output)."""
        su = np.split(np.tile(self._row_scale(), len(self.ys)) * u, len(self.ys))
        pairs = [self.compression.transpose(b) for b in su]
        cv = np.stack([p for p, _ in pairs], 1)
        cn = np.stack([n for _, n in pairs], 1)
        if self.upscaling.passes_gradient():
            ps = [self.coarse.adjoint(self.state.k, b) for b in su]
            cg = self.upscaling.cotangent(self.coarse.sensitivity(ps, self.ys))
        else:
            cg = torch.zeros_like(grad_v)
        return cv, cg, cn


def _columns(t: torch.Tensor) -> np.ndarray:
    """Values per output as a float64 array (m, n)."""
    return t.detach().reshape(len(t), -1).double().cpu().numpy()
