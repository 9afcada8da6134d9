"""GMsFEM on the distributed coarse mesh (parallel_ms/multiscale/) and the high-contrast
non-periodic cases: the neighbourhoods and the partition of unity, the local spectral problems,
the coarse matrix, P1 as the one-function space, convergence, the channel case's errors, the
same results on 1, 2 and 3 ranks, and the ``gmsfem`` command."""
import json
import math

import numpy as np
import pytest
from mpi4py import MPI

from parallel_ms.config import GmsfemConfig
from parallel_ms.errors import UserError
from parallel_ms.problems import Problem, get_case
from parallel_ms.problems.cases import random_discs

fd = pytest.importorskip("firedrake")

from parallel_ms.coarse.problem import CoarseProblem  # noqa: E402
from parallel_ms.multiscale.nested import nested_meshes  # noqa: E402
from parallel_ms.multiscale.neighbourhoods import Neighbourhoods  # noqa: E402
from parallel_ms.multiscale.solver import GmsfemSolver  # noqa: E402
from parallel_ms.multiscale.spectral import LocalProblems, smallest_pairs  # noqa: E402
from parallel_ms.multiscale.study import gmsfem_study  # noqa: E402
from parallel_ms.reference.metrics import fe_relative_errors  # noqa: E402
from parallel_ms.reference.solver import solve_reference, solve_temperature_drops  # noqa: E402

PETSc = fd.PETSc
WORLD = MPI.COMM_WORLD


def _laplace(source):
    """K = 1, so that the one-function GMsFEM space is coarse P1 exactly."""
    return Problem(name="laplace", dim=2, eps=1.0, conductivity=lambda x, m: 1.0,
                   source=source, description="K = 1", bounds=(1.0, 1.0))


# ---- cases ---------------------------------------------------------------------------------
def test_random_inclusions_come_from_the_seed_do_not_overlap_and_stay_in_bounds():
    import torch
    a, b = random_discs(2, 0.1, 3, 0.005), random_discs(2, 0.1, 4, 0.005)
    assert a == random_discs(2, 0.1, 3, 0.005) and a != b and len(a) > 20
    centres, radii = np.array([c for c, _ in a]), np.array([r for _, r in a])
    gap = np.linalg.norm(centres[:, None] - centres[None], axis=-1) - radii[:, None] - radii
    assert gap[~np.eye(len(a), dtype=bool)].min() >= 0.5 * 0.05
    problem = get_case("random-inclusions-2d", seed=3, contrast=1e6)
    k = problem.k(torch.rand(20000, 2, dtype=torch.float64, generator=torch.Generator()
                             .manual_seed(0))).numpy()
    assert 1.0 <= k.min() and k.max() <= 1e6 and k.max() > 0.99e6
    assert problem.params["seed"] == 3
    with pytest.raises(UserError, match=r"seed = 1.5 \(allowed: an integer >= 0\)"):
        get_case("random-inclusions-2d", seed=1.5)
    with pytest.raises(UserError, match="contrast = 0.5"):
        get_case("channels-2d", contrast=0.5)


@pytest.mark.mpi
@pytest.mark.parametrize("case", ["channels-2d", "random-inclusions-2d"])
def test_new_cases_have_a_fine_reference(case):
    ref = solve_reference(get_case(case, contrast=1e2), resolution=40, solver="mumps")
    assert np.isfinite(ref.k11) and 1.0 < ref.k11 < 1e2


# ---- neighbourhoods and local problems -----------------------------------------------------
@pytest.mark.mpi
def test_neighbourhoods_hold_the_closed_hexagons_and_the_hat_functions():
    """Every interior coarse vertex has one neighbourhood on one rank: the 3r^2 + 3r + 1 fine
    nodes of its six coarse cells, chi_i = 1 at the vertex, sum of chi_i over the nodes = r^2
    (= int chi_i / h^2: vertex quadrature is exact for P1)."""
    cells, r = 5, 4
    hoods = Neighbourhoods(nested_meshes(cells, r))
    assert WORLD.allreduce(len(hoods.dofs)) == (cells - 1) ** 2
    assert sorted(np.concatenate(WORLD.allgather(hoods.vertices)).tolist()) == \
        sorted(set(np.concatenate(WORLD.allgather(hoods.vertices)).tolist()))
    for dofs, chi in zip(hoods.dofs, hoods.chi):
        assert len(dofs) == 3 * r * r + 3 * r + 1 and np.all(np.diff(dofs) > 0)
        assert chi.max() == pytest.approx(1.0, abs=1e-13) and chi.min() > -1e-14
        assert chi.sum() == pytest.approx(r * r, rel=1e-12)
    weight = hoods.grad_sum.dat.data_ro                       # sum_j |grad chi_j|^2 = 4 / H^2
    np.testing.assert_allclose(weight, 4 * cells ** 2, rtol=1e-10)


