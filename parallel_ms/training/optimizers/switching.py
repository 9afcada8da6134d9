"""One optimizer, then another: the Adam warm-up before Gauss-Newton and the Adam -> L-BFGS
switch at a gradient-norm plateau, as one composite :class:`Switching` with a rule."""
from __future__ import annotations

from typing import Any, Callable

from parallel_ms import parallel
from parallel_ms.training.optimizers.base import Optimizer, StepRecord


class WarmUp:
    """Switch before step ``steps + 1``."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def before(self, step: int) -> bool:
        return step > self.steps

    def after(self, record: StepRecord) -> bool:
        return False

    def message(self, step: int, first: str, second: str) -> str:
        return f"step {step}: {first} warm-up done, switching to {second}"

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Plateau:
    """Switch after the gradient norm plateaus (paper 003 §7.4): the mean global gradient norm
    of the last ``window`` steps fell by less than ``tol`` (relative) against the window
    before. Fed identical norms on every rank, it switches on every rank at once."""

    def __init__(self, window: int, tol: float) -> None:
        self.window, self.tol = window, tol
        self.norms: list[float] = []

    def before(self, step: int) -> bool:
        return False

    def after(self, record: StepRecord) -> bool:
        self.norms.append(record.grad_norm)
        if len(self.norms) < 2 * self.window or len(self.norms) % self.window:
            return False
        prev = sum(self.norms[-2 * self.window:-self.window]) / self.window
        last = sum(self.norms[-self.window:]) / self.window
        return last > (1 - self.tol) * prev

    def message(self, step: int, first: str, second: str) -> str:
        return f"step {step}: gradient norm plateau, switching {first} -> {second}"

    def state_dict(self) -> dict[str, Any]:
        return {"norms": list(self.norms)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.norms = list(state["norms"])


Rule = WarmUp | Plateau


class Switching(Optimizer):
    """``first`` until ``rule`` says switch, then ``second()`` (built at the switch)."""

    def __init__(self, first: Optimizer, second: Callable[[], Optimizer], second_name: str,
                 stat_names: tuple[str, ...], rule: Rule) -> None:
        self.first, self._second, self.second_name = first, second, second_name
        self.stat_names = tuple(dict.fromkeys(first.stat_names + stat_names))
        self.rule = rule
        self.second: Optimizer | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.active.name

    @property
    def active(self) -> Optimizer:
        return self.second if self.second is not None else self.first

    @property
    def consistent(self) -> bool:
        return self.active.consistent

    @property
    def freezes_balancing(self) -> bool:
        return self.active.freezes_balancing

    def _switch(self, step: int) -> None:
        self.second = self._second()
        parallel.print0(self.rule.message(step, self.first.name, self.second.name))

    def step(self, step: int) -> StepRecord:
        if self.second is None and self.rule.before(step):
            self._switch(step)
        record = self.active.step(step)
        if self.second is None and self.rule.after(record):
            self._switch(step)
        return record

    def state_dict(self) -> dict[str, Any]:
        return {"first": self.first.state_dict(), "rule": self.rule.state_dict(),
                "second": None if self.second is None else self.second.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first.load_state_dict(state["first"])
        self.rule.load_state_dict(state["rule"])
        self.second = None
        if state["second"] is not None:
            self.second = self._second()
            self.second.load_state_dict(state["second"])
