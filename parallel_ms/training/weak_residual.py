"""The weak residual: the strong residual r of (4.8) tested against coarse hat functions.

For the Q1 hat functions phi_n of a uniform grid with n cells per direction on the unit
cube (H = 1/n; nodes on the boundary included: r = 0 for the solution, whatever phi) the rows

    W_n = sqrt(tau_w / H^d) (1/M) sum_i phi_n(x_i) r(x_i)
        ~ sqrt(tau_w H^d) <r, phi_n> / <1, phi_n>        (<1, phi_n> = H^d inside)

make tau_w sum_n H^d (local mean of r around node n)^2 a loss term. The strong-form residual
loss weighs an error e by ||div K grad e||^2: a smooth (coarse-scale) error by its small
homogenized residual, an oscillating one by eps^-2 more. Where the network cannot drive r to
zero, the minimiser trades the coarse scale for the fine one, and the coarse scale is what the
rel. L2 error sees (docs/results.md §4.3). The weak rows see the local means of r, i.e. its
coarse part, and tau_w raises its weight; at the solution they vanish with r, so unlike the
coupling term (3.25) they add no consistency gap.

In parallel a hat function's support spans the subdomains of several ranks: the rows are a
distributed sparse PETSc matrix Phi (test functions x points, rows owned as PETSc decides),
every rank inserting the columns of its own points, as the compression operator
(:mod:`parallel_ms.coupling.compression`) does; products with Phi and Phi^T are collective.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from mpi4py import MPI

from parallel_ms.coupling.compression import points_matrix, sparse_dense_product


def hat_values(points: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The 2^d nonzero Q1 hat functions (n cells per direction) at each point (m, d):
    (structured node indices (m, 2^d), values (m, 2^d)); node (i, j) is j (n + 1) + i."""
    dim = points.shape[1]
    scaled = np.clip(points, 0.0, 1.0) * n
    base = np.minimum(np.floor(scaled).astype(np.int64), n - 1)     # the cell's lower node
    frac = scaled - base
    nodes, values = [], []
    for corner in itertools.product((0, 1), repeat=dim):
        c = np.asarray(corner)
        index = base + c
        nodes.append(sum(index[:, k] * (n + 1) ** k for k in range(dim)))
        values.append(np.prod(np.where(c == 1, frac, 1.0 - frac), axis=1))
    return np.stack(nodes, 1), np.stack(values, 1)


class WeakResidual:
    """W = Phi r on this rank's ``points`` (m, d) of ``n_global`` in all, for ``outputs``
    residual columns; rows: this rank's owned test functions, outputs concatenated."""

    def __init__(self, points: np.ndarray, n_global: int, cells: int, tau: float,
                 outputs: int = 1, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
        dim = points.shape[1]
        self.outputs = outputs
        m_local = len(points)
        offset = comm.exscan(m_local) or 0
        scale = math.sqrt(tau * cells ** dim) / n_global
        nodes, values = hat_values(points, cells)
        columns = np.broadcast_to(offset + np.arange(m_local)[:, None], nodes.shape)
        self.phi = points_matrix(nodes.ravel(), columns.ravel(), scale * values.ravel(),
                                 (cells + 1) ** dim, m_local, comm)
        self.point_vec, self.node_vec = self.phi.createVecRight(), self.phi.createVecLeft()

    @staticmethod
    def _columns(r: torch.Tensor) -> np.ndarray:
        return r.detach().reshape(len(r), -1).double().cpu().numpy()

    def rows(self, r: torch.Tensor) -> np.ndarray:
        """Phi r_j at the owned test functions, j over the outputs, concatenated (collective)."""
        out = []
        for column in self._columns(r).T:
            self.point_vec.setArray(column)
            self.phi.mult(self.point_vec, self.node_vec)
            out.append(self.node_vec.getArray().copy())
        return np.concatenate(out)

    def rows_columns(self, dr: torch.Tensor) -> np.ndarray:
        """:meth:`rows` for the P changes along the last axis of dr ((m, [outputs,] P)): the
        weak rows' block of the explicit Jacobian, (rows, P), by sparse-dense products."""
        dr = dr.detach().reshape(len(dr), self.outputs, -1).double().cpu().numpy()
        blocks = [sparse_dense_product(self.phi, dr[:, j]) for j in range(self.outputs)]
        return np.concatenate(blocks)

    def cotangent(self, u: np.ndarray) -> np.ndarray:
        """The adjoint of :meth:`rows`: Phi^T u_j at this rank's points, (m, outputs)."""
        out = []
        for part in np.split(u, self.outputs):
            self.node_vec.setArray(part)
            self.phi.multTranspose(self.node_vec, self.point_vec)
            out.append(self.point_vec.getArray().copy())
        return np.stack(out, 1)