@pytest.mark.mpi
def test_local_spectral_problems_start_at_zero_with_the_constants():
    problem = get_case("channels-2d")
    meshes = nested_meshes(5, 8)
    local = LocalProblems(problem, meshes, Neighbourhoods(meshes))
    for a, s in zip(local.stiffness, local.mass):
        lam, phi = smallest_pairs(a, s, 4, "sparse")
        lam_dense, phi_dense = smallest_pairs(a, s, 4, "dense")
        assert abs(lam[0]) < 1e-10 and lam[1] > 1e-6 and np.all(np.diff(lam) > 0)
        assert np.ptp(phi[:, 0]) < 1e-8 * np.abs(phi[:, 0]).max()        # constant
        np.testing.assert_allclose(lam, lam_dense, rtol=1e-9, atol=1e-11)
        q1, q2 = np.linalg.qr(phi)[0], np.linalg.qr(phi_dense)[0]         # same span
        assert 4 - np.linalg.norm(q1.T @ q2) ** 2 < 1e-10
        np.testing.assert_allclose(phi.T @ (s @ phi), np.eye(4), atol=1e-10)


def _full(mat: PETSc.Mat) -> np.ndarray:
    """A distributed matrix as a dense array on every rank (small matrices only)."""
    rows = PETSc.IS().createStride(mat.getSize()[0], comm=PETSc.COMM_SELF)
    (seq,) = mat.createSubMatrices([rows])
    indptr, cols, vals = seq.getValuesCSR()
    out = np.zeros(seq.getSize())
    out[np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), cols] = vals
    return out


@pytest.mark.mpi
def test_coarse_matrix_is_symmetric_positive_definite():
    meshes = nested_meshes(5, 4)
    gmsfem = GmsfemSolver(get_case("channels-2d"), meshes, GmsfemConfig(basis=3))
    space, coarse = gmsfem.space()
    assert space.dofs == 3 * 16
    dense = _full(coarse)
    assert np.abs(dense - dense.T).max() <= 1e-12 * np.abs(dense).max()
    assert np.linalg.eigvalsh(dense).min() > 0


# ---- correctness ---------------------------------------------------------------------------
@pytest.mark.mpi
def test_one_function_per_neighbourhood_is_the_coarse_p1_solution():
    """K = 1, L = 1: V_ms = coarse P1 in H^1_0, so u_ms is the coarse P1 Galerkin solution
    (a polynomial source: both loads are integrated exactly)."""
    problem = _laplace(lambda x, m: x[0] * (1 - x[0]) + 3 * x[1])
    meshes = nested_meshes(6, 4)
    gmsfem = GmsfemSolver(problem, meshes, GmsfemConfig(basis=1))
    u_ms = gmsfem.solve(*gmsfem.space())
    yc, yf = fd.Function(meshes.Vc), fd.Function(meshes.Vf)
    yc.dat.data_wo[:] = CoarseProblem(meshes.coarse, problem).state(1.0)
    fd.prolong(yc, yf)
    assert fd.errornorm(yf, u_ms) <= 1e-12 * fd.norm(yf)


@pytest.mark.mpi
def test_one_function_per_neighbourhood_converges_like_p1():
    """K = 1, u = sin(pi x) sin(pi y): rel. L2 error ~ H^2 and H1 error ~ H against the fine
    solution (4 fine cells per coarse cell) as the coarse mesh is refined."""
    problem = _laplace(lambda x, m: 2 * m.pi ** 2 * m.sin(m.pi * x[0]) * m.sin(m.pi * x[1]))
    errors = []
    for cells in (4, 8, 16):
        meshes = nested_meshes(cells, 4)
        gmsfem = GmsfemSolver(problem, meshes, GmsfemConfig(basis=1))
        u = solve_temperature_drops(problem, meshes.Vf, 1, "mumps")[0]
        errors.append(fe_relative_errors(gmsfem.solve(*gmsfem.space()), u, 1.0)[:2])
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert rates[:, 0].min() > 1.8 and rates[:, 1].min() > 0.9, (errors, rates)


