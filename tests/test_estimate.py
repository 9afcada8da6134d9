"""The error estimate (parallel_ms/reference/estimate.py) on a manufactured solution.

u = sin(pi x) sin(pi y) solves the lifted problem (4.8) with K = 2 + sin(2 pi x/eps) and the
source q written out below; a "network" v = u + a p with a smooth p = sin(2 pi x) sin(pi y)
has the error e = -a p, known exactly. The projected error e_h converges to e at P2's L2 rate
(3) in the estimate mesh's cells per period, the estimate equals the true rel. L2 error, it is
the same on n ranks as on one (each rank also solves alone on COMM_SELF), and the corrected
answer v + e_h is accurate where v is not.
"""
import math

import numpy as np
import pytest
from mpi4py import MPI

fd = pytest.importorskip("firedrake")

from parallel_ms.problems.problem import Problem  # noqa: E402
from parallel_ms.reference.estimate import ErrorEstimator  # noqa: E402
from parallel_ms.reference.metrics import relative_errors  # noqa: E402
from parallel_ms.reference.solver import solve_reference  # noqa: E402

EPS = 0.25
A = 0.05


def _source(x, m):
    """q = -div(K grad(u + x_1)) = -K_x (u_x + 1) + 2 pi^2 K u."""
    k = 2 + m.sin(2 * m.pi * x[0] / EPS)
    k_x = 2 * m.pi / EPS * m.cos(2 * m.pi * x[0] / EPS)
    u = m.sin(m.pi * x[0]) * m.sin(m.pi * x[1])
    u_x = m.pi * m.cos(m.pi * x[0]) * m.sin(m.pi * x[1])
    return -k_x * (u_x + 1) + 2 * m.pi ** 2 * k * u


PROBLEM = Problem(name="manufactured", dim=2, eps=EPS,
                  conductivity=lambda x, m: 2 + m.sin(2 * m.pi * x[0] / EPS),
                  source=_source, description="manufactured", bounds=(1.0, 3.0))


def exact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, c = np.sin(np.pi * x), np.cos(np.pi * x)
    return s[:, 0] * s[:, 1], np.pi * np.stack([c[:, 0] * s[:, 1], s[:, 0] * c[:, 1]], 1)


def perturbed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """v = u + A p, p = sin(2 pi x) sin(pi y)."""
    u, g = exact(x)
    p = np.sin(2 * np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1])
    dp = np.stack([2 * np.pi * np.cos(2 * np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1]),
                   np.pi * np.sin(2 * np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1])], 1)
    return u + A * p, g + A * dp


def projection_error(cells_per_period: int, comm=MPI.COMM_WORLD) -> tuple[float, float]:
    """(||e_h - e|| / ||e||, estimated rel. L2) for v = u + A p."""
    est = ErrorEstimator(PROBLEM, cells_per_period, comm=comm)
    result = est.estimate(perturbed)
    x, y = fd.SpatialCoordinate(est.V.mesh())
    e = -A * fd.sin(2 * fd.pi * x) * fd.sin(fd.pi * y)
    dx = fd.dx(degree=8)
    gap = math.sqrt(fd.assemble((result.correction - e) ** 2 * dx) / fd.assemble(e ** 2 * dx))
    return gap, result.rel_l2


@pytest.mark.mpi
def test_projected_error_converges_at_the_p2_rate():
    gaps = [projection_error(c)[0] for c in (2, 4, 8)]      # 8, 16, 32 cells
    rates = [math.log2(a / b) for a, b in zip(gaps, gaps[1:])]
    assert gaps[-1] < 1e-3 and min(rates) > 2.7, (gaps, rates)


@pytest.mark.mpi
def test_estimate_is_the_true_error_and_rank_independent():
    # true rel. L2 = A ||p|| / ||u|| = A (||sin 2 pi x|| / ||sin pi x||) = A
    _, estimate = projection_error(4)
    assert estimate == pytest.approx(A, rel=1e-3)
    _, alone = projection_error(4, MPI.COMM_SELF)
    assert estimate == pytest.approx(alone, rel=1e-9, abs=0)
    exact_estimate = ErrorEstimator(PROBLEM, 4).estimate(exact)
    assert exact_estimate.rel_l2 < 1e-4 and exact_estimate.rel_h1 < 1e-3


@pytest.mark.mpi
def test_corrected_answer_is_accurate_where_the_network_is_not():
    reference = solve_reference(PROBLEM, degree=2, resolution=64)
    network_l2, network_h1 = relative_errors(perturbed, reference)
    correction = ErrorEstimator(PROBLEM, 4).estimate(perturbed).correction
    l2, h1 = relative_errors(perturbed, reference, correction=correction)
    assert network_l2 == pytest.approx(A, rel=1e-3)
    assert l2 < 1e-2 * network_l2 and h1 < 1e-1 * network_h1, (l2, h1, network_l2, network_h1)
