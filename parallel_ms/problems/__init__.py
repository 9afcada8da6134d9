"""Problem definitions: K_eps, q and eps, usable from torch and from UFL."""
from parallel_ms.problems.cases import CASES, get_case
from parallel_ms.problems.problem import Problem

__all__ = ["CASES", "Problem", "get_case"]