@pytest.mark.mpi
def test_channel_case_error_falls_with_the_basis_and_beats_p1_upscaling():
    """Contrast 1e4: the energy error falls strictly with L (nested spaces: Galerkin), and with
    L = 4 the rel. L2 error is >= 5x below that of P1 with K~ per coarse square."""
    study = gmsfem_study(get_case("channels-2d"), 10, (1, 2, 4, 8), GmsfemConfig(refinement=8))
    energy = [row.rel_energy for row in study.rows]
    assert np.all(np.diff(energy) < 0), energy
    assert study.rows[2].rel_l2 * 5 <= study.p1_upscaled_rel_l2, study
    assert [row.dofs for row in study.rows] == [81, 162, 324, 648]


def test_a_threshold_chooses_the_functions_per_neighbourhood():
    meshes = nested_meshes(5, 4)
    local = LocalProblems(get_case("channels-2d"), meshes, Neighbourhoods(meshes))
    full = local.eigenpairs(6)
    chosen = local.eigenpairs(6, threshold=0.5)
    for (lam, _), (kept, phi) in zip(full, chosen):
        assert len(kept) == max(1, int(np.sum(lam < 0.5))) and phi.shape[1] == len(kept)
    assert len({len(k) for k, _ in chosen}) > 1          # the counts differ between them


@pytest.mark.mpi(min_size=2)
def test_results_are_those_of_one_rank():
    """Each rank also computes the whole study alone (COMM_SELF): the errors agree to 1e-10."""
    problem = get_case("channels-2d")
    settings = GmsfemConfig(refinement=8)
    parallel_study = gmsfem_study(problem, 6, (1, 3), settings, comm=WORLD)
    serial_study = gmsfem_study(problem, 6, (1, 3), settings, comm=MPI.COMM_SELF)
    for got, want in zip(parallel_study.rows, serial_study.rows):
        assert got.dofs == want.dofs
        for key in ("rel_l2", "rel_h1", "rel_energy"):
            assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-10)
    for key in ("p1_upscaled_rel_l2", "p1_scalar_rel_l2"):
        assert getattr(parallel_study, key) == pytest.approx(getattr(serial_study, key),
                                                             rel=1e-10)


# ---- the command ---------------------------------------------------------------------------
GMSFEM_ARGS = ["gmsfem", "--case", "channels-2d", "--cells", "4", "--refinement", "4",
               "--basis", "1,2"]


def test_command_writes_the_table_json_and_plot(tmp_path, capsys):
    from parallel_ms.__main__ import build_parser
    from parallel_ms.commands import gmsfem
    args = build_parser().parse_args(GMSFEM_ARGS + ["--json", str(tmp_path / "g.json"),
                                                    "--plot", str(tmp_path / "g.png")])
    assert gmsfem.main(args) == 0
    out = json.loads((tmp_path / "g.json").read_text())
    assert [row["basis"] for row in out["rows"]] == [1, 2]
    assert set(out["rows"][0]) >= {"basis", "rel_l2", "rel_h1", "dofs", "offline_s",
                                   "online_s"}
    assert math.isfinite(out["p1_upscaled_rel_l2"]) and (tmp_path / "g.png").stat().st_size
    assert "GMsFEM L = 2" in capsys.readouterr().out


@pytest.mark.slow
def test_command_on_two_ranks_prints_the_serial_numbers(mpiexec, tmp_path):
    """The command under mpiexec -n 2 (25-30 s: two interpreter starts per rank)."""
    runs = {}
    for n in (1, 2):
        out = mpiexec(n, ["-m", "parallel_ms", *GMSFEM_ARGS, "--json", str(tmp_path / f"{n}.json")])
        assert out.returncode == 0, out.stderr
        runs[n] = json.loads((tmp_path / f"{n}.json").read_text())
    assert runs[2]["ranks"] == 2
    for one, two in zip(runs[1]["rows"], runs[2]["rows"]):
        assert two["rel_l2"] == pytest.approx(one["rel_l2"], rel=1e-10)


@pytest.mark.parametrize("argv,message", [
    (["--case", "paper-1d-eps1_15"], "needs a 2D case"),
    (["--case", "channels-2d", "--refinement", "12"], "refinement = 12"),
    (["--case", "channels-2d", "--cells", "1"], "coarse cells = 1"),
    (["--case", "channels-2d", "--param", "depth=2"], "has no parameter 'depth'"),
])
def test_command_refuses_bad_input_in_one_line(argv, message):
    from parallel_ms.__main__ import build_parser
    from parallel_ms.commands.gmsfem import preflight
    with pytest.raises(UserError, match=message) as err:
        preflight(build_parser().parse_args(["gmsfem", *argv]))
    assert err.value.collective and "\n" not in str(err.value)
