"""Optimizers: Adam with the paper's step decay, DDP-safe L-BFGS, and the Adam -> L-BFGS switch.

L-BFGS under data parallelism (known failure: pytorch issue 30439, ranks that disagree on the
number of closure evaluations hang in the next all-reduce): every closure returns the GLOBAL
loss, reduced over ranks and then broadcast from rank 0 so every rank sees the same bits, and
the gradients are all-reduced by DDP, so the strong-Wolfe line search takes the same decisions
on every rank.
"""
from __future__ import annotations

import math

import torch
from mpi4py import MPI

from parallel_ms.config import OptimizerConfig


#: evaluations the strong Wolfe line search may take per L-BFGS iteration (torch's own max_ls)
LINE_SEARCH_EVALS = 25


def global_loss(local: torch.Tensor) -> torch.Tensor:
    """Sum over ranks of a scalar, bitwise identical on every rank; +inf where it is not
    finite, so that the strong Wolfe line search rejects the trial point and bisects (a NaN
    passes its comparisons as acceptable)."""
    comm = MPI.COMM_WORLD
    value = comm.bcast(comm.allreduce(float(local.detach()), op=MPI.SUM), root=0)
    return torch.tensor(value if math.isfinite(value) else math.inf, dtype=local.dtype)


def make_adam(params: list[torch.nn.Parameter], cfg: OptimizerConfig
              ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam, beta = (0.9, 0.999), lr x decay every decay_every steps (paper §4.4)."""
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.999))
    return opt, torch.optim.lr_scheduler.StepLR(opt, cfg.decay_every, cfg.decay)


def make_lbfgs(params: list[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.LBFGS:
    """L-BFGS with a strong Wolfe line search of up to LINE_SEARCH_EVALS evaluations in each
    of its ``lbfgs_max_iter`` iterations per step. (torch's default budget, 1.25 evaluations
    per iteration, leaves the search of ``max_iter = 1`` none: for a larger loss at the step
    of length ``lr`` it then returns a zero step, for a NaN there the step itself.)"""
    return torch.optim.LBFGS(params, lr=cfg.lbfgs_lr, max_iter=cfg.lbfgs_max_iter,
                             max_eval=cfg.lbfgs_max_iter * (LINE_SEARCH_EVALS + 1),
                             history_size=cfg.lbfgs_history, line_search_fn="strong_wolfe",
                             tolerance_grad=1e-12, tolerance_change=1e-15)


class PlateauSwitch:
    """Adam -> L-BFGS when the gradient norm plateaus (paper 003 §7.4): the mean global
    gradient norm of the last ``window`` steps fell by less than ``tol`` (relative) against
    the window before. Fed identical norms on every rank, it switches on every rank at once."""

    def __init__(self, window: int, tol: float) -> None:
        self.window, self.tol = window, tol
        self.norms: list[float] = []

    def __call__(self, grad_norm: float) -> bool:
        self.norms.append(grad_norm)
        if len(self.norms) < 2 * self.window or len(self.norms) % self.window:
            return False
        prev = sum(self.norms[-2 * self.window:-self.window]) / self.window
        last = sum(self.norms[-self.window:]) / self.window
        return last > (1 - self.tol) * prev
