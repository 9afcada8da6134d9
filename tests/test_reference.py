"""Fine-scale reference solver, upscaling, cell problems and error metrics (1, 2, 3 ranks)."""
import math

import numpy as np
import pytest
import sympy
from mpi4py import MPI

from parallel_ms.problems import Problem, get_case
from parallel_ms.reference.cell import effective_tensor, homogenized_solution
from parallel_ms.reference.metrics import norms, relative_errors
from parallel_ms.coarse.mesh import unit_mesh
from parallel_ms.reference.solver import (block_tensors, solve_reference, solve_temperature_drops,
                                          upscaled_tensor)

fd = pytest.importorskip("firedrake")

# ---- manufactured solution with an oscillating coefficient --------------------------------
X1, X2 = sympy.symbols("x1 x2")
EPS_MMS = 0.5
K_MMS = 2 + sympy.sin(2 * sympy.pi * X1 / EPS_MMS) * sympy.sin(2 * sympy.pi * X2 / EPS_MMS)
U_MMS = sympy.sin(sympy.pi * X1) * sympy.sin(sympy.pi * X2) * (1 + X1)
W_MMS = U_MMS + X1
Q_MMS = -(sympy.diff(K_MMS * sympy.diff(W_MMS, X1), X1)
          + sympy.diff(K_MMS * sympy.diff(W_MMS, X2), X2))


def _formula(expr):
    """A Problem formula f(x, m) from a sympy expression in x1, x2."""
    text = str(expr)
    return lambda x, m: eval(text, {"sin": m.sin, "cos": m.cos, "pi": m.pi,  # noqa: S307
                                    "x1": x[0], "x2": x[1]})


MMS = Problem(name="mms", dim=2, eps=EPS_MMS, conductivity=_formula(K_MMS),
              source=_formula(Q_MMS), description="manufactured", bounds=(1.0, 3.0))


def _mms_errors(degree: int, n: int) -> tuple[float, float]:
    mesh = unit_mesh(2, n)
    (uh,) = solve_temperature_drops(MMS, fd.FunctionSpace(mesh, "CG", degree))
    u_exact = _formula(U_MMS)(fd.SpatialCoordinate(mesh), fd)
    dxh = fd.dx(degree=2 * degree + 4)
    l2 = math.sqrt(fd.assemble((uh - u_exact) ** 2 * dxh))
    h1 = math.sqrt(fd.assemble(fd.inner(fd.grad(uh - u_exact), fd.grad(uh - u_exact)) * dxh))
    return l2, h1


@pytest.mark.mpi
@pytest.mark.parametrize("degree,sizes", [(1, [16, 32, 64]), (2, [8, 16, 32])])
def test_manufactured_solution_converges_at_optimal_rates(degree, sizes):
    errors = [_mms_errors(degree, n) for n in sizes]
    l2_rate = math.log2(errors[-2][0] / errors[-1][0])
    h1_rate = math.log2(errors[-2][1] / errors[-1][1])
    assert abs(l2_rate - (degree + 1)) < 0.15, (l2_rate, errors)
    assert abs(h1_rate - degree) < 0.15, (h1_rate, errors)


# ---- paper values ---------------------------------------------------------------------------
@pytest.mark.mpi
@pytest.mark.parametrize("case,cells,paper", [("paper-1d-eps1_15", 2000, 1.733),
                                              ("paper-1d-eps0_01", 5000, 1.732)])
def test_1d_upscaled_coefficient_matches_paper(case, cells, paper):
    """K~[u_h^eps] (4.10) on the paper's reference meshes (h = 5e-4 and 2e-4)."""
    ref = solve_reference(get_case(case), resolution=cells)
    assert abs(ref.k11 - paper) < 1e-3, ref.k11


@pytest.mark.mpi
def test_1d_cell_problem_gives_sqrt3():
    kstar = effective_tensor(get_case("paper-1d-eps1_15"))
    assert abs(kstar[0, 0] - math.sqrt(3)) < 1e-8, kstar


def test_2d_cell_problem_is_diagonal_and_between_bounds():
    """paper-2d: K = 3 + sin(pi y1) + sin(2 pi y2) is separable in the sense that K* is
    diagonal, and Reuss <= K*_ii <= Voigt (harmonic <= K* <= arithmetic mean = 3)."""
    kstar = effective_tensor(get_case("paper-2d"))
    assert abs(kstar[0, 1]) < 1e-6 and abs(kstar[1, 0]) < 1e-6
    y1, y2 = np.meshgrid(np.linspace(0, 2, 2001)[:-1], np.linspace(0, 1, 1001)[:-1])
    harmonic = 1 / np.mean(1 / (3 + np.sin(np.pi * y1) + np.sin(2 * np.pi * y2)))
    assert harmonic < kstar[0, 0] < 3 and harmonic < kstar[1, 1] < 3


@pytest.mark.mpi
def test_homogenized_solution_is_the_small_eps_limit():
    """u_eps -> u_0 in L2 as eps -> 0 (error O(eps)): closer for eps = 0.01 than for 1/15."""
    def distance(case: str) -> float:
        problem = get_case(case)
        ref = solve_reference(problem, resolution=3000)
        u0 = homogenized_solution(problem, effective_tensor(problem), ref.mesh)
        return math.sqrt(fd.assemble((ref.u - u0) ** 2 * fd.dx) / fd.assemble(u0 ** 2 * fd.dx))
    coarse, fine = distance("paper-1d-eps1_15"), distance("paper-1d-eps0_01")
    assert fine < 0.1 and 4 < coarse / fine < 10, (coarse, fine)  # eps ratio: 6.7


