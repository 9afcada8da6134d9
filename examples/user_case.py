"""A user-defined problem for parallel_ms, kept outside the package.

Use it by file and function name wherever a case is asked for:

    python -m parallel_ms reference --case examples/user_case.py:layered
    python -m parallel_ms reference --case examples/user_case.py:layered --eps 0.05

Write K_eps and q once, as functions of the coordinate components ``x`` and a math namespace
``m`` (``m.sin, m.cos, m.exp, m.tanh, m.sqrt, m.pi``): parallel_ms evaluates the same formula
with torch (network residual, exact gradient of K by autodiff) and with UFL (Firedrake).
"""
from parallel_ms.problems import Problem


def layered(eps: float = 0.1) -> Problem:
    """Laminated medium: layers across x_1 with a slow drift in x_2."""
    return Problem(
        name="layered", dim=2, eps=eps,
        conductivity=lambda x, m: 2 + m.sin(2 * m.pi * x[0] / eps) * (0.5 + 0.5 * x[1]),
        source=lambda x, m: 1.0,
        description="K = 2 + (1+x2)/2 sin(2 pi x1/eps), q = 1",
        bounds=(1.0, 3.0),
    )
