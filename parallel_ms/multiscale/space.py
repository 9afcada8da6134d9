"""The GMsFEM space and its coarse problem (Efendiev, Galvis & Hou 2013: the global coupling
by the continuous Galerkin method):

    V_ms = span{chi_i phi_k^i : interior coarse vertices i, k < L_i},
    R = [... chi_i phi_k^i ...]   (fine P1 dofs x multiscale dofs),
    (R^T A R) u_c = R^T b,        u_ms = R u_c,

A and b the fine stiffness matrix and load of the problem. R is a distributed PETSc AIJ matrix:
the owner of omega_i enters the values of its basis functions at the global fine dofs of
closure(omega_i), PETSc moves the rows other ranks own; the multiscale dofs of the
neighbourhoods of one rank are numbered consecutively, rank after rank. R's rows at the fine
dofs on the domain's boundary are zeroed (chi_i vanishes there up to rounding for interior
vertices), so V_ms lies in H^1_0 and R^T A R only sees the interior rows of A. The coarse matrix
is MatPtAP; the coarse problem is solved as the P1 coarse problem is, by one sequential LU per
rank up to 10^5 dofs on several ranks (bitwise the same in every run, which MUMPS's parallel
factorisation is not), MUMPS LU otherwise (PETSc options under the prefix ``gmsfem_``, e.g.
``-gmsfem_ksp_type cg -gmsfem_pc_type gamg``).
"""
from __future__ import annotations

import firedrake as fd
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from parallel_ms.coarse.problem import direct_solver
from parallel_ms.multiscale.nested import NestedMeshes
from parallel_ms.multiscale.neighbourhoods import Neighbourhoods

OPTIONS_PREFIX = "gmsfem_"
#: a fine node lies in at most 7 closed neighbourhoods (at a coarse vertex: its own and the 6
#: around it)
MAX_NEIGHBOURHOODS_PER_NODE = 7


class MultiscaleSpace:
    """R for the eigenvectors ``pairs`` of this rank's neighbourhoods (as
    :meth:`~parallel_ms.multiscale.spectral.LocalProblems.eigenpairs` returns them)."""

    def __init__(self, meshes: NestedMeshes, hoods: Neighbourhoods,
                 pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.Vf = meshes.Vf
        comm = self.Vf.comm
        counts = np.array([phi.shape[1] for _, phi in pairs], dtype=int)
        local = int(counts.sum())
        start = comm.exscan(local) or 0
        #: multiscale dofs (columns of R), global
        self.dofs = comm.allreduce(local)
        widest = comm.allreduce(int(counts.max(initial=0)), op=MPI.MAX)
        nnz = MAX_NEIGHBOURHOODS_PER_NODE * widest
        self.R = PETSc.Mat().createAIJ((self.Vf.dof_dset.layout_vec.getSizes(),
                                        (local, self.dofs)), nnz=(nnz, nnz), comm=comm)
        first = start + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        for rows, chi, (_, phi), col in zip(hoods.dofs, hoods.chi, pairs, first):
            values = np.ascontiguousarray(chi[:, None] * phi)     # row-major, as PETSc reads
            self.R.setValues(rows, np.arange(col, col + phi.shape[1], dtype=PETSc.IntType),
                             values, addv=PETSc.InsertMode.INSERT_VALUES)
        self.R.assemble()
        interior = self.R.createVecLeft()
        interior.set(1.0)
        boundary = fd.DirichletBC(self.Vf, 0, "on_boundary").nodes
        interior.array[boundary[boundary < self.Vf.dof_dset.size]] = 0.0
        self.R.diagonalScale(L=interior)

    def galerkin(self, a: PETSc.Mat) -> PETSc.Mat:
        """R^T a R (MatPtAP) for the fine matrix ``a``."""
        return a.ptap(self.R)

    def restrict(self, b: fd.Cofunction) -> PETSc.Vec:
        """R^T b for a fine load b."""
        out = self.R.createVecRight()
        with b.dat.vec_ro as bv:
            self.R.multTranspose(bv, out)
        return out

    def prolong(self, uc: PETSc.Vec) -> fd.Function:
        """u = R u_c on the fine P1 space."""
        u = fd.Function(self.Vf)
        with u.dat.vec_wo as uv:
            self.R.mult(uc, uv)
        return u


def default_solver(matrix: PETSc.Mat) -> dict[str, str]:
    """The coarse problem's direct solver for R^T A R (``matrix``): as for the P1 coarse
    problem (:func:`~parallel_ms.coarse.problem.direct_solver`), one sequential LU per rank up
    to 10^5 dofs on several ranks (the same bits in every run), MUMPS LU otherwise."""
    return direct_solver(matrix.getComm().getSize(), matrix.getSize()[0])


class CoarseSolver:
    """(R^T A R)^{-1}: ``matrix`` factored once by :func:`default_solver`'s choice, or what the
    options under ``gmsfem_`` say; applied to vectors and to blocks of columns
    (KSPMatSolve)."""

    def __init__(self, matrix: PETSc.Mat) -> None:
        self.ksp = PETSc.KSP().create(comm=matrix.getComm())
        self.ksp.setOperators(matrix)
        self.ksp.setOptionsPrefix(OPTIONS_PREFIX)
        options = PETSc.Options()
        # the defaults enter the options database only for this setup, under what a user set
        defaults = {OPTIONS_PREFIX + key: value
                    for key, value in default_solver(matrix).items()
                    if not options.hasName(OPTIONS_PREFIX + key)}
        for key, value in defaults.items():
            options[key] = value
        self.ksp.setFromOptions()
        self.ksp.setUp()
        for key in defaults:
            options.delValue(key)

    def _check(self) -> None:
        reason = self.ksp.getConvergedReason()
        if reason < 0:
            raise RuntimeError(f"GMsFEM coarse solve did not converge (KSP reason {reason})")

    def solve(self, rhs: PETSc.Vec, out: PETSc.Vec | None = None) -> PETSc.Vec:
        """matrix^{-1} rhs (into ``out`` when given)."""
        out = out or rhs.duplicate()
        self.ksp.solve(rhs, out)
        self._check()
        return out

    def solve_columns(self, rhs: PETSc.Mat) -> np.ndarray:
        """matrix^{-1} applied to the columns of the dense ``rhs`` (owned rows, P): this
        rank's rows of the solution, (owned rows, P)."""
        out = rhs.duplicate()
        self.ksp.matSolve(rhs, out)
        self._check()
        array = out.getDenseArray().copy()
        out.destroy()
        return array

    def destroy(self) -> None:
        self.ksp.destroy()


def solve_coarse(coarse: PETSc.Mat | CoarseSolver, rhs: PETSc.Vec) -> PETSc.Vec:
    """(R^T A R)^{-1} rhs: by a :class:`CoarseSolver` of the matrix ``coarse`` set up for this
    solve, or by ``coarse`` itself when it is one (factored before, kept)."""
    if isinstance(coarse, CoarseSolver):
        return coarse.solve(rhs)
    solver = CoarseSolver(coarse)
    out = solver.solve(rhs, coarse.createVecRight())
    solver.destroy()
    return out
