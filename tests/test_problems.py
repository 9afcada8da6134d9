"""Problem definitions: the torch and UFL sides of every case agree; user cases; errors."""
import numpy as np
import pytest
import sympy
import torch

from parallel_ms.errors import UserError
from parallel_ms.problems import CASES, Problem, get_case
from parallel_ms.problems.math import sympy_math
from conftest import ROOT

fd = pytest.importorskip("firedrake")
ROOT_EXAMPLE = f"{ROOT / 'examples' / 'user_case.py'}:layered"


def _points(dim: int, n: int = 200) -> np.ndarray:
    return np.random.default_rng(7).random((n, dim))


def _ufl_at_points(problem: Problem, pts: np.ndarray):
    """Evaluate the UFL side at arbitrary points: a vertex-only mesh, same-rank points."""
    from mpi4py import MPI
    parent = fd.UnitIntervalMesh(4, comm=MPI.COMM_SELF) if problem.dim == 1 else \
        fd.UnitSquareMesh(4, 4, comm=MPI.COMM_SELF)
    vom = fd.VertexOnlyMesh(parent, pts.reshape(-1, problem.dim), redundant=False)
    P0 = fd.FunctionSpace(vom, "DG", 0)
    k = fd.Function(P0).interpolate(problem.k_ufl(vom))
    q = fd.Function(P0).interpolate(problem.q_ufl(vom) + 0 * fd.SpatialCoordinate(vom)[0])
    xs = fd.Function(fd.VectorFunctionSpace(vom, "DG", 0)).interpolate(
        fd.SpatialCoordinate(vom)).dat.data_ro.reshape(-1, problem.dim).copy()
    return xs, k.dat.data_ro.copy(), q.dat.data_ro.copy()


@pytest.mark.parametrize("name", list(CASES) + [ROOT_EXAMPLE,
                                                 ROOT_EXAMPLE.replace(":layered", ":fading")])
def test_torch_and_ufl_definitions_agree(name):
    problem = get_case(name)
    xs, k_ufl, q_ufl = _ufl_at_points(problem, _points(problem.dim))
    x = torch.from_numpy(xs)
    np.testing.assert_allclose(problem.k(x).numpy(), k_ufl, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(problem.q(x).numpy(), q_ufl, rtol=1e-12, atol=1e-12)
    lo, hi = problem.bounds
    assert lo - 1e-12 <= k_ufl.min() and k_ufl.max() <= hi + 1e-12


@pytest.mark.parametrize("name", list(CASES))
def test_torch_gradient_of_k_is_exact(name):
    """grad K by autodiff equals the symbolic derivative of the same formula."""
    problem = get_case(name)
    syms = sympy.symbols(f"x1:{problem.dim + 1}")
    k_sym = problem.conductivity(list(syms), sympy_math())
    grad_fns = [sympy.lambdify(syms, sympy.diff(k_sym, s), "numpy") for s in syms]
    pts = _points(problem.dim)
    expected = np.stack([np.broadcast_to(g(*pts.T), len(pts)) for g in grad_fns], axis=1)
    got = problem.grad_k(torch.from_numpy(pts)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9 * np.abs(expected).max())
    f = problem.lifted_source(torch.from_numpy(pts)).numpy()
    np.testing.assert_allclose(f, problem.q(torch.from_numpy(pts)).numpy() + expected[:, 0],
                               rtol=1e-10, atol=1e-9 * np.abs(expected).max())


def test_paper_cases_match_the_paper():
    p = get_case("paper-1d-eps1_15")
    assert p.dim == 1 and p.eps == pytest.approx(1 / 15)
    x = torch.tensor([[0.3]], dtype=torch.float64)
    assert p.k(x).item() == pytest.approx(2 + np.sin(2 * np.pi * 0.3 * 15))
    assert p.q(x).item() == pytest.approx(-3 * (2 * 0.3 - 1))
    p2 = get_case("paper-2d")
    x = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    assert p2.k(x).item() == pytest.approx(3 + np.sin(np.pi * 3) + np.sin(2 * np.pi * 7))
    assert p2.q(x).item() == pytest.approx(10 * np.exp(-100 * (0.04 + 0.04)))


def test_eps_is_a_parameter_and_errors_are_one_line():
    assert get_case("high-contrast-2d", eps=0.05, contrast=1e4).bounds == (1.0, 1e4)
    assert get_case(ROOT_EXAMPLE, eps=0.05).eps == 0.05
    with pytest.raises(UserError, match="case 'nope' is unknown"):
        get_case("nope")
    with pytest.raises(UserError, match="eps = -1"):
        get_case("paper-2d", eps=-1)
    with pytest.raises(UserError, match=r"^case 'paper-2d' has no parameter 'contrast' \(its "
                       r"parameters: eps\)$"):
        get_case("paper-2d", contrast=3)
    with pytest.raises(UserError, match=r"case 'high-contrast-1d': contrast = 0.5 \(allowed"):
        get_case("high-contrast-1d", contrast=0.5)
    with pytest.raises(UserError, match="does not exist"):
        get_case("missing.py:f")
    with pytest.raises(UserError, match="no function 'nope'"):
        get_case(ROOT_EXAMPLE.replace(":layered", ":nope"))


def test_the_case_parameters_are_settings_of_a_run():
    """problem.contrast / width / seed reach the case a run builds (and its reference's cache
    key, through Problem.params); a parameter the case lacks is a one-line error naming it."""
    from parallel_ms import config
    from parallel_ms.reference.cache import cache_key
    cfg = config.load(None, ["problem.case=random-inclusions-2d", "problem.seed=3",
                             "problem.contrast=100", "problem.width=0.2"])
    problem = cfg.problem.build()
    assert problem.params == {"contrast": 100.0, "width": 0.2, "seed": 3}
    assert problem.bounds == (1.0, 100.0)
    default = get_case("random-inclusions-2d")
    assert cache_key(problem, 2, 64, False) != cache_key(default, 2, 64, False)
    with pytest.raises(UserError, match=r"^problem.seed: case 'paper-2d' has no parameter "
                       r"'seed' \(its parameters: eps\)$") as err:
        config.load(None, ["problem.seed=3"])
    assert err.value.collective
    with pytest.raises(UserError, match=r"^problem.width: case 'channels-2d': width = -1.0 "
                       r"\(allowed: a finite number > 0\)$"):
        config.load(None, ["problem.case=channels-2d", "problem.width=-1"])
    with pytest.raises(UserError, match=r"^problem.contrast: case 'channels-2d': contrast = 0.5 "
                       r"\(allowed: a finite number >= 1\)$"):
        config.load(None, ["problem.case=channels-2d", "problem.contrast=0.5"])


@pytest.mark.parametrize("name", ["paper-2d", "locally-periodic-2d", "high-contrast-1d",
                                  "quasi-periodic-1d", "channels-2d"])
def test_lifted_source_flux_has_the_lifted_source_as_divergence(name):
    """div sigma_f = -f_eps (the energy form of the residual rests on it), by autodiff of the
    Gauss–Legendre antiderivative at random points."""
    problem = get_case(name)
    x = torch.rand(300, problem.dim, dtype=torch.float64,
                   generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    sigma = problem.lifted_source_flux(x)
    div = sum(torch.autograd.grad(sigma[:, i].sum(), x, retain_graph=True)[0][:, i]
              for i in range(problem.dim))
    f = problem.lifted_source(x.detach())
    assert float((div + f).abs().max()) <= 1e-12 * float(f.abs().max())
