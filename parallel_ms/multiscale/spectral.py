"""The local spectral problems of GMsFEM (Efendiev, Galvis & Hou 2013: the spectral problem in
the local snapshot space, here all fine P1 functions on omega_i):

    a_i(phi, v) = lambda s_i(phi, v)   for all fine P1 functions v on omega_i,
    a_i(phi, v) = int_{omega_i} K grad phi . grad v,     s_i(phi, v) = int_{omega_i} kappa~ phi v,
    kappa~ = K sum_j |grad chi_j|^2,

with natural (Neumann) conditions on all of the boundary of omega_i: the first eigenvalue is 0
(the constants), and eigenfunctions of small eigenvalues follow the high-conductivity features
that cross omega_i. The basis functions of omega_i are chi_i phi_k for the L smallest
(:mod:`.space`).

**In parallel.** For each colour class of neighbourhoods (closures disjoint,
:mod:`.neighbourhoods`) Firedrake assembles both forms over the distributed fine mesh with the
integrand times the class's DG0 indicator: 2 assemblies per colour, 9 colours. On the fine dofs
of closure(omega_i) these matrices are A_i and S_i of omega_i alone. Each rank extracts the
sequential A_i, S_i of its own neighbourhoods (``Mat.createSubMatrices`` with the global fine
dofs of each closure; PETSc fetches the rows other ranks hold) and solves each small problem for
its L smallest pairs: ``sparse`` by ARPACK in shift-invert mode (``scipy.sparse.linalg.eigsh``
about a shift just below 0, one sparse LU of A_i - shift S_i), ``dense`` by LAPACK
(``scipy.linalg.eigh``). Both agree to ~1e-13; on the 817-dof neighbourhoods of 16 x 16 fine
cells per coarse cell ``sparse`` is 4-10x faster (docs/cases.md). Each neighbourhood's problem
is solved once, by the owner of its coarse vertex.
"""
from __future__ import annotations

from typing import Any

import firedrake as fd
import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from petsc4py import PETSc

from parallel_ms.multiscale.nested import NestedMeshes
from parallel_ms.multiscale.neighbourhoods import Neighbourhoods
from parallel_ms.problems import Problem


#: the shift of ARPACK's shift-invert mode: just below the smallest eigenvalue, 0, so that
#: A_i - SHIFT S_i is positive definite (A_i alone is singular: the constants)
SHIFT = -1e-3


def _sequential(mat: PETSc.Mat) -> scipy.sparse.csr_matrix:
    indptr, cols, vals = mat.getValuesCSR()
    return scipy.sparse.csr_matrix((vals, cols, indptr), shape=mat.getSize())


def local_forms(V: fd.FunctionSpace, k: tuple[Any, Any], grad_sum: Any, weight: Any,
                measures: tuple[Any, Any] = (fd.dx, fd.dx)) -> tuple[Any, Any]:
    """The bilinear forms of the local spectral problem on ``V`` (fine P1),
    ``weight * K grad u . grad v * measures[0]`` (a_i) and
    ``weight * K sum_j |grad chi_j|^2 u v * measures[1]`` (s_i, kappa~ = K sum |grad chi|^2),
    with ``k`` = (K of a_i, K of s_i) and ``grad_sum`` = sum_j |grad chi_j|^2; ``weight``
    restricts them to the neighbourhoods (an indicator). With ``fd.dx`` UFL estimates the
    quadrature degrees from the integrands, as for any form."""
    u, v = fd.TrialFunction(V), fd.TestFunction(V)
    return (weight * (k[0] * fd.inner(fd.grad(u), fd.grad(v))) * measures[0],
            weight * (k[1] * grad_sum * u * v) * measures[1])


def smallest_pairs(a: scipy.sparse.csr_matrix, s: scipy.sparse.csr_matrix, count: int,
                   eigensolver: str = "sparse") -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues (ascending) and eigenvectors (columns) of
    a phi = lambda s phi, ``sparse`` (ARPACK, which needs count < size - 1; else LAPACK) or
    ``dense`` (LAPACK)."""
    if eigensolver == "dense" or count >= a.shape[0] - 1:
        return scipy.linalg.eigh(a.toarray(), s.toarray(), subset_by_index=[0, count - 1])
    lam, phi = scipy.sparse.linalg.eigsh(a.tocsc(), count, s.tocsc(), sigma=SHIFT, which="LM",
                                         v0=np.ones(a.shape[0]))
    order = np.argsort(lam)
    return lam[order], phi[:, order]


class LocalProblems:
    """The sparse matrices A_i (``stiffness``) and S_i (``mass``) of this rank's
    neighbourhoods, in the order of
    :class:`~parallel_ms.multiscale.neighbourhoods.Neighbourhoods`."""

    def __init__(self, problem: Problem, meshes: NestedMeshes, hoods: Neighbourhoods) -> None:
        k = problem.k_ufl(meshes.fine)
        empty = scipy.sparse.csr_matrix((0, 0))
        self.stiffness = [empty] * len(hoods.dofs)
        self.mass = [empty] * len(hoods.dofs)
        for colour, indicator in hoods.indicators.items():
            mine = np.flatnonzero(hoods.colours == colour)
            index_sets = [PETSc.IS().createGeneral(hoods.dofs[n], comm=PETSc.COMM_SELF)
                          for n in mine]
            forms = local_forms(meshes.Vf, (k, k), hoods.grad_sum, indicator)
            for form, out in zip(forms, (self.stiffness, self.mass)):
                mat = fd.assemble(form).petscmat
                for n, sub in zip(mine, mat.createSubMatrices(index_sets)):
                    out[n] = _sequential(sub)
                    sub.destroy()
                mat.destroy()
            for index_set in index_sets:
                index_set.destroy()

    def eigenpairs(self, basis: int, threshold: float = 0.0, eigensolver: str = "sparse"
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(eigenvalues, eigenvectors as columns) of each neighbourhood: the ``basis``
        smallest, or with ``threshold`` > 0 those below it (at least one, at most ``basis``:
        L_i chosen per neighbourhood by its spectrum)."""
        out = []
        for a, s in zip(self.stiffness, self.mass):
            lam, phi = smallest_pairs(a, s, min(basis, a.shape[0]), eigensolver)
            if threshold > 0:
                keep = max(1, int(np.sum(lam < threshold)))
                lam, phi = lam[:keep], phi[:, :keep]
            out.append((lam, phi))
        return out
