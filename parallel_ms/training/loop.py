"""The training loop (plain PINN / Ms-PINN; the hybrid method adds its coupling term here).

Data parallel: each rank holds a DistributedDataParallel replica and its shard of points; the
local loss is scaled by the world size so that DDP's gradient average equals the gradient of
the global objective — the n-rank loss and gradient equal the 1-rank ones for the same
global point set.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from parallel_ms import parallel
from parallel_ms.config import Config
from parallel_ms.errors import UserError
from parallel_ms.fine.sampling import Shard, resample_adaptive
from parallel_ms.parallel import ParallelContext
from parallel_ms.reference.cache import load_or_solve
from parallel_ms.reference.metrics import relative_errors, torch_point_function
from parallel_ms.training.balancing import GradNormBalancer
from parallel_ms.training.optimizers import (PlateauSwitch, global_loss, make_adam,
                                             make_lbfgs)
from parallel_ms.training.setup import Setup, build, flat_grad


@dataclass
class Result:
    steps: int
    best_step: int
    best_residual: float
    rel_l2: float | None
    rel_h1: float | None
    wall_time: float
    history: list[dict[str, Any]] = field(default_factory=list)
    k11_best: float | None = None


class Trainer:
    def __init__(self, cfg: Config, ctx: ParallelContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        torch.set_num_threads(cfg.parallel.threads)
        self.s: Setup = build(cfg, ctx)
        self.params = list(self.s.net.parameters())
        self.ddp = DDP(self.s.forward,
                       device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        self.balancer = GradNormBalancer(self.s.objective.term_names, cfg.balancing.every, cfg.balancing.alpha,
                                         cfg.balancing.enabled)
        self.optimizer_kind = "lbfgs" if cfg.optimizer.kind == "lbfgs" else "adam"
        self.adam, self.scheduler = make_adam(self.params, cfg.optimizer)
        self.lbfgs = make_lbfgs(self.params, cfg.optimizer)
        self.switch = PlateauSwitch(cfg.optimizer.switch_window, cfg.optimizer.switch_tol) \
            if cfg.optimizer.kind == "adam-lbfgs" else None
        self._reference = None
        self.current_step = 0
        self._k_refreshed: Any = None
        self.s.objective.refresh_policy = self._refresh_due

    # ---- hybrid: lazy coarse refresh and tau_2 continuation -----------------------------
    def _refresh_due(self, k_raw: Any) -> bool:
        """Re-solve the coarse state? Always under L-BFGS and in every-step mode (consistent
        objective); lazily otherwise: every T_K steps, when K~ moved more than the tolerance
        (paper: T_K = 100, 1e-2)."""
        c = self.cfg.coupling
        due = (self._k_refreshed is None or self.optimizer_kind == "lbfgs"
               or c.refresh == "every-step"
               or (self.current_step % c.refresh_every == 0
                   and np.abs(np.asarray(k_raw) - self._k_refreshed).max() > c.refresh_tol))
        if due:
            self._k_refreshed = k_raw
        return due

    def _tau2(self, step: int) -> float:
        c, n = self.cfg.coupling, self.cfg.train.steps
        start = c.continuation * n
        if not c.continuation or step <= start:
            return c.tau2
        return c.tau2 * max(n - step, 0) / (n - start)

    # ---- one step -----------------------------------------------------------------------
    def _local_loss(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = self.s.objective.terms(self.ddp)
        return self.balancer.combine(terms) * self.ctx.size, terms

    def step(self, step: int) -> dict[str, Any]:
        self.current_step = step
        coupling = self.s.objective.coupling
        if coupling is not None:
            coupling.tau2 = self._tau2(step)
        if self.balancer.due(step):
            self.balancer.update(self.s.objective.terms(self.s.forward), self.params)
        if self.optimizer_kind == "adam":
            self.adam.zero_grad(set_to_none=True)
            loss_local, terms = self._local_loss()
            loss_local.backward()
            grad_norm = float(torch.linalg.vector_norm(flat_grad(self.params)))
            self.adam.step()
            self.scheduler.step()
            lr = self.scheduler.get_last_lr()[0]
        else:
            seen: dict[str, Any] = {}

            def closure() -> torch.Tensor:
                self.lbfgs.zero_grad(set_to_none=True)
                loss_local, terms = self._local_loss()
                loss_local.backward()
                seen["terms"] = terms
                return global_loss(loss_local / self.ctx.size)

            self.lbfgs.step(closure)
            terms = seen["terms"]
            grad_norm = float(torch.linalg.vector_norm(flat_grad(self.params)))
            lr = self.cfg.optimizer.lbfgs_lr
        values = parallel.allreduce_sum(np.array([float(t.detach()) for t in terms.values()]))
        row = {"step": step, "optimizer": self.optimizer_kind, "lr": lr, "grad_norm": grad_norm,
               **{name: float(v) for name, v in zip(terms, values)},
               **{f"w_{n}": w for n, w in self.balancer.weights.items()}}
        row["loss"] = sum(self.balancer.weights[n] * row[n] for n in terms)
        if coupling is not None:
            row.update(coupling.log_values())
        if self.switch is not None and self.optimizer_kind == "adam" and self.switch(grad_norm):
            self.optimizer_kind = "lbfgs"
            parallel.print0(f"step {step}: gradient norm plateau, switching Adam -> L-BFGS")
        return row

    # ---- evaluation ---------------------------------------------------------------------
    def reference(self) -> Any:
        if self._reference is None:
            r = self.cfg.reference
            self._reference, _ = load_or_solve(self.s.problem, r.degree, r.resolution,
                                               cache_dir=Path(r.cache_dir).expanduser())
        return self._reference

    def errors(self) -> tuple[float, float]:
        fn = torch_point_function(self.s.net, self.s.objective.dtype, self.ctx.device)
        return relative_errors(fn, self.reference())

    def resample(self, round_: int) -> None:
        c = self.cfg.sampling
        old = self.s.objective.shard
        interior = resample_adaptive(
            self.s.coarse_mesh, c.interior, c.seed, round_,
            lambda x: self.s.objective.pointwise_residual(self.s.net, x),
            c.adaptive_beta, c.adaptive_c, self.ctx.comm)
        self.s.objective.set_points(Shard(interior, old.boundary,
                                          self.ctx.comm.allreduce(len(interior)),
                                          old.n_boundary))

    # ---- the loop -----------------------------------------------------------------------
    def run(self, log: Callable[[dict[str, Any]], None] | None = None) -> Result:
        """Algorithm 3.1 (hybrid) or plain PINN training; ``log`` receives every step's row."""
        cfg = self.cfg
        t0 = time.perf_counter()
        best = (float("inf"), 0, copy.deepcopy(self.s.net.state_dict()))
        k11_best = None
        history = []
        for step in range(1, cfg.train.steps + 1):
            if cfg.sampling.adaptive_every and step % cfg.sampling.adaptive_every == 0:
                self.resample(step // cfg.sampling.adaptive_every)
            row = self.step(step)
            bad = [n for n in self.s.objective.term_names if not np.isfinite(row[n])]
            if bad:
                raise UserError(f"the loss term '{bad[0]}' is {row[bad[0]]} at step {step}: the "
                                f"run diverged (try a smaller optimizer.lr or network.dtype="
                                f"float64)", collective=True)
            if row["residual"] < best[0]:
                best = (row["residual"], step, copy.deepcopy(self.s.net.state_dict()))
                k11_best = row.get("k11")
            if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
                row["rel_l2"], row["rel_h1"] = self.errors()
            row["wall_time"] = time.perf_counter() - t0
            history.append(row)
            if log is not None:
                log(row)
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                parallel.print0(_log_line(row))
        final = copy.deepcopy(self.s.net.state_dict())
        self.s.net.load_state_dict(best[2])
        rel_l2, rel_h1 = self.errors() if cfg.train.steps else (None, None)
        self.s.net.load_state_dict(final)
        return Result(cfg.train.steps, best[1], best[0], rel_l2, rel_h1,
                      time.perf_counter() - t0, history, k11_best)


def _log_line(row: dict[str, Any]) -> str:
    parts = [f"step {row['step']:>6}", f"loss {row['loss']:.4e}", f"res {row['residual']:.3e}"]
    if "boundary" in row:
        parts.append(f"bnd {row['boundary']:.3e}")
    if "k11" in row:
        parts.append(f"R {row['R']:.3e}  K~ {row['k11']:.4f}" + (" (bound)" if row["bound_active"]
                                                                 else ""))
    parts.append(f"lr {row['lr']:.2e}")
    if "rel_l2" in row:
        parts.append(f"rel L2 {row['rel_l2']:.3e}  rel H1 {row['rel_h1']:.3e}")
    parts.append(f"{row['wall_time']:.1f} s")
    return "  ".join(parts)
