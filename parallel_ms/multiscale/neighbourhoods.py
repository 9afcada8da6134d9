"""The coarse neighbourhoods of GMsFEM on the distributed meshes.

For every interior coarse vertex x_i, omega_i = supp chi_i is the union of the coarse cells
around it (the coarse neighbourhoods of Efendiev, Galvis & Hou 2013, with the partition of
unity chi_i = the coarse P1 hat functions). Boundary vertices carry no basis functions: the
space stays in H^1_0, and with one function per neighbourhood it is the coarse P1 space.

**Colour classes.** The vertex at (a/n, b/n) has colour 3 (a mod 3) + (b mod 3). Two vertices of
one colour lie at least 3 coarse cells apart in x or in y, so the closures of their
neighbourhoods do not meet: a fine-scale form restricted to the cells of one colour's
neighbourhoods is, on the fine dofs of closure(omega_i), the form on omega_i alone (the Neumann
matrices of :mod:`.spectral`).

**Who holds what.** The rank that owns the coarse vertex x_i owns omega_i. Its fine dofs
(global numbers; the fine cells of omega_i may lie on other ranks) and chi_i on them are
gathered by PETSc: each rank enters, for every coarse cell it owns and every interior vertex i
of that cell, the fine nodes inside the cell with the values of chi_i into row i of a
(coarse vertices x fine dofs) AIJ matrix; assembly moves every row to the owner of its vertex,
which reads it back.
"""
from __future__ import annotations

import firedrake as fd
import numpy as np
from petsc4py import PETSc

from parallel_ms.multiscale.nested import NestedMeshes

#: colour classes of neighbourhoods with disjoint closures on a structured coarse grid
COLOURS = 9


def lattice_colours(points: np.ndarray, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour 3 (a mod 3) + (b mod 3) of each coarse vertex (a/n, b/n) of ``points`` (m, 2),
    and whether it is interior."""
    ab = np.rint(np.asarray(points) * cells).astype(int)
    return 3 * (ab[:, 0] % 3) + ab[:, 1] % 3, ((ab > 0) & (ab < cells)).all(axis=1)


class Neighbourhoods:
    """This rank's neighbourhoods and the fine fields of the partition of unity.

    * ``vertices``, ``colours``, ``points``: global coarse P1 number, colour and coordinates of
      each interior coarse vertex this rank owns;
    * ``dofs[n]``, ``chi[n]``: the global fine P1 dofs of closure(omega_i) (sorted) and chi_i
      there, for the n-th of them;
    * ``pou[c]``: the sum of the chi_i of colour c (all vertices), on the fine P1 space;
    * ``grad_sum``: sum_j |grad chi_j|^2 over all coarse vertices (fine DG0), for kappa~;
    * ``indicators[c]``: fine DG0, 1 on the cells of the colour-c neighbourhoods (interior
      vertices), for the colours that have some.
    """

    def __init__(self, meshes: NestedMeshes) -> None:
        n, Vc = meshes.cells, meshes.Vc
        n_owned = Vc.dof_dset.size
        points = fd.Function(fd.VectorFunctionSpace(meshes.coarse, "CG", 1)).interpolate(
            fd.SpatialCoordinate(meshes.coarse)).dat.data_ro_with_halos.copy()
        colour, interior = lattice_colours(points, n)
        self.pou = [meshes.prolong(colour[:n_owned] == c) for c in range(COLOURS)]
        dg0 = fd.FunctionSpace(meshes.fine, "DG", 0)
        self.grad_sum = fd.Function(dg0).interpolate(
            sum(fd.inner(fd.grad(x), fd.grad(x)) for x in self.pou))
        verts = meshes.coarse_vertices()
        cell_dofs = dg0.cell_node_map().values[meshes.children]
        present = {3 * (a % 3) + b % 3 for a in range(1, n) for b in range(1, n)}
        self.indicators: dict[int, fd.Function] = {}
        for c in sorted(present):
            ind = fd.Function(dg0)
            ind.dat.data[cell_dofs[(interior[verts] & (colour[verts] == c)).any(1)]] = 1.0
            self.indicators[c] = ind
        mine = np.flatnonzero(interior[:n_owned])
        self.vertices = Vc.dof_dset.lgmap.indices[mine]
        self.colours, self.points = colour[mine], points[mine]
        self.dofs, self.chi = self._gather(meshes, colour, interior)

    def _gather(self, meshes: NestedMeshes, colour: np.ndarray, interior: np.ndarray
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Rows i of the (coarse vertices x fine dofs) matrix of chi_i, entered cell by cell by
        the owners of the coarse cells, read back by the owners of the vertices."""
        Vc, Vf, r = meshes.Vc, meshes.Vf, meshes.refinement
        to_coarse, to_fine = Vc.dof_dset.lgmap.indices, Vf.dof_dset.lgmap.indices
        per_row = 3 * r * r + 3 * r + 1          # fine nodes in a closed hexagon of 6 cells
        mat = PETSc.Mat().createAIJ((Vc.dof_dset.layout_vec.getSizes(),
                                     Vf.dof_dset.layout_vec.getSizes()),
                                    nnz=(per_row, per_row), comm=Vc.comm)
        mat.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, False)
        pou = [x.dat.data_ro_with_halos for x in self.pou]
        for vertices, nodes in zip(meshes.coarse_vertices(), meshes.fine_nodes()):
            nodes = np.unique(nodes)
            for v in vertices[interior[vertices]]:
                mat.setValues(to_coarse[v], to_fine[nodes], pou[colour[v]][nodes],
                              addv=PETSc.InsertMode.INSERT_VALUES)
        mat.assemble()
        rows = [mat.getRow(int(i)) for i in self.vertices]
        mat.destroy()
        return [cols.copy() for cols, _ in rows], [vals.copy() for _, vals in rows]
