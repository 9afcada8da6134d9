"""The training loop (plain PINN / Ms-PINN; the hybrid method adds its coupling term here).

Data parallel: each rank holds a DistributedDataParallel replica and its shard of points; the
local loss is scaled by the world size so that DDP's gradient average equals the gradient of
the global objective — the n-rank loss and gradient equal the 1-rank ones for the same
global point set.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from parallel_ms import parallel
from parallel_ms.config import Config
from parallel_ms.coupling.coupling import CouplingState
from parallel_ms.errors import Diverged
from parallel_ms.fine.sampling import Shard, interior_sample, resample_adaptive
from parallel_ms.parallel import ParallelContext
from parallel_ms.reference.cache import load_or_solve
from parallel_ms.reference.estimate import Estimate, ErrorEstimator
from parallel_ms.reference.metrics import relative_errors, torch_point_function
from parallel_ms.resources import resolve_curvature_solver
from parallel_ms.training.balancing import GradNormBalancer
from parallel_ms.training.checkpoint_policy import CheckpointPolicy
from parallel_ms.training.optimizers.base import Target
from parallel_ms.training.optimizers.registry import build_optimizer, picks_solver
from parallel_ms.training.residuals import Residuals
from parallel_ms.training.setup import Setup, build


@dataclass
class Result:
    steps: int
    best_step: int
    best_criterion: float           #: the best iterate's criterion (``train.best_by``): its
                                    #: estimated rel. L2 error or fine-problem loss (3.24)
    rel_l2: float | None
    rel_h1: float | None
    wall_time: float
    history: list[dict[str, Any]] = field(default_factory=list)
    k11_best: float | None = None
    preempted: bool = False
    #: the best iterate's error estimate and corrected answer's errors (estimate.enabled):
    #: estimated_rel_l2, estimated_rel_h1, corrected_rel_l2, corrected_rel_h1
    estimate: dict[str, float] = field(default_factory=dict)


class Callback:
    """A per-step hook of :meth:`Trainer.run` (as the callbacks of PINA's or Lightning's
    trainers): subclasses override what they need."""

    def on_step_end(self, trainer: "Trainer", row: dict[str, Any]) -> None:
        """After step ``row["step"]`` is complete (evaluated, timed), before it is logged."""


class Trainer:
    def __init__(self, cfg: Config, ctx: ParallelContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        torch.set_num_threads(cfg.parallel.threads
                              or max(1, (os.cpu_count() or 1) // ctx.local_size))
        self.s: Setup = build(cfg, ctx)
        self.params = list(self.s.net.parameters())
        self.ddp = DDP(self.s.forward,
                       device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.balancer = GradNormBalancer(self.s.objective.term_names, cfg.balancing.every,
                                         cfg.balancing.alpha, cfg.balancing.enabled)
        if picks_solver(cfg.optimizer):         # not yet picked by ``run``'s guard
            parallel.print0(resolve_curvature_solver(cfg, self.s.problem, ctx.comm))
        self.optimizer = build_optimizer(Target(
            self.params, self._local_loss, lambda: Residuals(
                self.s.objective, self.s.forward, lambda: self.balancer.weights), ctx.comm),
            cfg.optimizer)
        self._reference = None
        self._estimator: ErrorEstimator | None = None
        #: the exponential moving average of the iterates (train.ema_decay > 0): the run's answer
        self.average = AveragedModel(
            self.s.net, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay),
            use_buffers=True) if cfg.train.ema_decay else None
        self.current_step = 0
        self.best: tuple[float, int, dict[str, Any]] = (
            float("inf"), 0, copy.deepcopy(self.s.net.state_dict()))
        self.k11_best: float | None = None
        self._elapsed_before, self._t0 = 0.0, time.perf_counter()
        self._validation_time = 0.0       #: seconds spent on rel. L2/H1 errors (in wall time)
        #: (step, rel. L2, rel. H1) of the best iterate when it was evaluated at its own step
        self._best_evaluated: tuple[int, float, float] | None = None
        self._scratch: torch.nn.Module | None = None        #: see :meth:`network_holding`
        self.checkpoints = CheckpointPolicy(cfg.output.checkpoint_every,
                                            cfg.output.checkpoint_minutes, ctx.comm)

    # ---- one step -----------------------------------------------------------------------
    def _local_loss(self, consistent: bool = False
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This rank's weighted loss x ranks (DDP averages the gradients) and its terms."""
        terms = self.s.objective.terms(self.ddp, consistent)
        return self.balancer.combine(terms) * self.ctx.size, terms

    def step(self, step: int) -> dict[str, Any]:
        """Training step ``step`` by the run's optimizer; its metrics row."""
        self.current_step = step
        objective = self.s.objective
        objective.advance(step)
        if not self.optimizer.freezes_balancing and self.balancer.due(step):
            self.balancer.update(objective.terms(self.s.forward, self.optimizer.consistent),
                                 self.params)
        record = self.optimizer.step(step)
        terms = record.terms
        values = parallel.allreduce_sum(np.array([float(t.detach()) if isinstance(t, torch.Tensor)
                                                  else t for t in terms.values()]))
        stats = dict.fromkeys(self.optimizer.stat_names)
        stats.update({k: record.stats.get(k) for k in stats})
        row = {"step": step, "optimizer": record.optimizer, "lr": record.lr,
               "grad_norm": record.grad_norm, **stats,
               **{name: float(v) for name, v in zip(terms, values)},
               **{f"w_{n}": w for n, w in self.balancer.weights.items()}}
        row["loss"] = sum(self.balancer.weights[n] * row[n] for n in terms)
        if objective.coupling is not None:
            row.update(objective.coupling.log_values())
        return row

    # ---- evaluation ---------------------------------------------------------------------
    def reference(self) -> Any:
        if self._reference is None:
            r = self.cfg.reference
            self._reference, _ = load_or_solve(self.s.problem, r.degree, r.resolution,
                                               cache_dir=Path(r.cache_dir).expanduser())
        return self._reference

    def point_function(self, net: torch.nn.Module | None = None) -> Any:
        """``net`` (default: the current network) as a point function (value and gradient,
        first output)."""
        return torch_point_function(self.s.net if net is None else net,
                                    self.s.objective.dtype, self.ctx.device)

    def errors(self, net: torch.nn.Module | None = None) -> tuple[float, float]:
        """Rel. L2 and H1 errors of ``net`` (default: the current network) against the
        reference."""
        return relative_errors(self.point_function(net), self.reference())

    def estimate(self, net: torch.nn.Module | None = None) -> Estimate:
        """The error estimate of ``net`` (default: the current network; no reference used)."""
        if self._estimator is None:
            e = self.cfg.estimate
            self._estimator = ErrorEstimator(self.s.problem, e.cells_per_period, e.degree,
                                             comm=self.ctx.comm)
        return self._estimator.estimate(self.point_function(net))

    def corrected(self) -> dict[str, float]:
        """The estimate of the current network and the rel. L2/H1 errors of the corrected
        answer v + e_h against the reference."""
        est = self.estimate()
        l2, h1 = relative_errors(self.point_function(), self.reference(),
                                 correction=est.correction)
        return {"estimated_rel_l2": est.rel_l2, "estimated_rel_h1": est.rel_h1,
                "corrected_rel_l2": l2, "corrected_rel_h1": h1}

    def resample(self, round_: int, count: int, adaptive: bool = True) -> None:
        """``count`` new interior points: residual-based (RAD) or fresh ones of
        ``sampling.method``."""
        c = self.cfg.sampling
        old = self.s.objective.shard
        if adaptive:
            interior = resample_adaptive(
                self.s.coarse_mesh, count, c.seed, round_,
                lambda x: self.s.objective.pointwise_residual(self.s.net, x),
                c.adaptive_beta, c.adaptive_c, self.ctx.comm)
        else:
            interior = interior_sample(self.s.coarse_mesh, count, c.method, c.seed, round_,
                                       self.s.layer)
        self.s.objective.set_points(self.s.layer.weigh(old.with_interior(interior, self.ctx.comm),
                                                       self.ctx.comm))

    def resample_if_due(self, step: int) -> None:
        """The point set of ``step``: residual-based every ``sampling.adaptive_every`` steps,
        fresh every ``sampling.resample_every`` steps, as many as ``step``'s count."""
        c = self.cfg.sampling
        if c.adaptive_every and step % c.adaptive_every == 0:
            self.resample(step // c.adaptive_every, c.interior_at(step))
        if c.resample_every and step % c.resample_every == 0:
            self.resample(step // c.resample_every, c.interior_at(step), adaptive=False)

    # ---- checkpoint state ---------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(replicated state, this rank's state): everything a bitwise resume needs."""
        coupling = self.s.objective.coupling
        replicated = {
            "step": self.current_step, "elapsed": self._elapsed(),
            "validation_time": self._validation_time,
            "network": dict(self.s.net.state_dict()),
            "optimizer": self.optimizer.state_dict(), "balancer": self.balancer.state_dict(),
            "best": {"loss": self.best[0], "step": self.best[1],
                     "network": dict(self.best[2]), "k11": self.k11_best},
            "coarse_refresh": self.s.objective.refresh.state_dict()}
        if self.average is not None:
            replicated["average"] = self.average.state_dict()
        shard = self.s.objective.shard
        per_rank: dict[str, Any] = {
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if self.ctx.device.type == "cuda"
                    else None},
            "points": {"interior": shard.interior, "boundary": shard.boundary,
                       "n_interior": shard.n_interior, "n_boundary": shard.n_boundary},
            "coupling": None if coupling is None else {
                "ys": list(coupling.ys), **dataclasses.asdict(coupling.state)}}
        return replicated, per_rank

    def load_state_dict(self, replicated: dict[str, Any], per_rank: dict[str, Any]) -> None:
        self.s.net.load_state_dict(replicated["network"])
        self.optimizer.load_state_dict(replicated["optimizer"])
        self.balancer.load_state_dict(replicated["balancer"])
        b = replicated["best"]
        self.best = (b["loss"], b["step"], b["network"])
        self._best_evaluated = None
        self.k11_best = b["k11"]
        self.s.objective.refresh.load_state_dict(replicated["coarse_refresh"])
        if self.average is not None:
            self.average.load_state_dict(replicated["average"])
        self.current_step = replicated["step"]
        self._elapsed_before = replicated["elapsed"]
        self._validation_time = replicated.get("validation_time", 0.0)
        torch.set_rng_state(per_rank["rng"]["torch"])
        if per_rank["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(per_rank["rng"]["cuda"])
        p = per_rank["points"]
        self.s.objective.set_points(self.s.layer.weigh(
            Shard(p["interior"], p["boundary"], p["n_interior"], p["n_boundary"]),
            self.ctx.comm))
        coupling = self.s.objective.coupling
        if coupling is not None:
            c = dict(per_rank["coupling"])
            coupling.ys = c.pop("ys")
            coupling.state = CouplingState(**c)

    def _elapsed(self) -> float:
        return self._elapsed_before + (time.perf_counter() - self._t0)

    # ---- the loop -----------------------------------------------------------------------
    def run(self, log: Callable[[dict[str, Any]], None] | None = None,
            checkpoint: Callable[[], None] | None = None,
            stop_requested: Callable[[], bool] = lambda: False,
            callbacks: Sequence[Callback] = ()) -> Result:
        """Algorithm 3.1 (hybrid) or plain PINN training from the current step to
        ``train.steps``. Every step's row goes to each callback's ``on_step_end`` (which may
        add entries), then to ``log``; ``checkpoint`` is called when
        :attr:`checkpoints` says so (every ``output.checkpoint_every`` steps, every
        ``output.checkpoint_minutes`` of wall time) and at the end; when ``stop_requested()``
        (the same answer on every rank) the run checkpoints after the current step and stops
        early."""
        cfg = self.cfg
        self._t0 = time.perf_counter()
        self.checkpoints.start()
        history = []
        stopped = False
        for step in range(self.current_step + 1, cfg.train.steps + 1):
            self.resample_if_due(step)
            row = self.step(step)
            bad = [f"the loss term '{n}' is {row[n]}" for n in self.s.objective.term_names
                   if not np.isfinite(row[n])]
            if not bad and not bool(torch.stack([torch.isfinite(p).all()
                                                 for p in self.params]).all()):
                bad = ["the network parameters are not finite"]   # (replicas: same on all ranks)
            if not bad and not np.isfinite(row["grad_norm"]):
                bad = [f"the gradient norm is {row['grad_norm']}"]
            if bad:
                raise Diverged(f"{bad[0]} at step {step}: the run diverged (try a smaller "
                               f"optimizer.lr or network.dtype=float64); the last checkpoint "
                               f"is kept")
            if self.average is not None:
                self.average.update_parameters(self.s.net)
            self.evaluate(row)
            row["wall_time"] = self._elapsed()
            row["train_time"] = row["wall_time"] - self._validation_time
            for callback in callbacks:
                callback.on_step_end(self, row)
            history.append(row)
            if log is not None:
                log(row)
            stopped = stop_requested()
            if checkpoint is not None and self.checkpoints.due(
                    step, final=step == cfg.train.steps, stopped=stopped):
                checkpoint()
            if stopped:
                break
        rel_l2 = rel_h1 = None
        estimate: dict[str, float] = {}
        if self.best[1] and not stopped:
            rel_l2, rel_h1 = self.best_errors()
            if cfg.estimate.enabled:
                with self.best_iterate():
                    estimate = self.corrected()
        return Result(self.current_step, self.best[1], self.best[0], rel_l2, rel_h1,
                      self._elapsed(), history, self.k11_best, stopped, estimate)

    def evaluate(self, row: dict[str, Any]) -> None:
        """Step ``row["step"]``'s evaluation: the validation loss of the iterate; of the run's
        answer (:meth:`answer`) the error estimate (every ``estimate.every`` steps), the best
        iterate, the rel. L2/H1 errors of the answer and of the best iterate so far (every
        ``train.eval_every`` steps; their time is validation time)."""
        cfg, step, net = self.cfg, row["step"], self.answer()
        if self.s.validation is not None:
            row["validation"] = self.validation_loss()
        last = step == cfg.train.steps
        if cfg.estimate.enabled and (step % cfg.estimate.every == 0 or last):
            est = self.estimate(net)            # part of training: it picks the best iterate
            row["estimated_rel_l2"], row["estimated_rel_h1"] = est.rel_l2, est.rel_h1
        self.keep_if_best(row, net)
        if step % cfg.train.eval_every == 0 or last:
            t0 = time.perf_counter()
            row["rel_l2"], row["rel_h1"] = self.errors(net)
            if self.best[1] == step:
                self._best_evaluated = (step, row["rel_l2"], row["rel_h1"])
            if self.best[1]:        # what the run returns if it stops here
                row["best_rel_l2"], row["best_rel_h1"] = self.best_errors()
            self._validation_time += time.perf_counter() - t0

    def answer(self) -> torch.nn.Module:
        """The run's answer: the average of the iterates (``train.ema_decay`` > 0, its own
        module: the iterate's parameters, which the optimizer's cached linearisation holds, are
        not touched) or the iterate itself."""
        return self.s.net if self.average is None else self.average.module

    def validation_terms(self) -> dict[str, float]:
        """The terms of the current iterate at the fixed validation points
        (``sampling.validation``), summed over ranks."""
        terms = self.s.validation.terms(self.s.forward)  # type: ignore[union-attr]
        return dict(zip(terms, parallel.allreduce_sum(np.array([float(t.detach())
                                                                for t in terms.values()]))))

    def validation_loss(self) -> float:
        """The fine-problem loss (3.24), residual + tau_1 boundary term, of the current iterate
        at the fixed validation points."""
        at = self.validation_terms()
        return at["residual"] + at.get("boundary", 0.0)

    def keep_if_best(self, row: dict[str, Any], net: torch.nn.Module | None = None) -> None:
        """Keep ``net`` (default: the current network; its step's ``row``) if its criterion is
        the smallest so far. ``train.best_by = "estimate"``: the estimated rel. L2 error (at
        the steps that have one, every ``estimate.every``). ``"loss"``: the fine-problem loss
        (3.24), residual + tau_1 boundary term without the coupling (with a soft boundary condition
        the residual alone does not see a constant offset of v), at the validation points
        when there are (``row["validation"]``, no in-sample bias), else at the step's own
        (after a Gauss-Newton step, the points it was just fitted to)."""
        if self.cfg.train.best_by == "estimate":
            value = row.get("estimated_rel_l2")
        else:
            value = row.get("validation", row["residual"] + row.get("boundary", 0.0))
        if value is not None and value < self.best[0]:
            net = self.s.net if net is None else net
            self.best = (value, row["step"], copy.deepcopy(net.state_dict()))
            self.k11_best = row.get("k11")

    def best_iterate(self) -> "_Swap":
        """Context: the network holds the best iterate inside (:meth:`keep_if_best`; after
        training: mid-run, :meth:`network_holding` leaves the iterate alone)."""
        return _Swap(self.s.net, self.best[2])

    def network_holding(self, state: dict[str, Any]) -> torch.nn.Module:
        """A module of its own (one, reused: valid until the next call) holding the
        parameters ``state`` (a state_dict): the iterate's parameters, which the optimizer's
        cached linearisation holds, are not touched, so it is usable mid-run."""
        if self._scratch is None:
            self._scratch = copy.deepcopy(self.s.net)
        self._scratch.load_state_dict(state)
        return self._scratch

    def best_errors(self) -> tuple[float, float]:
        """Rel. L2 and H1 errors of the best iterate (computed once per best iterate)."""
        if self._best_evaluated is None or self._best_evaluated[0] != self.best[1]:
            self._best_evaluated = (self.best[1], *self.errors(self.network_holding(self.best[2])))
        return self._best_evaluated[1:]


class _Swap:
    def __init__(self, net: torch.nn.Module, state: dict[str, Any]) -> None:
        self.net, self.state = net, state

    def __enter__(self) -> None:
        self.saved = copy.deepcopy(self.net.state_dict())
        self.net.load_state_dict(self.state)

    def __exit__(self, *exc: object) -> None:
        self.net.load_state_dict(self.saved)
