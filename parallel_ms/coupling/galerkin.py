"""The Galerkin coupling on the GMsFEM space (``coupling.form = "galerkin"``): the coupling term
as the network's error projected onto V_ms, which vanishes at the solution.

The compression coupling (3.25)/(3.26) compares Q v with Q u_ms; at v = u it leaves
Q (u - u_ms), a consistency gap as large as u_ms's error (on the periodic inclusions of
high-contrast-2d u_ms's rel. L2 error is 1.2: docs/results-high-contrast.md). Tested with the
basis phi_j = R e_j of V_ms instead, the fine residual gives

    b_j(v) = a(v, phi_j) - (f, phi_j) = a(v - u, phi_j),
    c(v)   = (R^T A R)^{-1} b(v):  the coefficients of P_ms (v - u),

P_ms the Galerkin (energy) projection onto V_ms: c(u) = 0, and c sees exactly the part of the
error that the multiscale space resolves. b is the collocation quadrature of the residual rows
of the objective's form (``loss.form``): strong, b_j = (1/M) sum_i phi_j(x_i) r(x_i) (phi_j = 0
on the boundary, so <r, phi_j> = a(v - u, phi_j)); energy, with the rows
rho = (K grad v - sigma_f) / sqrt(K) (div sigma_f = -f), b_j = (1/M) sum_i sqrt(K(x_i))
rho(x_i) . grad phi_j(x_i). The rows

    sqrt(tau_2 D_jj) c_j(v),     D = diag(R^T A R),

make tau_2 sum_j D_jj c_j^2 (the energy norm of P_ms (v - u) with R^T A R lumped to its
diagonal) the coupling term, with no coarse state to match: in the strong form it vanishes at
v = u point by point, in the energy form up to the quadrature (where the energy loss itself is
|v - u|_a^2 + const and the term raises the weight of the error's coarse part).

In parallel the points of one rank meet basis functions of several: the test matrix
Phi = R^T E^T W (multiscale dofs x residual rows; E the fine P1 point evaluation (values or
gradients) of :func:`point_evaluation`, W the quadrature weights) is a distributed PETSc matrix
(one MatTransposeMatMult), the rows live on the owned multiscale dofs, and (R^T A R)^{-1} is one
factorisation per run (:class:`~parallel_ms.multiscale.space.CoarseSolver`), applied per column
block by KSPMatSolve for the Gauss-Newton Jacobian.
"""
from __future__ import annotations

import firedrake as fd
import numpy as np
import torch
from petsc4py import PETSc

from parallel_ms import parallel
from parallel_ms.coupling.compression import coo_matrix, sparse_dense_product
from parallel_ms.coupling.multiscale_state import MultiscaleState


