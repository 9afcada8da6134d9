"""The compression operator Q_delta at the coarse nodes (paper 000 (2.9), discretised (3.26)).

A coarse node farther than delta/2 from the boundary gets the mean of v over the interior
collocation points within distance delta/2; the other nodes get v at the node itself.

In parallel a point can feed a node that another rank owns (delta/2 may exceed the halo). The
operator is therefore a distributed sparse PETSc matrix Q (coarse dofs x points): every rank
inserts the entries of its own points into whatever rows they touch and PETSc's assembly moves
them to the owners, like FE assembly; the backward pass is Q^T. Nodes are addressed through
the structured numbering of the unit interval/square mesh (n cells per direction), which does
not depend on the partition.
"""
from __future__ import annotations

import firedrake as fd
import numpy as np
import torch
from mpi4py import MPI
from petsc4py import PETSc

from parallel_ms.coarse.mesh import vertex_coordinates
from parallel_ms.errors import UserError


def coo_matrix(sizes: tuple[tuple[int, int], tuple[int, int]], rows: np.ndarray,
               columns: np.ndarray, values: np.ndarray | float, comm: MPI.Comm) -> PETSc.Mat:
    """A distributed AIJ matrix of the given ((local, global) rows, (local, global) columns)
    from this rank's entries (global row, global column, value) through PETSc's COO assembly
    (MatSetPreallocationCOO / MatSetValuesCOO): entries of rows another rank owns are sent
    there, repeated entries are summed."""
    mat = PETSc.Mat().createAIJ(sizes, comm=comm)
    mat.setPreallocationCOO(np.asarray(rows, dtype=PETSc.IntType),
                            np.asarray(columns, dtype=PETSc.IntType))
    mat.setValuesCOO(np.ascontiguousarray(np.broadcast_to(values, np.shape(rows)),
                                          dtype=PETSc.ScalarType))
    return mat


def points_matrix(rows: np.ndarray, columns: np.ndarray, values: np.ndarray | float,
                  n_rows: int, m_local: int, comm: MPI.Comm) -> PETSc.Mat:
    """:func:`coo_matrix` with ``n_rows`` rows (owned as PETSc decides) x the global point
    set (this rank: ``m_local`` columns)."""
    return coo_matrix(((PETSc.DECIDE, n_rows), (m_local, comm.allreduce(m_local))), rows,
                      columns, values, comm)


def sparse_dense_product(mat: PETSc.Mat, columns: np.ndarray, dense: bool = False
                         ) -> np.ndarray | PETSc.Mat:
    """``mat`` (distributed AIJ, rows x points) times the P columns of this rank's block
    ``columns`` (local points, P): this rank's rows of the product, (owned rows, P), by one
    MatMatMult; with ``dense`` the product as the distributed dense matrix itself. PETSc's
    dense storage is column-major: the block is transposed by torch's blocked copy (NumPy's
    ``asfortranarray`` of a large block is far slower)."""
    fortran = torch.from_numpy(np.ascontiguousarray(columns, dtype=PETSc.ScalarType)
                               ).T.contiguous().numpy().T
    block = PETSc.Mat().createDense((mat.getSizes()[1], (PETSc.DECIDE, fortran.shape[1])),
                                    array=fortran, comm=mat.getComm())
    product = mat.matMult(block)
    block.destroy()
    if dense:
        return product
    out = product.getDenseArray().copy()
    product.destroy()
    return out


def _structured_index(x: np.ndarray, n: int) -> np.ndarray:
    ij = np.rint(x * n).astype(np.int64)
    return ij[:, 0] if x.shape[1] == 1 else ij[:, 1] * (n + 1) + ij[:, 0]


