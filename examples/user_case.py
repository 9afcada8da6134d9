"""User-defined problems for parallel_ms, kept outside the package.

Use them by file and function name wherever a case is asked for:

    python -m parallel_ms reference --case examples/user_case.py:layered
    python -m parallel_ms reference --case examples/user_case.py:layered --eps 0.05
    mpiexec -n 2 python -m parallel_ms run --case examples/user_case.py:layered --method pinn

Write K_eps and q once, as functions of the coordinate components ``x`` and a math namespace
``m`` (``m.sin, m.cos, m.exp, m.tanh, m.sqrt, m.pi``): parallel_ms evaluates the same formula
with torch (network residual, exact gradient of K by autodiff) and with UFL (Firedrake). A case
of your own has no measured training: ``run`` trains it as measured for cases of its dimension
(parallel_ms/case_defaults.py, GENERIC).
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


def fading(eps: float = 0.05) -> Problem:
    """1D: oscillations that fade along the bar, with a heat source at its middle."""
    return Problem(
        name="fading", dim=1, eps=eps,
        conductivity=lambda x, m: 1.5 + 0.5 * m.cos(2 * m.pi * x[0] / eps) * m.exp(-2 * x[0]),
        source=lambda x, m: 10 * m.exp(-50 * (x[0] - 0.5) ** 2),
        description="K = 3/2 + cos(2 pi x/eps) exp(-2x)/2, q = 10 exp(-50 (x-1/2)^2)",
        bounds=(1.0, 2.0),
    )
