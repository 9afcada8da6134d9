"""The parameter-space Gauss-Newton step on a distributed dense matrix: G = J^T J held
block-cyclically over the ranks and factored by ScaLAPACK through PETSc (``MATSCALAPACK``),
so that no rank holds a P x P matrix (docs/second-order.md §3; issue 32).

Per step (:meth:`ScaLAPACK.bind`) G is formed by rows: rank k owns the rows lo_k:hi_k of G
(PETSc's equal split, the layout ScaLAPACK takes as it is); every rank forms its own rows'
share of their lower triangle, J[:, :hi_k]^T J_c for column blocks c of lo_k:hi_k (torch's
products on the Jacobian's device, from J^T stored contiguously: 9/16 of the full product's
2 rows P^2 flops over all k), and the shares are summed onto rank k
(:func:`.collectives.sum_to`); the owned rows, a dense PETSc matrix, are redistributed to
ScaLAPACK's 2D block-cyclic layout (``pdgemr2d``). The upper triangle stays zero: ScaLAPACK's
Cholesky (``pdpotrf``, "L" in PETSc) reads only the lower one. Per solve, a copy of G is
shifted by lambda, factored in place and solved (``pdpotrs``); J^T J x is formed from the
Jacobian rows (J^T (J x), summed). Per rank this holds the local J^T (and J while transposing
it), 3 P^2 / n numbers while binding (its own rows, the share in flight, the block-cyclic
copy) and 2 P^2 / n while solving, instead of :class:`~.curvature.Cholesky`'s 3 P^2, and
factors with P^3 / (3 n) flops instead of P^3 / 3 on every rank.

Vectors the optimizer sees (g, the step x and J^T J x) are replicated: g and J^T J x are sums
over ranks with the same bits everywhere, x is computed once, on the rank that owns each entry,
and copied to every rank (``VecScatter`` to all), so the replicas stay bitwise equal.

PETSc and ScaLAPACK work on host memory in float64: on a GPU the products and the sums stay on
the device, and each rank copies its own rows of G to the host once per step, and per solve
the right-hand side there and the step back.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from mpi4py import MPI
from petsc4py import PETSc

from parallel_ms.training.optimizers.collectives import equal_blocks, sum_to
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


def lower_rows(jt: torch.Tensor, lo: int, hi: int, out: torch.Tensor,
               width: int) -> torch.Tensor:
    """This rank's share of the lower triangle of rows lo:hi of G = J^T J (``jt``: J^T,
    contiguous), stored transposed: ``out[j, i] = G[lo + i, j]`` for j <= lo + i (up to
    column blocks of ``width``), zero above; ``out`` (P x (hi - lo), C order) is the
    column-major local array of PETSc's dense rows lo:hi. Returns its rows :hi, the part
    that holds any number."""
    out.zero_()
    for a in range(lo, hi, width):
        b = min(hi, a + width)
        out[:b, a - lo:b - lo] = jt[:b] @ jt[a:b].T
    return out[:hi]


class ScaLAPACK(CurvatureSolver):
    """G = J^T J as a ``MATSCALAPACK`` matrix (P^2 / n per rank), formed by rows from torch's
    products and summed onto each row block's owner; Cholesky of G + lambda I by ScaLAPACK
    per solve, on a copy, so that a rejected step is re-solved with a larger lambda without
    new Jacobian products. Its matrices live in host memory (float64)."""

    explicit = True
    gram: PETSc.Mat | None = None
    #: columns per product of :func:`lower_rows`: 1/8 of P (the products then do 9/16 of the
    #: full J^T J's work; measured fastest of 1/4, 1/8, 1/16 and 1/32 at P = 4,801)
    BLOCKS = 8

    def _free(self) -> None:
        """Destroy the last step's G (collective: every rank binds together)."""
        _destroy(self.gram)
        self.gram = None

    def bind(self, lin: "Linearization") -> None:
        self._free()                                      # the last step's, before the new
        self.jt = jt = lin.jacobian(self.chunk).detach().T.contiguous()     # J^T, P x rows
        r = torch.cat(list(lin.rows.values()))
        self.g = self.total(jt @ r)
        comm, n = self.comm, jt.shape[0]
        starts = equal_blocks(n, comm.size)          # G's rows per owner
        width = max(1, -(-n // self.BLOCKS))
        mine = flat = None
        for k in range(comm.size):
            lo, hi = starts[k], starts[k + 1]
            if k == comm.rank:
                out = mine = jt.new_empty(n, hi - lo)
            else:                                         # shares for the other owners
                if flat is None:
                    flat = jt.new_empty(n * (starts[1] - starts[0]))
                out = flat[:n * (hi - lo)].view(n, hi - lo)
            sum_to(lower_rows(jt, lo, hi, out, width), k, comm)
        del flat
        assert mine is not None
        rows = np.ascontiguousarray(mine.cpu().double().numpy())
        del mine
        columns = starts[comm.rank + 1] - starts[comm.rank]
        dense = None
        try:
            dense = PETSc.Mat().createDense(((columns, n), (columns, n)), array=rows.ravel(),
                                            comm=comm)
            dense.assemble()
            self.gram = dense.convert(MATSCALAPACK, PETSc.Mat())   # a new matrix: pdgemr2d
        finally:
            _destroy(dense)

    def gradient(self) -> torch.Tensor:
        return self.g

    def solve(self, damping: float, momentum: Momentum | None, x0: torch.Tensor | None
              ) -> Solution | None:
        """Cholesky of a shifted copy of G by ScaLAPACK (``pdpotrf``), then ``pdpotrs``; None
        on every rank where ScaLAPACK finds G + lambda I not positive definite (its INFO is
        global; the ranks agree on it once more here, so they never part ways)."""
        assert self.gram is not None, "bind() first"
        factor = rhs = x = None
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
            step = _replicated(x, self.jt)
            return Solution(step, self.total(self.jt @ (self.jt.T @ step)))
        finally:
            _destroy(factor, rhs, x)

    @staticmethod
    def memory(parameters: float, rows: float, itemsize: int, ranks: int) -> float:
        """The local J^T (rows x P, kept for J^T J x; J beside it while transposing) and,
        while binding, three blocks of rows of G (this rank's, the share in flight to another
        owner, the block-cyclic copy: 3 P^2 / n); while solving G and its factor (2 P^2 / n;
        ScaLAPACK's block-cyclic pieces are P^2 / n up to blocks of 64 rows and columns)."""
        return itemsize * (rows * parameters
                           + max(rows * parameters, 3 * parameters * parameters / ranks))

    @staticmethod
    def seconds(parameters: float, rows: float, ranks: int) -> float:
        """The Jacobian, this rank's share of G's rows (9/8 rows P^2), their sums onto the
        owners and redistribution, Cholesky P^3 / (3 n) per rank and trial, the trials:
        :func:`.cost_model.step_seconds`."""
        from parallel_ms.training.optimizers.cost_model import step_seconds
        return step_seconds("scalapack", parameters, rows, ranks)
