"""Gauss-Newton (Levenberg-Marquardt) training, matrix-free and data parallel
(docs/second-order.md §3; energy natural gradient: Mueller & Zeinhofer 2023).

With the objective J(theta) = ||r(theta)||^2 as residual rows (:mod:`.residuals`) and
g = J^T r (J the Jacobian of r), one step solves

    (J^T J + lambda I) s = -g                                       (Gauss-Newton + damping)

by conjugate gradients, each iteration one Jacobian product each way on this rank's rows and
one sum over ranks of a parameter-sized vector; then a backtracking (Armijo) line search on
the global loss along s, and the damping adapted by the gain ratio

    rho = (J(theta) - J(theta + a s)) / (J(theta) - ||r + a J s||^2)

(Nielsen: lambda <- lambda max(1/3, 1 - (2 rho - 1)^3) on acceptance, lambda <- nu lambda,
nu <- 2 nu on rejection). With momentum mu > 0 (SPRING: Goldshlager, Abrahamsen & Lin 2024;
for PINNs Guzman-Cordero et al. 2025) the step minimises ||r + J s||^2 + lambda ||s - mu s'||^2,
s' the previous accepted step:

    (J^T J + lambda I) s = -g + lambda mu s'                        (Gauss-Newton + momentum)

which keeps the directions the points determine well (eigenvalues of J^T J above lambda) a
Gauss-Newton step and averages the others over about 1 / (1 - mu) steps: with fresh points
every step, their noise averages out while a consistent drift adds up. A momentum step that
is not a descent direction of this step's loss, or that the line search rejects, is retried
without momentum. Every vector that decides anything is summed over ranks bitwise
identically on every rank (:func:`parallel.allreduce_replicated`), so every rank computes the
same CG iterates, the same step length, the same accept/reject decision and the same damping:
the replicas stay bitwise equal without a broadcast of the parameters. Memory: a few
parameter-sized vectors; no matrix of points x parameters is formed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from mpi4py import MPI

from parallel_ms import parallel
from parallel_ms.config import OptimizerConfig
from parallel_ms.training.residuals import Linearization, Residuals, flatten, unflatten

ARMIJO = 1e-4                         #: sufficient decrease constant of the line search
DAMPING_RANGE = (1e-12, 1e12)         #: lambda is kept inside (too small: NaN; too large: stall)


@dataclass
class CGResult:
    x: torch.Tensor
    iterations: int                   #: operator applications (the warm start's included)
    jtj_x: torch.Tensor               #: J^T J x, from the recurrence (no extra product)


def conjugate_gradients(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                        damping: float, x0: torch.Tensor | None, tol: float,
                        max_iter: int) -> CGResult:
    """CG on (A + damping I) x = b, A = ``apply`` (symmetric positive semidefinite), from x0
    (dropped when it is worse than zero), until ||residual|| <= tol ||b|| or max_iter."""
    def op(v: torch.Tensor) -> torch.Tensor:
        return apply(v) + damping * v

    iterations = 0
    x = torch.zeros_like(b)
    r = b.clone()
    if x0 is not None:
        r0 = b - op(x0)
        iterations += 1
        if r0 @ r0 < r @ r:
            x, r = x0.clone(), r0
    p, rr, target = r.clone(), float(r @ r), tol * float(b.norm())
    while iterations < max_iter and math.sqrt(rr) > target:
        ap = op(p)
        iterations += 1
        pap = float(p @ ap)
        if pap <= 0:
            break
        a = rr / pap
        x.add_(p, alpha=a)
        r.add_(ap, alpha=-a)
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return CGResult(x, iterations, b - r - damping * x)


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


class GaussNewton:
    """One Levenberg-Marquardt step per :meth:`step` on the residuals' parameters."""

    def __init__(self, residuals: Residuals, cfg: OptimizerConfig,
                 comm: MPI.Comm = MPI.COMM_WORLD) -> None:
        self.residuals, self.comm = residuals, comm
        self.params = residuals.params
        self.cfg = cfg
        self.damping, self.nu = cfg.gn_damping, 2.0
        #: the previous accepted step s': CG's warm start and the momentum's direction
        self.previous: torch.Tensor | None = None
        n = sum(p.numel() for p in self.params)
        o = residuals.objective
        #: points per reverse-mode pass of the explicit Jacobian (~256 MB of per-point rows)
        self.chunk = max(1, 2 ** 25 // (n * (o.problem.dim + 2) * o.outputs))
        self._lin: Linearization | None = None
        self._lin_key: Any = None
        #: this step's loss evaluations at trial points, and whether the accepted step had momentum
        self.trials, self.with_momentum = 0, False

    # ---- global quantities (bitwise equal on every rank) -------------------------------
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return parallel.allreduce_replicated(x, self.comm)

    def _loss(self, lin: Linearization) -> float:
        local = sum(float(r @ r) for r in lin.rows.values())
        return float(self._sum(torch.tensor([local], dtype=torch.float64)))

    def _jt(self, lin: Linearization, u: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._sum(lin.vjp(u))

    def _key(self) -> tuple[Any, ...]:
        """What the cached linearization depends on besides the parameters (the point set is
        compared by identity)."""
        o = self.residuals.objective
        return (o.shard, None if o.coupling is None else o.coupling.tau2,
                tuple(sorted(self.residuals.weights.items())))

    def _cached(self) -> bool:
        key = self._key()
        return (self._lin is not None and key[0] is self._lin_key[0]
                and key[1:] == self._lin_key[1:])

    def invalidate(self) -> None:
        """The parameters changed outside :meth:`step` (e.g. a checkpoint was loaded)."""
        self._lin = None

    def _set(self, theta: torch.Tensor) -> None:
        with torch.no_grad():
            for p, t in zip(self.params, unflatten(theta, self.params)):
                p.copy_(t)

    def _back_to(self, theta0: torch.Tensor) -> Linearization:
        """Undo the rejected trials: the parameters, and a fresh linearization at them (the
        trials moved the parameters under the old one's graph, and the coupling's state)."""
        self._set(theta0)
        return self.residuals.linearize()

    # ---- the step -----------------------------------------------------------------------
    def _trial(self, theta0: torch.Tensor, step: torch.Tensor, loss: float, gs: float,
               predicted: float) -> tuple[Linearization, float, float] | None:
        """Evaluate theta0 + step; (its linearization, loss, gain ratio) if it decreases the
        loss sufficiently (Armijo), else None (the parameters are then left at the trial)."""
        self._set(theta0 + step)
        self.trials += 1
        trial = self.residuals.linearize()
        new_loss = self._loss(trial)
        if not (math.isfinite(new_loss) and new_loss <= loss + ARMIJO * 2 * gs):
            return None
        return trial, new_loss, (loss - new_loss) / predicted if predicted > 0 else 0.0

    def _rhs(self, g: torch.Tensor, momentum: bool) -> torch.Tensor:
        """-g, plus lambda mu s' with momentum (the right-hand side above)."""
        if not momentum:
            return -g
        return -g + (self.damping * self.cfg.gn_momentum) * self.previous

    def _momentum_tries(self) -> tuple[bool, ...]:
        """With momentum and a previous step: first with it, then without."""
        return (True, False) if self.cfg.gn_momentum > 0 and self.previous is not None \
            else (False,)

    def _solve_cg(self, lin: Linearization, g: torch.Tensor, theta0: torch.Tensor,
                  loss: float) -> tuple[Any, int, float]:
        """Matrix-free: one CG solve, then Armijo backtracking along its step."""
        cfg, iterations = self.cfg, 0
        for momentum in self._momentum_tries():
            if self.trials:
                lin = self._back_to(theta0)
            cg = conjugate_gradients(lambda p: self._jt(lin, lin.jvp(p)), self._rhs(g, momentum),
                                     self.damping, self.previous, cfg.cg_tol, cfg.cg_max_iter)
            iterations += cg.iterations
            s, alpha = cg.x, 1.0
            gs, sjjs = float(g @ s), float(s @ cg.jtj_x)
            if gs >= 0:                         # a momentum step that does not descend
                continue
            for _ in range(cfg.line_search + 1):
                out = self._trial(theta0, alpha * s, loss, alpha * gs,
                                  -(2 * alpha * gs + alpha ** 2 * sjjs))
                if out is not None:
                    self.previous, self.with_momentum = alpha * s, momentum
                    return out, iterations, alpha
                alpha *= 0.5
        return None, iterations, 0.0

    def _solve_cholesky(self, lin: Linearization, theta0: torch.Tensor, loss: float
                        ) -> tuple[Any, torch.Tensor]:
        """Explicit Gauss-Newton matrix G = J^T J (summed over ranks, parameters x
        parameters), Cholesky of G + lambda I; a rejected step is re-solved with a larger
        lambda without new Jacobian products."""
        jac = lin.jacobian(self.chunk)
        r = torch.cat(list(lin.rows.values()))
        gram = self._sum(normal_matrix(jac))
        g = self._sum(jac.T @ r)
        del jac
        momentum, attempts = self._momentum_tries()[0], 0
        while attempts <= self.cfg.line_search:
            shifted = gram.clone()
            shifted.diagonal().add_(self.damping)           # G + lambda I
            factor, info = torch.linalg.cholesky_ex(shifted)
            del shifted
            if int(info) == 0:
                s = torch.cholesky_solve(self._rhs(g, momentum)[:, None], factor)[:, 0]
                gs = float(g @ s)
                out = self._trial(theta0, s, loss, gs, -(2 * gs + float(s @ (gram @ s)))) \
                    if gs < 0 else None
                if out is not None:
                    self.previous, self.with_momentum = s, momentum
                    return out, g
                if momentum:                    # retry without momentum, same damping
                    momentum = False
                    continue
            self.damping *= self.nu             # not positive definite, or rejected
            self.nu *= 2
            attempts += 1
        return None, g

    def step(self) -> dict[str, Any]:
        """One damped Gauss-Newton step. Returns this rank's terms at the parameters after
        the step (accepted or not) and the step's statistics."""
        if not self._cached():
            self._lin, self._lin_key = self.residuals.linearize(), self._key()
        lin = self._lin
        loss = self._loss(lin)
        self.trials, self.with_momentum = 0, False
        theta0 = flatten([p.detach() for p in self.params]).clone()
        if self.cfg.gn_solver == "cg":
            g = self._jt(lin, lin.rows)
            out, iterations, alpha = self._solve_cg(lin, g, theta0, loss)
        else:
            out, g = self._solve_cholesky(lin, theta0, loss)
            iterations, alpha = 0, 1.0
        if out is not None:
            trial, new_loss, rho = out
            self.damping *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
            self.nu = 2.0
        else:
            trial = self._back_to(theta0)
            if self.cfg.gn_solver == "cg":
                self.damping *= self.nu
                self.nu *= 2
            self.previous, new_loss, rho = None, loss, float("nan")
        self._lin = trial
        self.damping = min(max(self.damping, DAMPING_RANGE[0]), DAMPING_RANGE[1])
        return {"terms": trial.local_terms(), "loss": new_loss, "grad_norm": 2 * float(g.norm()),
                "damping": self.damping, "cg_iters": iterations, "step_length": alpha,
                "gain_ratio": rho, "accepted": out is not None, "trials": self.trials,
                "momentum": int(self.with_momentum)}

    # ---- checkpoint ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"damping": self.damping, "nu": self.nu, "previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.damping, self.nu = state["damping"], state["nu"]
        self.previous = state.get("previous", state.get("warm"))   # "warm": before momentum
        self.invalidate()
