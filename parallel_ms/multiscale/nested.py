"""Nested coarse and fine meshes of the unit square for GMsFEM.

The coarse mesh is :func:`parallel_ms.coarse.mesh.unit_mesh` (n x n squares, two triangles
each), a DMPlex distributed over the ranks. The fine mesh comes from ``k`` uniform refinements
of it (:func:`firedrake.MeshHierarchy`, one level of ``k`` refinements): ``refinement = 2^k``
fine cells per coarse cell and direction, every fine cell inside one coarse cell and on the rank
that owns that coarse cell; a coarse P1 function is prolonged to the fine P1 space exactly
(:func:`firedrake.prolong` evaluates it at the fine nodes).
"""
from __future__ import annotations

from dataclasses import dataclass

import firedrake as fd
import numpy as np
from mpi4py import MPI

from parallel_ms.coarse.mesh import unit_mesh
from parallel_ms.errors import UserError
from parallel_ms.problems import Problem


@dataclass
class NestedMeshes:
    """The coarse and the fine mesh, their P1 spaces and, for each coarse cell this rank owns,
    the fine cells inside it."""

    cells: int                      #: coarse cells per direction
    refinement: int                 #: fine cells per coarse cell and direction
    coarse: fd.MeshGeometry
    fine: fd.MeshGeometry
    Vc: fd.FunctionSpace            #: coarse P1
    Vf: fd.FunctionSpace            #: fine P1
    children: np.ndarray            #: (owned coarse cells, refinement^2): local fine cells

    def fine_nodes(self) -> np.ndarray:
        """Local fine P1 node numbers of the fine cells inside each owned coarse cell,
        shape (owned coarse cells, refinement^2 * 3) (nodes shared by fine cells repeat)."""
        return self.Vf.cell_node_map().values[self.children].reshape(len(self.children), -1)

    def prolong(self, coarse_values: np.ndarray) -> fd.Function:
        """The coarse P1 function with these owned dof values, prolonged exactly to the fine
        P1 space (the fine mesh is nested in the coarse one)."""
        yc, yf = fd.Function(self.Vc), fd.Function(self.Vf)
        yc.dat.data_wo[:] = coarse_values
        fd.prolong(yc, yf)
        return yf

    def coarse_vertices(self) -> np.ndarray:
        """Local coarse P1 node numbers of the vertices of each owned coarse cell, (n, 3)."""
        return self.Vc.cell_node_map().values[:len(self.children)]


def require_2d(problem: Problem) -> None:
    """One collective line for a case GMsFEM cannot take (the nested meshes are 2D)."""
    if problem.dim != 2:
        raise UserError(f"GMsFEM needs a 2D case; '{problem.name}' is {problem.dim}D",
                        collective=True)


def check_sizes(cells: int, refinement: int) -> int:
    """The refinements that make ``refinement`` fine cells per coarse cell; one collective line
    for sizes that do not make nested meshes with an interior coarse vertex."""
    if cells < 2:
        raise UserError(f"coarse cells = {cells} (allowed: >= 2 per direction, so that an "
                        f"interior coarse vertex exists)", collective=True)
    levels = int(refinement).bit_length() - 1
    if refinement < 2 or refinement != 2 ** levels:
        raise UserError(f"refinement = {refinement} (allowed: a power of 2 >= 2: fine cells per "
                        f"coarse cell and direction)", collective=True)
    return levels


def nested_meshes(cells: int, refinement: int, comm: MPI.Comm = MPI.COMM_WORLD,
                  partitioner: str | None = "simple") -> NestedMeshes:
    """(0,1)^2 with ``cells`` coarse cells per direction and ``refinement`` (a power of 2) fine
    cells per coarse cell and direction, nested; ``partitioner`` as for
    :func:`~parallel_ms.coarse.mesh.unit_mesh` (``simple``: the same shards in every run)."""
    levels = check_sizes(cells, refinement)
    coarse = unit_mesh(2, cells, comm, name="gmsfem_coarse", partitioner=partitioner)
    hierarchy = fd.MeshHierarchy(coarse, 1, refinements_per_level=levels)
    fine = hierarchy[-1]
    # compose the one-refinement maps coarse cell -> child cells (owned cells, local numbers)
    children = np.arange(coarse.cell_set.size)[:, None]
    for step in sorted(hierarchy.coarse_to_fine_cells):
        children = hierarchy.coarse_to_fine_cells[step][children].reshape(len(children), -1)
    if children.shape[1] != refinement ** 2 or (children < 0).any():
        raise RuntimeError(f"coarse cells have {children.shape[1]} fine cells each, "
                           f"expected {refinement ** 2}")
    return NestedMeshes(cells, refinement, coarse, fine, fd.FunctionSpace(coarse, "CG", 1),
                        fd.FunctionSpace(fine, "CG", 1), children)
