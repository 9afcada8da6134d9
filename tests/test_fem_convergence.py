"""A distributed Firedrake P1 solve converges at the optimal rates (L2: 2, H1: 1).

Manufactured solution u = sin(pi x) sin(pi y) with an oscillating coefficient
K = 2 + sin(2 pi x / eps) sin(2 pi y / eps); run on 1, 2 and 3 ranks.
"""
import math

import pytest
from mpi4py import MPI

fd = pytest.importorskip("firedrake")

EPS = 0.5


def solve_error(n: int) -> tuple[float, float, int]:
    mesh = fd.UnitSquareMesh(n, n, comm=MPI.COMM_WORLD)
    x, y = fd.SpatialCoordinate(mesh)
    u_exact = fd.sin(fd.pi * x) * fd.sin(fd.pi * y)
    k = 2 + fd.sin(2 * fd.pi * x / EPS) * fd.sin(2 * fd.pi * y / EPS)
    f = -fd.div(k * fd.grad(u_exact))
    V = fd.FunctionSpace(mesh, "CG", 1)
    u, v = fd.TrialFunction(V), fd.TestFunction(V)
    uh = fd.Function(V)
    bc = fd.DirichletBC(V, 0, "on_boundary")
    fd.solve(fd.inner(k * fd.grad(u), fd.grad(v)) * fd.dx == f * v * fd.dx, uh, bcs=[bc],
             solver_parameters={"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12})
    l2 = math.sqrt(fd.assemble((uh - u_exact) ** 2 * fd.dx(degree=6)))
    h1 = math.sqrt(fd.assemble(fd.inner(fd.grad(uh - u_exact), fd.grad(uh - u_exact))
                               * fd.dx(degree=6)))
    return l2, h1, mesh.cell_set.size


@pytest.mark.mpi
def test_p1_rates_with_oscillating_coefficient():
    sizes = [8, 16, 32, 64]
    errors = [solve_error(n) for n in sizes]
    owned = MPI.COMM_WORLD.allgather(errors[-1][2])
    assert sum(owned) == 2 * 64 * 64 and min(owned) > 0, owned  # really distributed
    l2_rate = math.log2(errors[-2][0] / errors[-1][0])
    h1_rate = math.log2(errors[-2][1] / errors[-1][1])
    assert abs(l2_rate - 2.0) < 0.1, (l2_rate, errors)
    assert abs(h1_rate - 1.0) < 0.1, (h1_rate, errors)