# ---- upscaling (Algorithm 4.1) --------------------------------------------------------------
@pytest.mark.mpi
def test_one_block_algorithm_4_1_equals_formula_4_10():
    problem = get_case("paper-2d")
    ref = solve_reference(problem, resolution=60, tensor=True)
    whole = upscaled_tensor(problem, ref.us)
    one_block = block_tensors(problem, ref.us, (1, 1))[0, 0]
    np.testing.assert_allclose(one_block, whole, rtol=1e-8, atol=1e-10)
    assert whole[0, 0] == pytest.approx(ref.k11, rel=1e-12)
    blocks = block_tensors(problem, ref.us, (2, 3))
    assert blocks.shape == (2, 3, 2, 2)
    assert np.all(blocks[..., 0, 0] > 1) and np.all(blocks[..., 1, 1] > 1)


# ---- error metrics --------------------------------------------------------------------------
def _reference_at_quadrature_points(ref, degree):
    """A point function returning the reference itself at the quadrature points."""
    Q = fd.FunctionSpace(ref.mesh, "Quadrature", degree, quad_scheme="default")
    QV = fd.VectorFunctionSpace(ref.mesh, "Quadrature", degree, quad_scheme="default")
    values = fd.Function(Q).interpolate(ref.u).dat.data_ro.copy()
    grads = fd.Function(QV).interpolate(fd.grad(ref.u)).dat.data_ro.copy()

    def fn(x, scale=1.0, add=None):
        assert len(x) == len(values)
        v, g = scale * values, scale * grads.reshape(len(x), -1)
        if add is not None:
            dv, dg = add(x)
            v, g = v + dv, g + dg
        return v, g
    return fn


@pytest.mark.mpi
def test_metric_of_reference_against_itself_and_perturbed_copies():
    ref = solve_reference(get_case("paper-2d"), resolution=40)
    qdeg = 2 * ref.degree              # the default of relative_errors
    fn = _reference_at_quadrature_points(ref, qdeg)
    assert max(relative_errors(fn, ref)) < 1e-13  # zero up to rounding
    l2, h1 = relative_errors(lambda x: fn(x, scale=1.1), ref)
    assert l2 == pytest.approx(0.1, rel=1e-10) and h1 == pytest.approx(0.1, rel=1e-10)
    # additive bump c s with s = sin(pi x) sin(pi y): ||s||^2 = 1/4, ||grad s||^2 = pi^2/2
    c = 1e-3

    def bump(x):
        s = np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1])
        g = np.pi * np.stack([np.cos(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1]),
                              np.sin(np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1])], axis=1)
        return c * s, c * g
    l2, h1 = relative_errors(lambda x: fn(x, add=bump), ref)
    dxq = fd.dx(degree=qdeg)
    norm_u = math.sqrt(fd.assemble(ref.u ** 2 * dxq))
    norm_gu = math.sqrt(fd.assemble(fd.inner(fd.grad(ref.u), fd.grad(ref.u)) * dxq))
    assert l2 == pytest.approx(c * 0.5 / norm_u, rel=1e-6)
    assert h1 == pytest.approx(c * math.pi / math.sqrt(2) / norm_gu, rel=1e-6)


@pytest.mark.mpi
def test_metric_is_the_same_on_one_and_all_ranks():
    """Errors of an analytic function against the reference: COMM_WORLD vs COMM_SELF."""
    problem = get_case("paper-2d")

    def fn(x):
        v = 0.01 * np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1]) * x[:, 0]
        g = np.stack([0.01 * np.pi * np.cos(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1]) * x[:, 0]
                      + 0.01 * np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1]),
                      0.01 * np.pi * np.sin(np.pi * x[:, 0]) * np.cos(np.pi * x[:, 1]) * x[:, 0]],
                     axis=1)
        return v, g
    parallel_errors = relative_errors(fn, solve_reference(problem, resolution=40))
    serial_errors = relative_errors(fn, solve_reference(problem, resolution=40,
                                                        comm=MPI.COMM_SELF))
    np.testing.assert_allclose(parallel_errors, serial_errors, rtol=1e-10)
    assert 0 < parallel_errors[0] < 10


@pytest.mark.parametrize("eps", [1.0, 0.1])
def test_norms_of_an_oscillation_against_their_closed_forms(eps):
    """u = sin(2 pi x1/eps) sin(pi x2), K = 2: ||u||_L2 = 1/2, |u|_H1 = pi sqrt(4/eps^2 + 1)/2,
    ||u||_a = sqrt(2) |u|_H1; the ratio L2 / H1 tends to eps / (2 pi) as eps -> 0 (P2 on a
    mesh resolving eps: to 1e-4)."""
    mesh = unit_mesh(2, int(16 / eps))
    x = fd.SpatialCoordinate(mesh)
    u = fd.Function(fd.FunctionSpace(mesh, "CG", 2)).interpolate(
        fd.sin(2 * fd.pi * x[0] / eps) * fd.sin(fd.pi * x[1]))
    l2, h1, energy = norms(u, fd.Constant(2.0))
    exact_h1 = math.pi * math.sqrt(4 / eps ** 2 + 1) / 2
    assert abs(l2 - 0.5) < 1e-4 and abs(h1 / exact_h1 - 1) < 1e-3
    assert abs(energy / (math.sqrt(2) * h1) - 1) < 1e-12
