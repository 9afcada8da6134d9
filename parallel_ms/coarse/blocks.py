"""The partition of (0,1)^2 into blocks V_j of Algorithm 4.1 (paper 000 §4.1).

Blocks form a uniform ``blocks[0] x blocks[1]`` grid, numbered j = i_1 * blocks[1] + i_2. A
point belongs to the block containing it; a mesh cell to the block containing its midpoint
(blocks are unions of cells when the cells per direction are a multiple of the blocks).
"""
from __future__ import annotations

from typing import Any, Sequence

import firedrake as fd
import numpy as np
from mpi4py import MPI


def block_index(x: np.ndarray, blocks: Sequence[int]) -> np.ndarray:
    """Block number of each point x (M, 2)."""
    nb = np.asarray(blocks)
    ij = np.minimum((np.asarray(x) * nb).astype(int), nb - 1)
    return ij[:, 0] * nb[1] + ij[:, 1]


def tensor_from_averages(t: np.ndarray, f: np.ndarray) -> np.ndarray:
    """K~^j from K~^j T^j = F^j (4.7) for every block: t[j, c, i] = <d_c w_i>_{V_j},
    f[j, c, i] = <K d_c w_i>_{V_j}; K~^j = F^j (T^j)^{-1}."""
    return np.linalg.solve(np.swapaxes(t, -1, -2), np.swapaxes(f, -1, -2)).swapaxes(-1, -2)


class BlockPartition:
    """The owned cells of a 2D mesh sorted into blocks; integrals per block (collective)."""

    def __init__(self, mesh: fd.MeshGeometry, blocks: Sequence[int]) -> None:
        self.mesh = mesh
        self.blocks = tuple(blocks)
        self.n = int(np.prod(self.blocks))
        self.dg0 = fd.FunctionSpace(mesh, "DG", 0)
        mid = fd.Function(fd.VectorFunctionSpace(mesh, "DG", 0)).interpolate(
            fd.SpatialCoordinate(mesh)).dat.data_ro
        #: block of each owned cell (DG0 dof order)
        self.cell_block = block_index(mid, self.blocks)

    def integrals(self, expr: Any) -> np.ndarray:
        """int_{V_j} expr for every block j (expr scalar; one DG0 assembly, then a sum over
        the owned cells of each block and over ranks)."""
        cell = fd.assemble(expr * fd.TestFunction(self.dg0) * fd.dx).dat.data_ro
        local = np.bincount(self.cell_block, weights=cell, minlength=self.n)
        return self.mesh.comm.allreduce(local, op=MPI.SUM)
