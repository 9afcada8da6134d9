"""The coarse problem with a piecewise-constant upscaled tensor (Algorithm 4.1 in the loop).

K~ is a symmetric 2x2 tensor per block V_j (DG0 on the coarse mesh). One coarse state per
temperature drop e_i (i = 1, 2), from the lifted problem w_i = y_i + x_i:

    int K~ grad y_i . grad phi = int q phi - int K~ e_i . grad phi,   y_i in H^1_0      (4.18)

The lifting term no longer vanishes (K~ is not constant), so F depends on K~ and the
sensitivity of the reduced objective has a second term. With adjoints B p_i = -dJ/dy_i:

    dJ^/dK~^j_ab = sum_i p_i^T (dB/dK~^j_ab y_i - dF_i/dK~^j_ab)
                 = sum_i int_{V_j} d_a p_i  d_b (y_i + x_i)                              (4.28)

The tangent-linear problem (Gauss-Newton's Jacobian products) is the same derivative forward:

    B(K~) dy_i = dF_i - dB y_i:   int K~ grad dy_i . grad phi = -int dK~ grad (y_i + x_i) . grad phi

B is re-assembled and re-factorised when K~ changes (lazy refresh: rarely).
"""
from __future__ import annotations

from typing import Sequence

import firedrake as fd
import numpy as np

from parallel_ms.coarse.assembly import assemble_matrix
from parallel_ms.coarse.blocks import BlockPartition
from parallel_ms.coarse.problem import CoarseSpace
from parallel_ms.problems import Problem


class BlockCoarseProblem(CoarseSpace):
    def __init__(self, mesh: fd.MeshGeometry, problem: Problem, blocks: Sequence[int]) -> None:
        super().__init__(mesh)
        self.partition = BlockPartition(mesh, blocks)
        self.K = fd.Function(fd.TensorFunctionSpace(mesh, "DG", 0))
        self._dK = fd.Function(self.K.function_space())
        u, phi = fd.TrialFunction(self.V), fd.TestFunction(self.V)
        self._form = fd.inner(self.K * fd.grad(u), fd.grad(phi)) * fd.dx
        e = fd.Identity(2)
        self._loads = [problem.q_ufl(mesh) * phi * fd.dx
                       - fd.inner(self.K * e[:, i], fd.grad(phi)) * fd.dx for i in range(2)]
        self.x = fd.SpatialCoordinate(mesh)
        self._factored_for: np.ndarray | None = None
        self._basis_key: tuple[bytes, ...] | None = None
        self._basis = np.empty(0)

    def _set(self, k: np.ndarray) -> None:
        """Assemble and factorise B(K~) for K~ of shape (blocks, 2, 2), unless already done."""
        if self._factored_for is not None and np.array_equal(self._factored_for, k):
            return
        self.K.dat.data_wo[:] = k[self.partition.cell_block]
        self._factorise(assemble_matrix(self._form, (self.bc,)))
        self._factored_for = k.copy()

    def _solve(self, b: fd.Cofunction) -> np.ndarray:
        x = fd.Function(self.V)
        self.solver.solve(x, b)
        return x.dat.data_ro.copy()

    def states(self, k: np.ndarray) -> list[np.ndarray]:
        """[y_1, y_2] at the owned dofs for the piecewise-constant K~."""
        self._set(k)
        return [self._solve(fd.assemble(load, bcs=[self.bc])) for load in self._loads]

    def adjoint(self, k: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        self._set(k)
        return self._solve(self._rhs(rhs))

    def _tangents(self, dk: np.ndarray, ys: list[np.ndarray]) -> list[np.ndarray]:
        """[dy_1, dy_2] for a change dk (blocks, 2, 2) of K~ (one assembly and solve each)."""
        self._dK.dat.data_wo[:] = dk[self.partition.cell_block]
        phi = fd.TestFunction(self.V)
        out = []
        for i, y in enumerate(ys):
            w = self._function(y) + self.x[i]
            load = fd.assemble(-fd.inner(self._dK * fd.grad(w), fd.grad(phi)) * fd.dx)
            out.append(self._solve(self._rhs(load.dat.data_ro)))
        return out

    def tangents(self, k: np.ndarray, dk: np.ndarray, ys: list[np.ndarray]
                 ) -> list[np.ndarray]:
        """[dy_1, dy_2] for a change dk (blocks, 2, 2) of K~ (collective). dy is linear in dk:
        the responses to the 4 x blocks unit changes are solved once per (K~, states), reusing
        the factorisation, and combined for every dk after that."""
        self._set(k)
        key = (k.tobytes(), *(y.tobytes() for y in ys))
        if self._basis_key != key:
            units = np.eye(dk.size).reshape(dk.size, *dk.shape)
            self._basis = np.array([self._tangents(unit, ys) for unit in units])
            self._basis_key = key
        return list(np.tensordot(dk.reshape(-1), self._basis, 1))

    def sensitivity(self, ps: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
        """dJ^/dK~^j (blocks, 2, 2) by (4.28), integrated per block (collective)."""
        pf = [self._function(p) for p in ps]
        wf = [self._function(y) + self.x[i] for i, y in enumerate(ys)]
        g = np.empty((self.partition.n, 2, 2))
        for a in range(2):
            for b in range(2):
                g[:, a, b] = self.partition.integrals(
                    sum(p.dx(a) * w.dx(b) for p, w in zip(pf, wf)))
        return g
