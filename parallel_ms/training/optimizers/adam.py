"""Adam with the paper's step decay of the learning rate (paper 000 §4.4)."""
from __future__ import annotations

from typing import Any

import torch

from parallel_ms.config import OptimizerConfig
from parallel_ms.training.optimizers.base import Optimizer, StepRecord, Target, flat_grad


class Adam(Optimizer):
    """Adam, beta = (0.9, 0.999), lr x decay every decay_every steps; the gradient averaged
    over the replicas by DDP."""

    name = "adam"

    def __init__(self, target: Target, cfg: OptimizerConfig) -> None:
        self.target = target
        self.optimizer = torch.optim.Adam(target.params, lr=cfg.lr, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.decay_every,
                                                         cfg.decay)

    def step(self, step: int) -> StepRecord:
        self.optimizer.zero_grad(set_to_none=True)
        loss, terms = self.target.local_loss(False)
        loss.backward()
        grad_norm = float(torch.linalg.vector_norm(flat_grad(self.target.params)))
        self.optimizer.step()
        self.scheduler.step()
        return StepRecord(self.name, terms, grad_norm, self.scheduler.get_last_lr()[0])

    def state_dict(self) -> dict[str, Any]:
        return {"adam": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["adam"])
        self.scheduler.load_state_dict(state["scheduler"])
