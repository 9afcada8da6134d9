"""Coarse matrices with the same bits in every run, on any number of ranks.

Firedrake assembles an AIJ matrix cell by cell on each rank's own cells and PETSc's assembly
stash sends the entries of rows another rank owns to that rank, which adds them *in the order
the messages arrive*. A row fed by two other ranks (a vertex where three subdomains meet: three
or more ranks) can therefore differ in its last bit from one assembly to the next, and the coarse
states with it (docs/gauss-newton.md, resume): a resumed run would not repeat the uninterrupted
one bitwise.

:func:`assemble_matrix` has Firedrake assemble the unassembled operator instead (``MATIS``:
each rank's subdomain matrix from its own cells, no communication) and sums the subdomain
matrices with PETSc's COO assembly (``MatSetPreallocationCOO`` / ``MatSetValuesCOO``), which
receives every remote entry into its own slot and adds them in an order fixed at
preallocation. The result equals Firedrake's AIJ matrix (boundary rows included) up to the
order of the sums.
"""
from __future__ import annotations

import firedrake as fd
import numpy as np
import ufl
from petsc4py import PETSc


def assemble_matrix(form: ufl.Form, bcs: tuple[fd.DirichletBC, ...] = ()
                    ) -> fd.matrix.AssembledMatrix:
    """The AIJ matrix of the bilinear ``form`` with ``bcs`` (rows and columns of the boundary
    dofs replaced by the identity, as :func:`firedrake.assemble`), summed deterministically.

    The boundary conditions are in the entries only, not attached to the returned matrix: a
    solver of it sees no lifting, so right-hand sides must vanish at the boundary dofs (the
    coarse problem's homogeneous conditions; :class:`CoarseSpace` zeroes those rows)."""
    unassembled = fd.assemble(form, bcs=bcs, mat_type="is").petscmat
    local = unassembled.getISLocalMat()
    indptr, columns, values = local.getValuesCSR()
    # MATIS numbers its subdomain matrix by the local-to-global map without the entries
    # Firedrake marks negative (dofs this rank's cells do not touch), in their order.
    to_global = unassembled.getLGMap()[0].getIndices()
    to_global = to_global[to_global >= 0]
    if len(to_global) != local.getSize()[0]:
        raise RuntimeError(f"MATIS subdomain matrix has {local.getSize()[0]} rows, its "
                           f"local-to-global map {len(to_global)} entries")
    rows = to_global[np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))]
    mat = PETSc.Mat().create(comm=unassembled.getComm())
    mat.setSizes(unassembled.getSizes())
    mat.setType(PETSc.Mat.Type.AIJ)
    mat.setPreallocationCOO(rows, to_global[columns])
    mat.setValuesCOO(values, addv=PETSc.InsertMode.ADD_VALUES)
    mat.assemble()
    unassembled.destroy()
    return fd.matrix.AssembledMatrix(form.arguments(), mat)
