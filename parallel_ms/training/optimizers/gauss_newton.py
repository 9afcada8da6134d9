"""Gauss-Newton (Levenberg-Marquardt) training, matrix-free and data parallel
(docs/second-order.md §3; energy natural gradient: Mueller & Zeinhofer 2023).

With the objective J(theta) = ||r(theta)||^2 as residual rows (:mod:`.residuals`) and
g = J^T r (J the Jacobian of r), one step solves

    (J^T J + lambda I) s = -g                                       (Gauss-Newton + damping)

by a curvature solver (:mod:`.curvature`: the explicit matrix and Cholesky, or matrix-free
conjugate gradients followed by a backtracking (Armijo) line search on the global loss along
s), and adapts the damping by the gain ratio

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
identically on every rank (:func:`.collectives.replicated_sum`: on the parameters' device,
through NCCL on a GPU, MPI on the host), so every rank computes the same CG iterates, the same
step length, the same accept/reject decision and the same damping: the replicas stay bitwise
equal without a broadcast of the parameters. The step's vectors (the parameters, the step,
the previous step s') live on the parameters' device; the loss is a host scalar. Memory: a few
parameter-sized vectors, and what the curvature solver holds.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from mpi4py import MPI

from parallel_ms.config import OptimizerConfig
from parallel_ms.training.optimizers.base import Optimizer, StepRecord, flatten, unflatten
from parallel_ms.training.optimizers.collectives import replicated_sum
from parallel_ms.training.optimizers.curvature import CurvatureSolver, Momentum

if TYPE_CHECKING:          # (the objective's modules need Firedrake; this one does not)
    from parallel_ms.training.residuals import Linearization, Residuals

ARMIJO = 1e-4                         #: sufficient decrease constant of the line search
DAMPING_RANGE = (1e-12, 1e12)         #: lambda is kept inside (too small: NaN; too large: stall)

#: a trial's outcome: (its linearization, its loss, the gain ratio)
Trial = tuple["Linearization", float, float]


class GaussNewton(Optimizer):
    """One Levenberg-Marquardt step per :meth:`step` on the residuals' parameters, the linear
    system solved by ``solver`` (a :class:`~.curvature.CurvatureSolver` class)."""

    name = "gauss-newton"
    stat_names = ("damping", "cg_iters", "step_length", "gain_ratio", "trials", "momentum")

    def __init__(self, residuals: Residuals, cfg: OptimizerConfig,
                 solver: type[CurvatureSolver], comm: MPI.Comm = MPI.COMM_WORLD) -> None:
        self.residuals, self.comm = residuals, comm
        self.params = residuals.params
        self.cfg = cfg
        self.damping, self.nu = cfg.gn_damping, 2.0
        #: the previous accepted step s': CG's warm start and the momentum's direction
        self.previous: torch.Tensor | None = None
        n = sum(p.numel() for p in self.params)
        o = residuals.objective
        #: points per reverse-mode pass of the explicit Jacobian (~256 MB of per-point rows)
        chunk = max(1, 2 ** 25 // (n * (o.problem.dim + 2) * o.outputs))
        self.solver = solver(cfg, self._sum, chunk, comm)
        self._lin: Linearization | None = None
        self._lin_key: Any = None
        #: this step's loss evaluations at trial points, and whether the accepted step had momentum
        self.trials, self.with_momentum = 0, False

    @property
    def consistent(self) -> bool:
        return True

    @property
    def freezes_balancing(self) -> bool:
        return True

    # ---- global quantities (bitwise equal on every rank) -------------------------------
    def _sum(self, x: torch.Tensor) -> torch.Tensor:
        return replicated_sum(x, self.comm)

    def _loss(self, lin: Linearization) -> float:
        local = sum(float(r @ r) for r in lin.rows.values())
        return float(self._sum(torch.tensor([local], dtype=torch.float64)))

    def _key(self) -> tuple[Any, ...]:
        """What the cached linearization depends on besides the parameters."""
        return (self.residuals.objective.version, tuple(sorted(self.residuals.weights.items())))

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
               predicted: float) -> Trial | None:
        """Evaluate theta0 + step; (its linearization, loss, gain ratio) if it decreases the
        loss sufficiently (Armijo), else None (the parameters are then left at the trial)."""
        self._set(theta0 + step)
        self.trials += 1
        trial = self.residuals.linearize()
        new_loss = self._loss(trial)
        if not (math.isfinite(new_loss) and new_loss <= loss + ARMIJO * 2 * gs):
            return None
        return trial, new_loss, (loss - new_loss) / predicted if predicted > 0 else 0.0

    def _momentum(self, momentum: bool) -> Momentum | None:
        """(mu, s') of the right-hand side above, or None without momentum."""
        return (self.cfg.gn_momentum, self.previous) if momentum else None

    def _momentum_tries(self) -> tuple[bool, ...]:
        """With momentum and a previous step: first with it, then without."""
        return (True, False) if self.cfg.gn_momentum > 0 and self.previous is not None \
            else (False,)

    def _backtracking(self, g: torch.Tensor, theta0: torch.Tensor, loss: float
                      ) -> tuple[Trial | None, int, float]:
        """A matrix-free solver: one solve, then Armijo backtracking along its step."""
        cfg, iterations = self.cfg, 0
        for momentum in self._momentum_tries():
            if self.trials:
                self.solver.rebind(self._back_to(theta0))
            sol = self.solver.solve(self.damping, self._momentum(momentum), self.previous)
            assert sol is not None                  # a matrix-free solve always returns
            iterations += sol.iterations
            s, alpha = sol.x, 1.0
            gs, sjjs = float(g @ s), float(s @ sol.jtj_x)
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

    def _redamping(self, g: torch.Tensor, theta0: torch.Tensor, loss: float) -> Trial | None:
        """A solver that holds J^T J: a rejected (or not positive definite) step is re-solved
        with a larger lambda without new Jacobian products."""
        momentum, attempts = self._momentum_tries()[0], 0
        while attempts <= self.cfg.line_search:
            sol = self.solver.solve(self.damping, self._momentum(momentum), None)
            if sol is not None:
                s = sol.x
                gs = float(g @ s)
                out = self._trial(theta0, s, loss, gs, -(2 * gs + float(s @ sol.jtj_x))) \
                    if gs < 0 else None
                if out is not None:
                    self.previous, self.with_momentum = s, momentum
                    return out
                if momentum:                    # retry without momentum, same damping
                    momentum = False
                    continue
            self.damping *= self.nu             # not positive definite, or rejected
            self.nu *= 2
            attempts += 1
        return None

    def step(self, step: int = 0) -> StepRecord:
        """One damped Gauss-Newton step. The record's terms are this rank's at the parameters
        after the step (accepted or not)."""
        if self._lin is None or self._key() != self._lin_key:
            self._lin, self._lin_key = self.residuals.linearize(), self._key()
        lin = self._lin
        loss = self._loss(lin)
        self.trials, self.with_momentum = 0, False
        theta0 = flatten([p.detach() for p in self.params]).clone()
        self.solver.bind(lin)
        g = self.solver.gradient()
        if self.solver.explicit:
            out, iterations, alpha = self._redamping(g, theta0, loss), 0, 1.0
        else:
            out, iterations, alpha = self._backtracking(g, theta0, loss)
        if out is not None:
            trial, new_loss, rho = out
            self.damping *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
            self.nu = 2.0
        else:
            trial = self._back_to(theta0)
            if not self.solver.explicit:
                self.damping *= self.nu
                self.nu *= 2
            self.previous, new_loss, rho = None, loss, float("nan")
        self._lin = trial
        self.damping = min(max(self.damping, DAMPING_RANGE[0]), DAMPING_RANGE[1])
        return StepRecord(self.name, trial.local_terms(), 2 * float(g.norm()), stats={
            "damping": self.damping, "cg_iters": iterations, "step_length": alpha,
            "gain_ratio": rho, "trials": self.trials, "momentum": int(self.with_momentum),
            "accepted": out is not None, "loss": new_loss})

    # ---- checkpoint ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"damping": self.damping, "nu": self.nu, "previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The checkpoint's state; its previous step (read to the host) on the parameters'
        device and in their dtype."""
        self.damping, self.nu = state["damping"], state["nu"]
        previous = state.get("previous", state.get("warm"))       # "warm": before momentum
        self.previous = None if previous is None else previous.to(self.params[0])
        self.invalidate()
