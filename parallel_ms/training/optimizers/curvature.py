"""Curvature solvers of the Gauss-Newton step: (J^T J + lambda I) s = b for the linearization
of one step (docs/second-order.md §3), each a strategy behind :class:`CurvatureSolver`.

- :class:`Cholesky`: the explicit Gauss-Newton matrix G = J^T J (this rank's rows' Jacobian,
  summed over ranks: P x P on every rank) and a Cholesky factorisation of G + lambda I;
- :class:`ConjugateGradients`: matrix-free CG, each iteration one Jacobian product each way on
  this rank's rows and one sum over ranks of a parameter-sized vector; optionally
  preconditioned by a randomized Nystrom approximation of J^T J (:mod:`.nystrom`).

A solver that holds J^T J (``explicit``) re-solves a rejected step with a larger damping at no
new Jacobian products; a matrix-free one is followed by a backtracking line search along its
step. These two and the sample-space solver keep every tensor they build (the Gram matrix or
kernel, its shifted copy and factor, CG's vectors) on the device and in the dtype of the
Jacobian and the parameters, and sum over ranks by the ``total`` they are given
(:func:`.collectives.replicated_sum`: NCCL on a GPU, no host round trip per CG iteration);
the ScaLAPACK solver is host only. New solvers: one class here (or in a file of their own) and
one entry in :data:`parallel_ms.training.optimizers.registry.CURVATURE_SOLVERS`.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from mpi4py import MPI

from parallel_ms.config import OptimizerConfig
from parallel_ms.training.optimizers.nystrom import Nystrom

if TYPE_CHECKING:
    from parallel_ms.training.residuals import Linearization

#: a sum over ranks of a tensor, bitwise equal on every rank
Sum = Callable[[torch.Tensor], torch.Tensor]
#: the momentum of a step: (mu, the previous accepted step s')
Momentum = tuple[float, torch.Tensor]
#: flops per second per rank (one torch thread) of the solvers' set-up and factorisation,
#: measured by benchmarks/gn_scaling.py on the default run's step (EPYC, 2026-12-04, 1 rank:
#: docs/results.md §2.3): torch's products and Cholesky, and PETSc's ScaLAPACK's level-3 PBLAS
#: (pdgemm over Debian's OpenBLAS; the ScaLAPACK solver's triangular solves)
RATES = {"torch": 44e9, "scalapack": 20e9}


@dataclass
class Solution:
    x: torch.Tensor
    jtj_x: torch.Tensor               #: J^T J x (for the model's predicted decrease)
    iterations: int = 0               #: operator applications (matrix-free solvers)


class CurvatureSolver(ABC):
    """Solves (J^T J + lambda I) s = -g + lambda mu s', the damped Gauss-Newton system with the
    momentum (mu, s') (SPRING; none: mu = 0), on the linearization ``bind`` was given (g = J^T r
    its gradient)."""

    #: holds J^T J: a rejected step is re-solved with a larger damping
    explicit: bool = False
    #: solves the system exactly (to rounding): a candidate of ``gn_solver = "auto"``
    exact: bool = True

    def __init__(self, cfg: OptimizerConfig, total: Sum, chunk: int, comm: MPI.Comm) -> None:
        #: ``total``: the sum over the ranks of ``comm``, bitwise equal on every rank;
        #: ``chunk``: points per reverse-mode pass of an explicit Jacobian
        self.cfg, self.total, self.chunk, self.comm = cfg, total, chunk, comm

    @abstractmethod
    def bind(self, lin: "Linearization") -> None:
        """Work on ``lin`` from now on."""

    def rebind(self, lin: "Linearization") -> None:
        """Work on ``lin``, a fresh linearization at the parameters of the bound one (after
        trials moved them and they were restored): what depends only on J may be kept."""
        self.bind(lin)

    @abstractmethod
    def gradient(self) -> torch.Tensor:
        """The global gradient g = J^T r of the bound linearization's rows."""

    @abstractmethod
    def solve(self, damping: float, momentum: Momentum | None, x0: torch.Tensor | None
              ) -> Solution | None:
        """The solution for ``damping`` lambda and ``momentum`` (mu, s') (None: none), from
        the guess x0 where the solver uses one; None where J^T J + lambda I is found not
        positive definite."""

    def rhs(self, damping: float, momentum: Momentum | None) -> torch.Tensor:
        """-g + lambda mu s'."""
        g = self.gradient()
        if momentum is None:
            return -g
        mu, previous = momentum
        return -g + (damping * mu) * previous

    @staticmethod
    def memory(parameters: float, rows: float, itemsize: int, ranks: int) -> float:
        """Bytes per rank beyond a few parameter-sized vectors (``rows``: this rank's)."""
        return 0.0

    @staticmethod
    def seconds(parameters: float, rows: float, ranks: int) -> float:
        """Modeled seconds of one step with this solver on this machine (``rows``: this
        rank's): :func:`.cost_model.step_seconds` (nan: no model)."""
        return math.nan