def nodes_near(points: np.ndarray, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    """(point index, structured node index) of every pair of a point of ``points`` (m, d)
    and a node of the unit mesh with ``n`` cells per direction within distance r of it and
    farther than r from the boundary (the nodes the mean of (3.26) is taken at); point-major,
    the nodes of a point in lexicographic order of their grid index. Vectorised over blocks
    of points (about 2^20 candidate nodes at a time)."""
    dim = points.shape[1]
    lo = np.ceil((points - r) * n - 1e-9).astype(int).clip(0, n)
    hi = np.floor((points + r) * n + 1e-9).astype(int).clip(0, n)
    width = max(int((hi - lo).max(initial=0)) + 1, 1)
    offsets = np.stack(np.meshgrid(*[np.arange(width)] * dim, indexing="ij"), -1)
    offsets = offsets.reshape(-1, dim)
    block = max(1, 2 ** 20 // len(offsets))
    found_points, found_nodes = [np.empty(0, int)], [np.empty(0, int)]
    for start in range(0, len(points), block):
        end = start + block
        grid = lo[start:end, None, :] + offsets[None]                 # (block, width^d, d)
        nodes = grid / n
        keep = ((np.linalg.norm(nodes - points[start:end, None, :], axis=2) <= r)
                & np.all((nodes > r) & (nodes < 1 - r), axis=2))      # past hi: farther than r
        point, k = np.nonzero(keep)
        found_points.append(start + point)
        found_nodes.append(_structured_index(nodes[point, k], n))
    return np.concatenate(found_points), np.concatenate(found_nodes)


class Compression:
    """Q_delta for the coarse P1 space ``V`` (unit mesh with ``n`` cells per direction) and
    this rank's interior points ``points`` (m, d)."""

    def __init__(self, V: fd.FunctionSpace, n: int, points: np.ndarray, delta: float) -> None:
        comm = V.mesh().comm
        dim = points.shape[1]
        self.V, self.delta = V, delta
        n_nodes = (n + 1) ** dim
        m_local = len(points)
        offset = comm.exscan(m_local) or 0
        # -- C: structured nodes x points, rows for the nodes within delta/2 of each point
        r = delta / 2
        point, nodes = nodes_near(points, n, r)
        C = points_matrix(nodes, offset + point, 1.0, n_nodes, m_local, comm)
        ones, counts = C.createVecs()
        ones.set(1.0)
        C.mult(ones, counts)                      # points per node
        # -- P: Firedrake's coarse dofs x structured nodes (owned dofs only)
        coords = vertex_coordinates(V.mesh())
        self.node_coords = coords
        n_owned = len(coords)
        dofs = V.dof_dset.lgmap.apply(np.arange(n_owned, dtype=PETSc.IntType))
        P = coo_matrix(((n_owned, V.dim()), (C.getLocalSize()[0], n_nodes)), dofs,
                       _structured_index(coords, n), 1.0, comm)
        cnt = P.createVecLeft()
        P.mult(counts, cnt)
        self.near_boundary = np.any((coords <= r) | (coords >= 1 - r), axis=1)
        empty = int(np.sum((cnt.getArray() == 0) & ~self.near_boundary))
        empty = comm.allreduce(empty)
        if empty:
            raise UserError(f"{empty} coarse node(s) farther than delta/2 = {r:g} from the "
                            f"boundary have no collocation point within delta/2: use more "
                            f"points (sampling.interior) or a larger delta", collective=True)
        inv = counts.duplicate()
        inv.setArray(np.where(counts.getArray() > 0, 1.0 / np.maximum(counts.getArray(), 1), 0))
        C.diagonalScale(L=inv)                    # rows: means instead of sums
        self.Q = P.matMult(C)                     # coarse dofs x points
        self.point_vec = self.Q.createVecRight()
        self.node_vec = self.Q.createVecLeft()
        self.counts = cnt.getArray().copy()

    def apply(self, v_points: np.ndarray, v_nodes: np.ndarray) -> np.ndarray:
        """(Q v) at the owned coarse dofs: means of the point values, and ``v_nodes`` (v at
        the owned nodes) where a node is within delta/2 of the boundary."""
        self.point_vec.setArray(v_points)
        self.Q.mult(self.point_vec, self.node_vec)
        return np.where(self.near_boundary, v_nodes, self.node_vec.getArray())

    def apply_columns(self, v_points: np.ndarray, v_nodes: np.ndarray) -> np.ndarray:
        """:meth:`apply` to the P columns of v_points (m, P) and v_nodes (owned nodes, P) at
        once: one sparse-dense product (MatMatMult) instead of P products."""
        out = sparse_dense_product(self.Q, v_points)
        return np.where(self.near_boundary[:, None], v_nodes, out)

    def transpose(self, e_nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Adjoint of :meth:`apply`: (Q^T e at this rank's points, e at the near-boundary
        owned nodes, zero elsewhere)."""
        self.node_vec.setArray(np.where(self.near_boundary, 0.0, e_nodes))
        self.Q.multTranspose(self.node_vec, self.point_vec)
        return self.point_vec.getArray().copy(), np.where(self.near_boundary, e_nodes, 0.0)
