"""The interface every optimizer of a run offers the training loop.

Like ``torch.optim.Optimizer``, an optimizer owns its state (``state_dict`` /
``load_state_dict`` for the checkpoint); unlike it, :meth:`Optimizer.step` evaluates the
objective itself (through the :class:`Target` it was built on: the scalar loss for the
first-order methods, the residual rows for Gauss-Newton) and returns a :class:`StepRecord` of
what it did, which the loop logs.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch
from mpi4py import MPI

if TYPE_CHECKING:
    from parallel_ms.training.residuals import Residuals


@dataclass
class StepRecord:
    """What one step did."""
    optimizer: str                       #: the name of the optimizer that took the step
    terms: dict[str, Any]                #: this rank's loss terms (unweighted partial sums)
    grad_norm: float                     #: norm of the global gradient
    lr: float = math.nan                 #: learning rate / step length parameter, if any
    stats: dict[str, Any] = field(default_factory=dict)   #: optimizer-specific (logged)


@dataclass
class Target:
    """What an optimizer works on: the replicated parameters, this rank's weighted loss
    (``local_loss(consistent)`` -> (loss x ranks, terms), ready for DDP's gradient average;
    ``consistent``: the coarse state re-solved at this evaluation), the objective as residual
    rows (Gauss-Newton) and the communicator over which the replicas are kept equal."""
    params: list[torch.nn.Parameter]
    local_loss: Callable[[bool], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    residuals: Callable[[], "Residuals"]
    comm: MPI.Comm = field(default_factory=lambda: MPI.COMM_WORLD)


def flatten(tensors: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: list[torch.nn.Parameter]) -> tuple[torch.Tensor, ...]:
    """``vector`` cut into views shaped like the parameters ``like`` (the inverse of
    :func:`flatten`)."""
    out, offset = [], 0
    for p in like:
        out.append(vector[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    return tuple(out)


def flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])


class Optimizer(ABC):
    """One step of training per :meth:`step`, on every rank alike."""

    name: str = ""
    #: names of the optimizer-specific values of :attr:`StepRecord.stats` (metrics columns)
    stat_names: tuple[str, ...] = ()

    @property
    def consistent(self) -> bool:
        """Must the coarse state be re-solved at every evaluation (a line search compares
        losses, so they must be of one objective)? Otherwise the lazy refresh rule applies."""
        return False

    @property
    def freezes_balancing(self) -> bool:
        """Must the balancing weights stay fixed (they would change the objective between a
        step's model and its line search)?"""
        return False

    @abstractmethod
    def step(self, step: int) -> StepRecord:
        """Take training step ``step``."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...
