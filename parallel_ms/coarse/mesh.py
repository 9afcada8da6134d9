"""Distributed meshes of the unit interval / square and the cells each rank owns."""
from __future__ import annotations

import firedrake as fd
import numpy as np
from mpi4py import MPI
from petsctools import get_external_packages

from parallel_ms.config import CHOICES
from parallel_ms.errors import UserError


def unit_mesh(dim: int, n: int, comm: MPI.Comm = MPI.COMM_WORLD,
              name: str = "coarse_mesh", partitioner: str | None = None) -> fd.MeshGeometry:
    """(0,1)^dim with n cells per direction, a DMPlex distributed over ``comm`` by the PETSc
    partitioner ``partitioner`` (None: Firedrake's default).

    ``simple`` gives every rank a contiguous range of the cell numbering, the same in every
    run; PT-Scotch (Firedrake's default with this PETSc build) may cut the mesh differently
    from one call to the next, and with it which rank holds which collocation points."""
    available = tuple(p for p in CHOICES["coarse.partitioner"]        # simple is PETSc's own
                      if p == "simple" or p in get_external_packages())
    if partitioner is not None and partitioner not in available:
        raise UserError(f"coarse.partitioner = {partitioner!r} (allowed: {', '.join(available)}: "
                        "the partitioners this PETSc is built with)", collective=True)
    params = {"partitioner_type": partitioner} if partitioner else None
    if dim == 1:
        return fd.UnitIntervalMesh(n, comm=comm, name=name, distribution_parameters=params)
    return fd.UnitSquareMesh(n, n, comm=comm, name=name, distribution_parameters=params)


def owned_cell_vertices(mesh: fd.MeshGeometry) -> np.ndarray:
    """Vertex coordinates of the cells this rank owns: shape (n_owned, dim + 1, dim).

    Every cell is owned by exactly one rank, so anything generated per owned cell is generated
    exactly once in the whole job."""
    coords = mesh.coordinates
    cell_nodes = coords.cell_node_map().values[:mesh.cell_set.size]
    data = coords.dat.data_ro_with_halos.reshape(-1, mesh.geometric_dimension)
    return data[cell_nodes]


def vertex_coordinates(mesh: fd.MeshGeometry) -> np.ndarray:
    """Coordinates of the P1 dofs (vertices) this rank owns, shape (n, dim), in the dof order
    of ``FunctionSpace(mesh, "CG", 1)``."""
    return fd.Function(fd.VectorFunctionSpace(mesh, "CG", 1)).interpolate(
        fd.SpatialCoordinate(mesh)).dat.data_ro.reshape(-1, mesh.geometric_dimension)
