"""Rules of the training loop that depend on the step, as small objects handed to the
objective when it is built (the Trainer only tells them the step):

- :class:`Tau2Continuation`: the coupling weight tau_2 of (3.25) over the steps,
- :class:`CoarseRefresh`: when the coarse state y(K~) is re-solved (Algorithm 3.1, step 3).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from parallel_ms.config import CouplingConfig


class Tau2Continuation:
    """tau_2 held at its configured value, then (``coupling.continuation`` = c > 0) decaying
    linearly from step c N to 0 at the last step N."""

    def __init__(self, tau2: float, continuation: float, steps: int) -> None:
        self.tau2, self.continuation, self.steps = tau2, continuation, steps

    @classmethod
    def from_config(cls, c: CouplingConfig, steps: int) -> "Tau2Continuation":
        return cls(c.tau2, c.continuation, steps)

    def __call__(self, step: int) -> float:
        start = self.continuation * self.steps
        if not self.continuation or step <= start:
            return self.tau2
        return self.tau2 * max(self.steps - step, 0) / (self.steps - start)


class CoarseRefresh:
    """Re-solve the coarse state at this evaluation of the objective? Always for a consistent
    objective (L-BFGS's line search, Gauss-Newton) and in ``every-step`` mode; lazily
    otherwise (the paper's rule for Adam): every T_K steps, when the Monte-Carlo K~ moved more
    than the tolerance since the last solve (paper: T_K = 100, 1e-2)."""

    def __init__(self, mode: str = "every-step", every: int = 1, tol: float = 0.0) -> None:
        self.mode, self.every, self.tol = mode, every, tol
        self.step = 0
        self._k_refreshed: Any = None

    @classmethod
    def from_config(cls, c: CouplingConfig) -> "CoarseRefresh":
        return cls(c.refresh, c.refresh_every, c.refresh_tol)

    def due(self, k_raw: Any, consistent: bool) -> bool:
        due = (self._k_refreshed is None or consistent or self.mode == "every-step"
               or (self.step % self.every == 0
                   and np.abs(np.asarray(k_raw) - self._k_refreshed).max() > self.tol))
        if due:
            self._k_refreshed = k_raw
        return due

    def state_dict(self) -> dict[str, Any]:
        return {"k_refreshed": self._k_refreshed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._k_refreshed = state["k_refreshed"]
