"""The Gauss-Newton step in sample space (Woodbury; ENGD-W / SPRING: Guzman-Cordero, Dangel,
Goldshlager & Zeinhofer 2025; the distributed pattern of NetKet's SRt driver).

With K = J J^T (N x N, N the residual rows of all ranks), (J^T J + lambda I)^-1 J^T =
J^T (K + lambda I)^-1, so the damped step with momentum m = mu s' (docs/second-order.md §3)

    (J^T J + lambda I) s = -J^T r + lambda m    is    s = m - J^T (K + lambda I)^-1 (r + J m)

exactly: one Cholesky factorisation of an N x N matrix instead of a P x P one, the cheaper
exact step where the rows are fewer than the parameters. No rank holds a P x P matrix: the
explicit Jacobian's rows, sharded over the ranks, are regrouped by parameter columns (one
all-to-all), each rank forms the kernel of its P / n columns, J[:, c] J[:, c]^T (its upper
block triangle, as a symmetric rank-k update: 9/8 N^2 P / n flops), and the partial kernels
are summed over the ranks. J m and J^T alpha are products with this rank's rows; the row
vectors are gathered (allgather) and the parameter vectors summed (bitwise equal on every
rank), so every replica takes the same step. The collectives (:mod:`.collectives`) keep
the tensors on their device: NCCL on a GPU, MPI on the host.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from parallel_ms.training.optimizers.collectives import by_columns, gather_rows
from parallel_ms.training.optimizers.curvature import (CurvatureSolver, Momentum, Solution,
                                                       normal_matrix, shifted_cholesky)

if TYPE_CHECKING:
    from parallel_ms.training.residuals import Linearization


class SampleSpace(CurvatureSolver):
    """The damped Gauss-Newton system solved through the kernel K = J J^T, summed over the
    ranks from column blocks of J; Cholesky of K + lambda I per damping. Every tensor stays on
    the Jacobian's device (the collectives: :mod:`.collectives`)."""

    explicit = True
    kernel: torch.Tensor | None = None

    def bind(self, lin: "Linearization") -> None:
        self.kernel = None                                 # the last step's, before the new
        self.jac = lin.jacobian(self.chunk)
        self.r = torch.cat(list(lin.rows.values()))
        self.counts = self.comm.allgather(len(self.r))
        self.offsets = np.cumsum([0] + self.counts).tolist()
        columns = by_columns(self.jac, self.counts, self.comm)
        self.kernel = self.total(normal_matrix(columns.T))        # columns columns^T
        del columns
        self.g = self.total(self.jac.T @ self.r)

    def gradient(self) -> torch.Tensor:
        return self.g

    def _jt(self, rows: torch.Tensor) -> torch.Tensor:
        """J^T of an N-vector given on every rank: this rank's rows' share, summed."""
        start, stop = self.offsets[self.comm.rank], self.offsets[self.comm.rank + 1]
        return self.total(self.jac.T @ rows[start:stop])

    def solve(self, damping: float, momentum: Momentum | None, x0: torch.Tensor | None
              ) -> Solution | None:
        assert self.kernel is not None, "bind() first"
        factor = shifted_cholesky(self.kernel, damping)                 # K + lambda I
        if factor is None:
            return None
        m = None if momentum is None else momentum[0] * momentum[1]
        local = self.r if m is None else self.r + self.jac @ m
        alpha = torch.cholesky_solve(gather_rows(local, self.counts, self.comm)[:, None],
                                     factor)[:, 0]
        x = -self._jt(alpha) if m is None else m - self._jt(alpha)
        return Solution(x, self.total(self.jac.T @ (self.jac @ x)))

    @staticmethod
    def memory(parameters: float, rows: float, itemsize: int, ranks: int) -> float:
        """This rank's Jacobian rows, and on several ranks the all-to-all's send and
        receive buffers (its column block of J, N x P / n, is the receive buffer), and the
        kernel: its partial sum, the sum, the shifted copy and the factor (4 N x N),
        N = rows x ranks. Bounded by their sum. Measured: docs/results.md §2.3."""
        n = rows * ranks
        copies = 3 if ranks > 1 else 1
        return itemsize * (copies * rows * parameters + 4 * n * n)

    @staticmethod
    def seconds(parameters: float, rows: float, ranks: int) -> float:
        """The Jacobian, the all-to-all, the kernel of this rank's columns (9/8 N^2 P / n) and
        its sum, Cholesky N^3 / 3 on every rank per trial, the trials:
        :func:`.cost_model.step_seconds`."""
        from parallel_ms.training.optimizers.cost_model import step_seconds
        return step_seconds("woodbury", parameters, rows, ranks)
