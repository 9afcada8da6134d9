"""The parameter-space Gauss-Newton step on a distributed dense matrix: G = J^T J held
block-cyclically over the ranks and factored by ScaLAPACK through PETSc (``MATSCALAPACK``),
so that no rank holds a P x P matrix (docs/second-order.md §3; issue 32).

Per step (:meth:`ScaLAPACK.bind`) this rank's Jacobian rows become rows of one PETSc dense
matrix J (N x P over the ranks), redistributed by PETSc to ScaLAPACK's 2D block-cyclic layout;
G = J^T J is one PBLAS product (``MatTransposeMatMult`` of two ``MATSCALAPACK`` matrices:
``pdgemm``) and g = J^T r one PETSc product. Per solve, a copy of G is shifted by lambda,
Cholesky-factored in place (``pdpotrf``) and solved (``pdpotrs``). Per rank this holds
P^2 / n numbers of G (and as many of the factor while solving) instead of :class:`~.curvature.
Cholesky`'s 3 P^2, and factors with P^3 / (3 n) flops instead of P^3 / 3 on every rank.

The Jacobian's rows are padded with zero rows to the same count on every rank: the row layout
then suits ScaLAPACK (equal local sizes), so PETSc redistributes J by ScaLAPACK's ``pdgemr2d``
instead of inserting entry by entry; zero rows add exact zeros to J^T J and J^T r.

Vectors the optimizer sees (g, the step x and G x) are replicated: each entry is computed once,
on the rank that owns it, and copied to every rank (``VecScatter`` to all), so every rank holds
the same bits and the replicas stay bitwise equal.

Host only: PETSc and ScaLAPACK work on host memory in float64, so on a GPU every step copies the
Jacobian and the residual to the host, and every solve the right-hand side there and the step
back to the parameters' device (the other solvers stay on the device: :mod:`.curvature`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from mpi4py import MPI
from petsc4py import PETSc

from parallel_ms.training.optimizers.curvature import CurvatureSolver, Momentum, Solution

if TYPE_CHECKING:
    from parallel_ms.training.residuals import Linearization

#: PETSc's matrix type name (petsc4py's Mat.Type lists no constant for it)
MATSCALAPACK = "scalapack"
#: PETSc's error code for a failed external library call: ScaLAPACK's potrf with INFO > 0 (a
#: leading minor not positive definite) raises it (``PetscCallScaLAPACKInfo``)
PETSC_ERR_LIB = 76


def _replicated(vec: PETSc.Vec, like: torch.Tensor) -> torch.Tensor:
    """A distributed Vec as a torch vector with every entry on every rank (its owner's bits)."""
    scatter, full = PETSc.Scatter.toAll(vec)
    try:
        scatter.scatter(vec, full, addv=PETSc.InsertMode.INSERT_VALUES,
                        mode=PETSc.ScatterMode.FORWARD)
        out = torch.from_numpy(full.getArray(readonly=True).copy())
    finally:
        scatter.destroy()
        full.destroy()
    return out.to(device=like.device, dtype=like.dtype)


def _destroy(*objects: PETSc.Object | None) -> None:
    for obj in objects:
        if obj is not None:
            obj.destroy()


class ScaLAPACK(CurvatureSolver):
    """G = J^T J as a ``MATSCALAPACK`` matrix (P^2 / n per rank); Cholesky of G + lambda I by
    ScaLAPACK per solve, on a copy, so that a rejected step is re-solved with a larger lambda
    without new Jacobian products. Host only (float64, host memory; on a GPU the Jacobian and
    the vectors are copied to and from the host)."""

    explicit = True
    gram: PETSc.Mat | None = None

    def _free(self) -> None:
        """Destroy the last step's G (collective: every rank binds together)."""
        _destroy(self.gram)
        self.gram = None

    def bind(self, lin: "Linearization") -> None:
        self._free()                                      # the last step's, before the new
        jac = lin.jacobian(self.chunk)
        r = torch.cat(list(lin.rows.values()))
        comm, (rows, n) = self.comm, jac.shape
        # the layouts ScaLAPACK takes as they are (equal local sizes, the last one no larger):
        # rows zero-padded to the largest count, columns split as PetscSplitOwnershipEqual does
        padded = max(1, comm.allreduce(rows, op=MPI.MAX))
        total, block = padded * comm.size, -(-n // comm.size)
        columns = max(0, min(block, n - comm.rank * block))
        # PETSc dense storage is column-major: this rank's rows, zero-padded, in Fortran order
        local = np.zeros((padded, n), order="F")
        local[:rows] = jac.detach().cpu().numpy()
        del jac
        res = np.zeros(padded)
        res[:rows] = r.detach().cpu().numpy()
        dense = vec = grad = jac_s = None
        try:
            dense = PETSc.Mat().createDense(((padded, total), (columns, n)),
                                            array=local.ravel(order="F"), comm=comm)
            dense.assemble()
            vec = dense.createVecLeft()                   # r, in J's row layout
            vec.setArray(res)
            grad = dense.createVecRight()
            dense.multTranspose(vec, grad)                # g = J^T r
            self.g = _replicated(grad, r)
            jac_s = dense.convert(MATSCALAPACK, PETSc.Mat())   # a new matrix, not in place
        finally:
            _destroy(dense, vec, grad)
        del local
        assert jac_s is not None
        try:
            self.gram = jac_s.transposeMatMult(jac_s)     # G = J^T J: pdgemm, block-cyclic
        finally:
            jac_s.destroy()

    def gradient(self) -> torch.Tensor:
        return self.g

    def solve(self, damping: float, momentum: Momentum | None, x0: torch.Tensor | None
              ) -> Solution | None:
        """Cholesky of a shifted copy of G by ScaLAPACK (``pdpotrf``), then ``pdpotrs``; None
        on every rank where ScaLAPACK finds G + lambda I not positive definite (its INFO is
        global; the ranks agree on it once more here, so they never part ways)."""
        assert self.gram is not None, "bind() first"
        factor = rhs = x = gx = None
        try:
            factor = self.gram.duplicate(copy=True)
            factor.shift(damping)                         # G + lambda I
            PETSc.Sys.pushErrorHandler("return")          # an expected failure: no traceback
            try:
                factor.factorCholesky(PETSc.IS())         # in place, ScaLAPACK's pdpotrf
                failed = False
            except PETSc.Error as e:
                if e.ierr != PETSC_ERR_LIB:
                    raise
                failed = True
            finally:
                PETSc.Sys.popErrorHandler()
            if self.comm.allreduce(failed, op=MPI.LOR):
                return None
            rhs, x = factor.createVecs()
            lo, hi = rhs.getOwnershipRange()
            b = self.rhs(damping, momentum)
            rhs.setArray(b[lo:hi].detach().cpu().double().numpy())
            factor.solve(rhs, x)
            gx = self.gram.createVecLeft()
            self.gram.mult(x, gx)                         # J^T J x
            return Solution(_replicated(x, b), _replicated(gx, b))
        finally:
            _destroy(factor, rhs, x, gx)

    @staticmethod
    def memory(parameters: float, rows: float, itemsize: int, ranks: int) -> float:
        """While binding: the local Jacobian three times (autograd's, its zero-padded
        column-major copy, its block-cyclic copy) and G (P^2 / n); while solving: G and its
        factor (2 P^2 / n; ScaLAPACK's block-cyclic pieces are P^2 / n up to blocks of 64 rows
        and columns). Bounded by their sum. Measured (peak resident memory, P = 3,000, 2,000
        rows per rank, float64): binding +187 MiB on 1 rank and +165 MiB per rank on 2 (3 x
        46 MiB of Jacobian and 69 or 34 MiB of G), solving +70 and +37 MiB (the factor)."""
        return itemsize * (3 * rows * parameters + 2 * parameters * parameters / ranks)

    @staticmethod
    def seconds(parameters: float, rows: float, ranks: int) -> float:
        """The Jacobian, its redistribution, G by pdgemm (2 rows P^2 per rank), Cholesky
        P^3 / (3 n) per rank and trial, the trials: :func:`.cost_model.step_seconds`."""
        from parallel_ms.training.optimizers.cost_model import step_seconds
        return step_seconds("scalapack", parameters, rows, ranks)
