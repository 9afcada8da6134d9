"""The Gauss-Newton step in sample space (Woodbury; ENGD-W / SPRING: Guzman-Cordero, Dangel,
Goldshlager & Zeinhofer 2025; the distributed pattern of NetKet's SRt driver).

With K = J J^T (N x N, N the residual rows of all ranks), (J^T J + lambda I)^-1 J^T =
J^T (K + lambda I)^-1, so the damped step with momentum m = mu s' (docs/second-order.md §3)

    (J^T J + lambda I) s = -J^T r + lambda m    is    s = m - J^T (K + lambda I)^-1 (r + J m)

exactly: one Cholesky factorisation of an N x N matrix instead of a P x P one, the cheaper
exact step where the rows are fewer than the parameters. No rank holds a P x P matrix: the
explicit Jacobian's rows, sharded over the ranks, are regrouped by parameter columns (one
MPI all-to-all), each rank forms the kernel of its P / n columns, J[:, c] J[:, c]^T (N^2 P / n
flops), and the partial kernels are summed over the ranks. J m and J^T alpha are products
with this rank's rows; the row vectors are gathered (allgather) and the parameter vectors
summed (bitwise equal on every rank), so every replica takes the same step.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from mpi4py import MPI

from parallel_ms.training.optimizers.curvature import (RATES, CurvatureSolver, Momentum,
                                                       Solution, shifted_cholesky)

if TYPE_CHECKING:
    from parallel_ms.training.residuals import Linearization


def _edges(n: int, parts: int) -> list[int]:
    """Boundaries of ``parts`` nearly equal consecutive blocks of range(n)."""
    return [n * k // parts for k in range(parts + 1)]


class SampleSpace(CurvatureSolver):
    """The damped Gauss-Newton system solved through the kernel K = J J^T, summed over the
    ranks from column blocks of J; Cholesky of K + lambda I per damping."""

    explicit = True
    kernel: torch.Tensor | None = None

    def _gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """This rank's rows of an N-vector, gathered in rank order (the same bits on every
        rank)."""
        out = np.empty(sum(self.counts))
        self.comm.Allgatherv(np.ascontiguousarray(local.detach().cpu().numpy()),
                             [out, self.counts, self.offsets[:-1], MPI.DOUBLE])
        return torch.from_numpy(out).to(local)

    def _by_columns(self, jac: torch.Tensor) -> torch.Tensor:
        """J regrouped: every rank's rows of this rank's block of parameter columns (N x P_c),
        by one all-to-all."""
        size, rank = self.comm.size, self.comm.rank
        cols = _edges(jac.shape[1], size)
        local = jac.detach().cpu().numpy()
        send = np.concatenate([np.ascontiguousarray(local[:, a:b]).ravel()
                               for a, b in zip(cols, cols[1:])])
        send_counts = [local.shape[0] * (b - a) for a, b in zip(cols, cols[1:])]
        width = cols[rank + 1] - cols[rank]
        recv = np.empty(sum(self.counts) * width)
        recv_counts = [n * width for n in self.counts]
        self.comm.Alltoallv([send, send_counts, np.cumsum([0] + send_counts[:-1]), MPI.DOUBLE],
                            [recv, recv_counts, np.cumsum([0] + recv_counts[:-1]), MPI.DOUBLE])
        return torch.from_numpy(recv.reshape(-1, width)).to(jac)

    def bind(self, lin: "Linearization") -> None:
        self.kernel = None                                 # the last step's, before the new
        self.jac = lin.jacobian(self.chunk)
        self.r = torch.cat(list(lin.rows.values()))
        self.counts = self.comm.allgather(len(self.r))
        self.offsets = np.cumsum([0] + self.counts).tolist()
        columns = self._by_columns(self.jac)
        self.kernel = self.total(columns @ columns.T)
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
        alpha = torch.cholesky_solve(self._gather_rows(local)[:, None], factor)[:, 0]
        x = -self._jt(alpha) if m is None else m - self._jt(alpha)
        return Solution(x, self.total(self.jac.T @ (self.jac @ x)))

    @staticmethod
    def memory(parameters: float, rows: float, itemsize: int, ranks: int) -> float:
        """This rank's Jacobian rows and its column block of J (N x P / n), and the kernel:
        its partial sum, the sum, the shifted copy and the factor (4 N x N), N = rows x
        ranks."""
        n = rows * ranks
        return itemsize * (2 * rows * parameters + 4 * n * n)

    @staticmethod
    def seconds(parameters: float, rows: float, ranks: int) -> float:
        """The kernel of this rank's columns (2 N^2 P / n), Cholesky N^3 / 3 on every rank."""
        n = rows * ranks
        return (2 * n * n * parameters / ranks + n ** 3 / 3) / RATES["torch"]
