"""The weak residual: the strong residual r of (4.8) tested against coarse hat functions.

For the Q1 hat functions phi_n of a uniform grid with n cells per direction on the unit
cube (H = 1/n; nodes on the boundary included: r = 0 for the solution, whatever phi) the rows

    W_n = sqrt(tau_w / H^d) (1/M) sum_i phi_n(x_i) r(x_i)
        ~ sqrt(tau_w H^d) <r, phi_n> / <1, phi_n>        (<1, phi_n> = H^d inside)

make tau_w sum_n H^d (local mean of r around node n)^2 a loss term (``norm = "l2"``). The strong-form residual
loss weighs an error e by ||div K grad e||^2: a smooth (coarse-scale) error by its small
homogenized residual, an oscillating one by eps^-2 more. Where the network cannot drive r to
zero, the minimiser trades the coarse scale for the fine one, and the coarse scale is what the
rel. L2 error sees (docs/results.md §4.3). The weak rows see the local means of r, i.e. its
coarse part, and tau_w raises its weight; at the solution they vanish with r, so unlike the
coupling term (3.25) they add no consistency gap.

``norm = "dual"`` weighs them by the inverse stiffness instead of the identity: with
b_n = <r, phi_n> ~ (1/M) sum_i phi_n(x_i) r(x_i) at the interior nodes and A = L L^T the Q1
stiffness of the Laplacian there, the rows sqrt(tau_w) L^-1 b make

    tau_w b^T A^-1 b = tau_w ||r||^2 in the dual norm of V_H = tau_w |e_H|_1^2,

e_H in V_H the solution of (grad e_H, grad phi) = <r, phi>: the part of the error the hat
functions see, weighed by its H^1 size instead of by ||div K grad e||^2. The triangular solve
is folded into Phi (each point's column becomes L^-1 applied to its hat values), so rows,
products and their adjoints are the same sparse-matrix operations.

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


def dual_weights(cells: int, dim: int) -> np.ndarray:
    """T = E L^-1 E^T ((cells + 1)^dim square): L the Cholesky factor of the Q1 Laplacian
    stiffness on the interior nodes of the uniform grid (``cells`` per direction), E their
    embedding among all nodes (numbered as :func:`hat_values` does), so that
    ||T b||^2 = b_int^T A^-1 b_int."""
    n = cells + 1
    h = 1.0 / cells
    off = np.ones(n - 1)
    stiffness = (np.diag(np.full(n, 2.0)) - np.diag(off, 1) - np.diag(off, -1)) / h
    mass = h / 6 * (np.diag(np.full(n, 4.0)) + np.diag(off, 1) + np.diag(off, -1))
    # node (i, j) is j n + i: kron(y part, x part); boundary rows are dropped below
    a = stiffness if dim == 1 else np.kron(mass, stiffness) + np.kron(stiffness, mass)
    index = np.indices((n,) * dim).reshape(dim, -1)[::-1]       # (i, j) of node j n + i
    interior = np.all((index > 0) & (index < cells), axis=0)
    factor = np.linalg.cholesky(a[np.ix_(interior, interior)])
    out = np.zeros((n ** dim, n ** dim))
    out[np.ix_(interior, interior)] = np.linalg.inv(factor)
    return out


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
    residual columns; rows: this rank's owned test functions, outputs concatenated. ``norm``:
    l2 or dual (``loss.weak_norm``; the module docstring)."""

    def __init__(self, points: np.ndarray, n_global: int, cells: int, tau: float,
                 outputs: int = 1, comm: MPI.Comm = MPI.COMM_WORLD, norm: str = "l2") -> None:
        dim = points.shape[1]
        self.outputs = outputs
        m_local = len(points)
        offset = comm.exscan(m_local) or 0
        nodes, values = hat_values(points, cells)
        if norm == "dual":                      # column of point i: sqrt(tau) / M T phi(x_i)
            weights = dual_weights(cells, dim)
            dense = np.einsum("nmc,mc->mn", weights[:, nodes], values)
            keep = np.flatnonzero(weights.any(axis=1))      # the interior nodes' rows
            nodes = np.broadcast_to(keep, (m_local, len(keep)))
            values = math.sqrt(tau) / n_global * dense[:, keep]
        else:
            values = math.sqrt(tau * cells ** dim) / n_global * values
        columns = np.broadcast_to(offset + np.arange(m_local)[:, None], nodes.shape)
        self.phi = points_matrix(nodes.ravel(), columns.ravel(), values.ravel(),
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
