"""L-BFGS with a strong Wolfe line search, safe under data parallelism.

Known failure (pytorch issue 30439): ranks that disagree on the number of closure evaluations
hang in the next all-reduce. Here every closure returns the GLOBAL loss, reduced over ranks
and then broadcast from rank 0 so every rank sees the same bits, and the gradients are
all-reduced by DDP, so the line search takes the same decisions on every rank.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from mpi4py import MPI

from parallel_ms.config import OptimizerConfig
from parallel_ms.training.optimizers.base import Optimizer, StepRecord, Target, flat_grad

#: evaluations the strong Wolfe line search may take per L-BFGS iteration (torch's own max_ls)
LINE_SEARCH_EVALS = 25


def global_loss(local: torch.Tensor, comm: MPI.Comm = MPI.COMM_WORLD) -> torch.Tensor:
    """Sum over ranks of a scalar, bitwise identical on every rank; +inf where it is not
    finite, so that the strong Wolfe line search rejects the trial point and bisects (a NaN
    passes its comparisons as acceptable)."""
    value = comm.bcast(comm.allreduce(float(local.detach()), op=MPI.SUM), root=0)
    return torch.tensor(value if math.isfinite(value) else math.inf, dtype=local.dtype)


def make_lbfgs(params: list[torch.nn.Parameter], cfg: OptimizerConfig) -> torch.optim.LBFGS:
    """torch's L-BFGS with a strong Wolfe line search of up to LINE_SEARCH_EVALS evaluations in
    each of its ``lbfgs_max_iter`` iterations per step. (torch's default budget, 1.25
    evaluations per iteration, leaves the search of ``max_iter = 1`` none: for a larger loss at
    the step of length ``lr`` it then returns a zero step, for a NaN there the step itself.)"""
    return torch.optim.LBFGS(params, lr=cfg.lbfgs_lr, max_iter=cfg.lbfgs_max_iter,
                             max_eval=cfg.lbfgs_max_iter * (LINE_SEARCH_EVALS + 1),
                             history_size=cfg.lbfgs_history, line_search_fn="strong_wolfe",
                             tolerance_grad=1e-12, tolerance_change=1e-15)


class LBFGS(Optimizer):
    """One call of torch's L-BFGS (``lbfgs_max_iter`` iterations) per step, on the global
    loss of a consistent objective."""

    name = "lbfgs"

    def __init__(self, target: Target, cfg: OptimizerConfig) -> None:
        self.target, self.lr = target, cfg.lbfgs_lr
        self.optimizer = make_lbfgs(target.params, cfg)

    @property
    def consistent(self) -> bool:
        return True

    def step(self, step: int) -> StepRecord:
        seen: dict[str, Any] = {}
        size = self.target.comm.size

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            loss, seen["terms"] = self.target.local_loss(True)
            loss.backward()
            return global_loss(loss / size, self.target.comm)

        self.optimizer.step(closure)
        grad_norm = float(torch.linalg.vector_norm(flat_grad(self.target.params)))
        return StepRecord(self.name, seen["terms"], grad_norm, self.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"lbfgs": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["lbfgs"])