def conjugate_gradients(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                        damping: float, x0: torch.Tensor | None, tol: float,
                        max_iter: int, precondition: Callable[[torch.Tensor], torch.Tensor]
                        | None = None) -> Solution:
    """CG on (A + damping I) x = b, A = ``apply`` (symmetric positive semidefinite), from x0
    (dropped when it is worse than zero), until ||residual|| <= tol ||b|| or max_iter;
    preconditioned by ``precondition`` (v -> M^-1 v, symmetric positive definite) if given."""
    def op(v: torch.Tensor) -> torch.Tensor:
        return apply(v) + damping * v

    def inverse(v: torch.Tensor) -> torch.Tensor:
        return v if precondition is None else precondition(v)

    iterations = 0
    x = torch.zeros_like(b)
    r = b.clone()
    if x0 is not None:
        r0 = b - op(x0)
        iterations += 1
        if r0 @ r0 < r @ r:
            x, r = x0.clone(), r0
    z = inverse(r)
    p, rz, target = z.clone(), float(r @ z), tol * float(b.norm())
    while iterations < max_iter and float(r.norm()) > target:
        ap = op(p)
        iterations += 1
        pap = float(p @ ap)
        if pap <= 0:
            break
        a = rz / pap
        x.add_(p, alpha=a)
        r.add_(ap, alpha=-a)
        z = inverse(r)
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return Solution(x, b - r - damping * x, iterations)


class ConjugateGradients(CurvatureSolver):
    """Matrix-free: CG with J^T J p = J^T (J p) by one forward- and one reverse-mode product
    on this rank's rows and one sum over ranks per iteration; warm-started from x0. With
    ``cg_preconditioner = "nystrom"`` preconditioned by the randomized Nystrom approximation
    of J^T J of rank ``nystrom_rank`` (:mod:`.nystrom`), sketched once per step at its first
    solve (``nystrom_rank`` more products, counted in the solve's iterations)."""

    exact = False

    def bind(self, lin: "Linearization") -> None:
        self.lin = lin
        self.nystrom: Nystrom | None = None
        self.sketched = False

    def rebind(self, lin: "Linearization") -> None:
        """The same J: the sketch is kept."""
        self.lin = lin

    def gradient(self) -> torch.Tensor:
        return self.total(self.lin.vjp(self.lin.rows))

    def _gauss_newton(self, p: torch.Tensor) -> torch.Tensor:
        """This rank's J^T (J p)."""
        return self.lin.vjp(self.lin.jvp(p))

    def solve(self, damping: float, momentum: Momentum | None, x0: torch.Tensor | None
              ) -> Solution:
        b, sketch = self.rhs(damping, momentum), 0
        if self.cfg.cg_preconditioner == "nystrom" and not self.sketched:
            self.nystrom = Nystrom.sketch(lambda omega: self.total(torch.stack(
                [self._gauss_newton(w) for w in omega.T], 1)), b, self.cfg.nystrom_rank)
            self.sketched, sketch = True, min(self.cfg.nystrom_rank, b.numel())
        sol = conjugate_gradients(lambda p: self.total(self._gauss_newton(p)), b, damping, x0,
                                  self.cfg.cg_tol, self.cfg.cg_max_iter,
                                  None if self.nystrom is None else self.nystrom.inverse(damping))
        sol.iterations += sketch
        return sol

    @staticmethod
    def seconds(parameters: float, rows: float, ranks: int) -> float:
        """Its iterations (products with J and J^T, sums of P) and the line search's trials:
        :func:`.cost_model.step_seconds`."""
        from parallel_ms.training.optimizers.cost_model import step_seconds
        return step_seconds("cg", parameters, rows, ranks)


