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
is MatPtAP; the coarse problem is solved by MUMPS LU (PETSc options under the prefix
``gmsfem_``, e.g. ``-gmsfem_ksp_type cg -gmsfem_pc_type gamg``).
"""
from __future__ import annotations

import firedrake as fd
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from parallel_ms.coarse.problem import MUMPS
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


def solve_coarse(matrix: PETSc.Mat, rhs: PETSc.Vec) -> PETSc.Vec:
    """matrix^{-1} rhs by MUMPS LU, or what the options under ``gmsfem_`` say."""
    ksp = PETSc.KSP().create(comm=matrix.getComm())
    ksp.setOperators(matrix)
    ksp.setType(MUMPS["ksp_type"])
    ksp.getPC().setType(MUMPS["pc_type"])
    ksp.getPC().setFactorSolverType(MUMPS["pc_factor_mat_solver_type"])
    ksp.setOptionsPrefix(OPTIONS_PREFIX)
    ksp.setFromOptions()
    out = matrix.createVecRight()
    ksp.solve(rhs, out)
    reason = ksp.getConvergedReason()
    ksp.destroy()
    if reason < 0:
        raise RuntimeError(f"GMsFEM coarse solve did not converge (KSP reason {reason})")
    return out
