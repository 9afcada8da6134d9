"""The coupling's coarse state on the GMsFEM space (``coarse.space = "gmsfem"``, paper 004's
coarse space for the hybrid method of paper 000).

With a multiscale coarse space the coarse problem needs no upscaled coefficient: the coarse
state is the GMsFEM solution u_ms of the lifted problem (4.8) in V_ms
(:class:`~parallel_ms.multiscale.solver.GmsfemSolver`: K_eps itself in the local spectral
problems and in R^T A R), and the coupling term (3.25) compares the network's compression
(3.26) with the same compression of u_ms,

    R = sum_n w_n ((Q v)_n - (Q u_ms)_n)^2,

Q u_ms taken from u_ms's values at the same collocation points (and at the near-boundary
coarse nodes), so R vanishes for v = u_ms and sees only the coarse-scale part of v - u_ms.

The state does not depend on the network. In the reduced gradient (3.13) the adjoint part
<dJ^/dK~, dK~/dtheta> is absent (K~ is not a variable: :class:`NoUpscaling`), the
tangent-linear state is zero, and the coupling's gradient is Q^T alone; u_ms is solved once
per run and compressed once per point set.
"""
from __future__ import annotations

from typing import Any

import firedrake as fd
import numpy as np
import torch

from parallel_ms.config import GmsfemConfig
from parallel_ms.coupling.compression import Compression
from parallel_ms.multiscale.nested import nested_meshes
from parallel_ms.multiscale.solver import GmsfemSolver
from parallel_ms.coarse.problem import solver_words
from parallel_ms.multiscale.space import CoarseSolver, default_solver
from parallel_ms.problems import Problem


class NoUpscaling:
    """The upscaling interface of :class:`~parallel_ms.coupling.coupling.Coupling` for a
    coarse problem that takes K_eps itself: nothing is measured from the network, and no
    derivative passes through a coefficient."""

    outputs = 1

    def measure(self, grad_v: torch.Tensor) -> float:
        return 0.0

    def bound(self, k_raw: float) -> tuple[float, bool]:
        return 0.0, False

    def passes_gradient(self) -> bool:
        return False

    def tangent(self, d_grad_v: torch.Tensor) -> float:
        return 0.0

    def jacobian(self, grad_v: torch.Tensor, params: list[torch.Tensor]) -> np.ndarray:
        return np.zeros(sum(p.numel() for p in params))

    @staticmethod
    def log_values(k: float, k_raw: float, active: bool) -> dict[str, Any]:
        return {}


class MultiscaleState:
    """u_ms on the nested meshes of the coupling's coarse mesh (``cells`` per direction,
    ``settings.refinement`` fine cells per coarse cell and direction, ``settings.basis``
    eigenfunctions per neighbourhood), and its compression at the coupling's coarse nodes.
    ``V`` is the coupling's coarse P1 space on ``mesh`` (its nodes carry the rows)."""

    def __init__(self, problem: Problem, mesh: fd.MeshGeometry, cells: int,
                 settings: GmsfemConfig, partitioner: str = "simple") -> None:
        self.V = fd.FunctionSpace(mesh, "CG", 1)
        self.settings = settings
        meshes = nested_meshes(cells, settings.refinement, mesh.comm, partitioner)
        solver = GmsfemSolver(problem, meshes, settings)
        #: V_ms (its basis R), R^T A R and its factorisation (kept for the Galerkin coupling)
        self.space, self.matrix = solver.space()
        self.solver = CoarseSolver(self.matrix)
        #: the GMsFEM solution of (4.8) on the fine P1 space of the nested meshes
        self.u_ms = solver.solve(self.space, self.solver)
        self.dofs = self.space.dofs
        self.y = np.zeros(0)
        self._at_nodes: np.ndarray | None = None   # the coarse nodes do not move

    def values_at(self, x: np.ndarray) -> np.ndarray:
        """u_ms at this rank's points ``x`` (m, 2), in their order (collective)."""
        evaluator = fd.PointEvaluator(self.u_ms.function_space().mesh(), x, redundant=False)
        return np.asarray(evaluator.evaluate(self.u_ms))

    def compress(self, compression: Compression, points: np.ndarray) -> None:
        """Q u_ms at the owned coarse dofs for this rank's collocation ``points`` (u_ms at the
        coarse nodes evaluated once per run, at the points once per point set)."""
        if self._at_nodes is None:
            self._at_nodes = self.values_at(compression.node_coords)
        self.y = compression.apply(self.values_at(points), self._at_nodes)

    def states(self, k: float) -> list[np.ndarray]:
        """The coarse state (one output); ``k`` is not used (no K~)."""
        return [self.y]

    def tangents(self, k: float, dk: Any, ys: list[np.ndarray]) -> list[np.ndarray]:
        """The tangent-linear state: zero, u_ms does not depend on the network."""
        return [np.zeros_like(self.y)]

    def describe(self) -> str:
        """The coarse space in words, for a run's header."""
        s = self.settings
        basis = f"{s.basis}" + (f" at most (eigenvalues < {s.threshold:g})" if s.threshold else "")
        return (f"coarse problem GMsFEM, {self.dofs} dofs ({basis} eigenfunctions per "
                f"neighbourhood, {s.refinement} fine cells per coarse cell and direction), "
                f"{solver_words(default_solver(self.matrix))}; no upscaled K~")