def shifted_cholesky(matrix: torch.Tensor, damping: float) -> torch.Tensor | None:
    """The Cholesky factor of ``matrix`` + damping I (None where it is not positive definite),
    ``matrix`` left as it is."""
    shifted = matrix.clone()
    shifted.diagonal().add_(damping)
    factor, info = torch.linalg.cholesky_ex(shifted)
    return factor if int(info) == 0 else None


def normal_matrix(jac: torch.Tensor, blocks: int = 8) -> torch.Tensor:
    """J^T J from the products of its upper block triangle (column blocks of J), mirrored:
    (blocks + 1) / (2 blocks) of the work of ``jac.T @ jac``, as a symmetric rank-k update
    would do, on any device; exactly symmetric."""
    cols = jac.tensor_split(min(blocks, jac.shape[1]), dim=1)
    edges = [0]
    for c in cols:
        edges.append(edges[-1] + c.shape[1])
    out = jac.new_empty(jac.shape[1], jac.shape[1])
    for i, a in enumerate(cols):
        for k in range(i, len(cols)):
            block = a.T @ cols[k]
            if k == i:
                out[edges[i]:edges[i + 1], edges[i]:edges[i + 1]] = (block + block.T) / 2
            else:
                out[edges[i]:edges[i + 1], edges[k]:edges[k + 1]] = block
                out[edges[k]:edges[k + 1], edges[i]:edges[i + 1]] = block.T
    return out


class Cholesky(CurvatureSolver):
    """The explicit Gauss-Newton matrix G = J^T J, summed over ranks (P x P on every rank),
    from this rank's explicit Jacobian (:meth:`Linearization.jacobian`); Cholesky of
    G + lambda I per solve."""

    explicit = True
    gram: torch.Tensor | None = None

    def bind(self, lin: "Linearization") -> None:
        self.gram = None                                  # the last step's, before the new
        jac = lin.jacobian(self.chunk)
        r = torch.cat(list(lin.rows.values()))
        self.gram = self.total(normal_matrix(jac))
        self.g = self.total(jac.T @ r)

    def gradient(self) -> torch.Tensor:
        return self.g

    def solve(self, damping: float, momentum: Momentum | None, x0: torch.Tensor | None
              ) -> Solution | None:
        assert self.gram is not None, "bind() first"
        factor = shifted_cholesky(self.gram, damping)
        if factor is None:
            return None
        x = torch.cholesky_solve(self.rhs(damping, momentum)[:, None], factor)[:, 0]
        return Solution(x, self.gram @ x)

    @staticmethod
    def memory(parameters: float, rows: float, itemsize: int, ranks: int) -> float:
        """The local Jacobian (rows x P) and G, its sum and the factor (3 P x P)."""
        return itemsize * (rows * parameters + 3 * parameters * parameters)

    @staticmethod
    def seconds(parameters: float, rows: float, ranks: int) -> float:
        """The Jacobian, G (the upper block triangle: 9/16 of 2 rows P^2) and its sum,
        Cholesky P^3 / 3 on every rank per trial, the trials (:func:`.cost_model.step_seconds`)."""
        from parallel_ms.training.optimizers.cost_model import step_seconds
        return step_seconds("cholesky", parameters, rows, ranks)