def point_evaluation(V: fd.FunctionSpace, points: np.ndarray, n_global: int,
                     gradient: bool = False) -> PETSc.Mat:
    """E^T for the P1 space ``V``: (dofs of V) x (the global point set, this rank's ``points``
    (m, d) in their order after the points of the lower ranks), E v = v at the points; with
    ``gradient`` E v = grad v, its d components per point (column d i + c). A point may lie in
    a cell another rank owns: Firedrake's vertex-only mesh moves it there, and the global
    point numbers travel with it (interpolated from the input ordering)."""
    comm = V.comm
    d = points.shape[1] if gradient else 1
    offset = comm.exscan(len(points)) or 0
    vom = fd.VertexOnlyMesh(V.mesh(), points, redundant=False)
    numbers = fd.Function(fd.FunctionSpace(vom.input_ordering, "DG", 0))
    numbers.dat.data_wo[:] = offset + np.arange(len(points))
    at_vom = fd.Function(fd.FunctionSpace(vom, "DG", 0)).interpolate(numbers)
    target = fd.VectorFunctionSpace(vom, "DG", 0) if gradient else fd.FunctionSpace(vom, "DG", 0)
    E = fd.assemble(fd.interpolate(fd.grad(fd.TrialFunction(V)) if gradient
                                   else fd.TrialFunction(V), target)).petscmat
    indptr, dofs, values = E.getValuesCSR()
    E.destroy()
    row = np.arange(len(indptr) - 1)                 # local rows: (vom point, component)
    number = np.rint(at_vom.dat.data_ro[row // d]).astype(np.int64)
    column = np.repeat(d * number + row % d, np.diff(indptr))
    return coo_matrix((V.dof_dset.layout_vec.getSizes(), (d * len(points), d * n_global)),
                      dofs, column, values, comm)


class GalerkinProjection:
    """c(v) = (R^T A R)^{-1} Phi r and its rows sqrt(D) c for the GMsFEM ``state`` and this
    rank's interior ``points`` (m, 2), ``n_global`` on all ranks, for the strong residual r, or
    with ``k`` (K_eps at the points) for the energy form's rows (the module docstring; the
    weight sqrt(tau_2) is the caller's). The interface of
    :class:`~parallel_ms.training.weak_residual.WeakResidual`: ``rows``, ``rows_columns``,
    ``cotangent``."""

    def __init__(self, state: MultiscaleState, points: np.ndarray, n_global: int,
                 k: np.ndarray | None = None) -> None:
        self.solver, self.comm = state.solver, state.V.comm
        energy = k is not None
        at_points = point_evaluation(state.space.Vf, points, n_global, gradient=energy)
        self.phi = state.space.R.transposeMatMult(at_points)   # multiscale dofs x rows of r
        at_points.destroy()
        self.point_vec, self.dof_vec = self.phi.createVecs()
        self.point_vec.setArray(np.repeat(np.sqrt(k), points.shape[1]) / n_global if energy
                                else 1.0 / n_global)
        self.phi.diagonalScale(R=self.point_vec)                # the quadrature (and sqrt K)
        self.weight = np.sqrt(state.matrix.getDiagonal().getArray())
        self.coefficients = self.dof_vec.duplicate()
        #: sum over ranks of the squared rows of the last :meth:`rows` (R without tau_2)
        self.norm2 = float("nan")

    def rows(self, r: torch.Tensor) -> np.ndarray:
        """sqrt(D) c at the owned multiscale dofs for the residual rows ``r`` ((m,) strong,
        (m, d) energy); records :attr:`norm2` (collective)."""
        out = self.tangent(r)
        self.norm2 = parallel.allreduce_sum(float(out @ out), self.comm)
        return out

    def tangent(self, dr: torch.Tensor) -> np.ndarray:
        """:meth:`rows` for a change ``dr`` of the residual (linear; records nothing)."""
        self.point_vec.setArray(dr.detach().reshape(-1).double().cpu().numpy())
        self.phi.mult(self.point_vec, self.dof_vec)
        self.solver.solve(self.dof_vec, self.coefficients)
        return self.weight * self.coefficients.getArray()

    def rows_columns(self, dr: torch.Tensor) -> np.ndarray:
        """:meth:`tangent` for the P changes along the last axis of ``dr`` (m, [d,] P): the
        coupling's block of the explicit Jacobian, (owned rows, P), by one sparse-dense
        product and one KSPMatSolve."""
        b = sparse_dense_product(self.phi, dr.detach().reshape(-1, dr.shape[-1]).double().cpu()
                                 .numpy(), dense=True)
        out = self.solver.solve_columns(b)
        b.destroy()
        return self.weight[:, None] * out

    def cotangent(self, u: np.ndarray) -> np.ndarray:
        """The adjoint of :meth:`tangent` (R^T A R is symmetric): Phi^T (R^T A R)^{-1}
        sqrt(D) u at this rank's rows of r (flat)."""
        self.dof_vec.setArray(self.weight * u)
        self.solver.solve(self.dof_vec, self.coefficients)
        self.phi.multTranspose(self.coefficients, self.point_vec)
        return self.point_vec.getArray().copy()
