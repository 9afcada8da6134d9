"""Distributed curvature solvers (issue 32): the ScaLAPACK solver's step is the damped
Gauss-Newton step (J^T J + lambda I)^-1 (-g + lambda mu s') from the explicit Jacobian, its
optimizer keeps the replicas bitwise equal and follows the Cholesky solver, and a matrix that
is not positive definite is reported on every rank. Run on 1, 2 and 3 ranks."""
import numpy as np
import pytest
import torch
from mpi4py import MPI

from parallel_ms import config, parallel
from parallel_ms.training.optimizers.gauss_newton import GaussNewton
from parallel_ms.training.optimizers.registry import curvature_solver
from parallel_ms.training.residuals import Residuals
from parallel_ms.training.setup import build
from test_gauss_newton import CASES, SMALL, _flat, _setup

WORLD = MPI.COMM_WORLD


def _solver(name, lin, comm=WORLD):
    """A curvature solver ``name`` bound to ``lin``."""
    cfg = config.load(None, SMALL + [f"optimizer.gn_solver={name}"]).optimizer
    solver = curvature_solver(name)(cfg, lambda x: parallel.allreduce_replicated(x, comm),
                                    500, comm)
    solver.bind(lin)
    return solver


def _explicit(lin):
    """G = J^T J and g = J^T r from this rank's explicit Jacobian, summed over ranks."""
    jac = lin.jacobian(500)
    r = torch.cat(list(lin.rows.values()))
    return parallel.allreduce_sum(jac.T @ jac), parallel.allreduce_sum(jac.T @ r)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.mpi
@pytest.mark.parametrize("case", ["pinn-2d", "hybrid-isotropic"])
def test_scalapack_step_is_the_damped_gauss_newton_step(case):
    s = _setup(CASES[case])
    lin = Residuals(s.objective, s.forward).linearize()
    gram, g = _explicit(lin)
    solver = _solver("scalapack", lin)
    assert float((solver.gradient() - g).norm()) <= 1e-12 * float(g.norm())
    n = len(g)
    previous = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eye = torch.eye(n, dtype=torch.float64)
    damping = 1e-3 * float(gram.diagonal().mean())
    for momentum in (None, (0.9, previous)):
        rhs = -g if momentum is None else -g + damping * 0.9 * previous
        sol = solver.solve(damping, momentum, None)
        assert sol is not None
        expected = torch.linalg.solve(gram + damping * eye, rhs)
        assert _rel(sol.x, expected) < 1e-10
        assert _rel(sol.jtj_x, gram @ sol.x) < 1e-12
        for v in (sol.x, sol.jtj_x):                   # replicated: the same bits everywhere
            assert np.array_equal(v.numpy(), WORLD.bcast(v.numpy(), root=0))
    solver.bind(lin)                                   # again: the last step's G is freed
    assert solver.solve(damping, None, None) is not None


@pytest.mark.mpi
def test_scalapack_optimizer_keeps_replicas_equal_and_follows_cholesky():
    flats = {}
    for name in ("scalapack", "cholesky"):
        cfg = config.load(None, SMALL + CASES["pinn-2d"] + [
            "optimizer.kind=gauss-newton", f"optimizer.gn_solver={name}"])
        s = build(cfg, parallel.init("cpu"))
        gn = GaussNewton(Residuals(s.objective, s.forward), cfg.optimizer,
                         curvature_solver(name), WORLD)
        infos = [gn.step().stats for _ in range(3)]
        flats[name] = _flat(s)
        if name == "scalapack":
            infos += [gn.step().stats for _ in range(2)]
            flat = _flat(s).numpy()
            assert np.array_equal(flat, WORLD.bcast(flat, root=0))          # bitwise, 5 steps
            decisions = [(i["damping"], i["accepted"], i["trials"]) for i in infos]
            assert decisions == WORLD.bcast(decisions, root=0)
            assert infos[-1]["loss"] < infos[0]["loss"]
    assert _rel(flats["scalapack"], flats["cholesky"]) < 1e-8


@pytest.mark.mpi
def test_scalapack_reports_a_matrix_that_is_not_positive_definite_on_every_rank():
    """Far more parameters than rows and no damping: J^T J is singular; ScaLAPACK's Cholesky
    fails on every rank together (no hang), and a damped solve of the same G still works."""
    s = _setup(CASES["pinn-2d"] + ["sampling.interior=20", "sampling.boundary=8"])
    lin = Residuals(s.objective, s.forward).linearize()
    solver = _solver("scalapack", lin)
    assert len(solver.gradient()) > 28                 # P > N: rank deficient
    outcomes = WORLD.allgather(solver.solve(0.0, None, None) is None)
    assert all(outcomes), outcomes
    assert solver.solve(1.0, None, None) is not None   # the same G, damped, factors


@pytest.mark.mpi
def test_scalapack_memory_is_distributed():
    """Per rank: G's rows and the block-cyclic copies shrink with the ranks; the local
    Jacobian does not."""
    mem = curvature_solver("scalapack").memory
    cholesky = curvature_solver("cholesky").memory
    assert mem(10_000, 0, 8, 1) == pytest.approx(3 * 8 * 10_000 ** 2)
    assert mem(10_000, 0, 8, 8) == pytest.approx(mem(10_000, 0, 8, 1) / 8)
    assert mem(10_000, 500, 8, 8) - mem(10_000, 0, 8, 8) == pytest.approx(8 * 500 * 10_000)
    assert mem(10_000, 0, 8, 8) == pytest.approx(cholesky(10_000, 0, 8, 8) / 8)


class _Rows:
    """A linearization stand-in: a given Jacobian and residual for this rank's rows."""

    def __init__(self, jac, r):
        self.jac, self.rows = jac, {"residual": r}

    def jacobian(self, chunk):
        return self.jac.clone()


@pytest.mark.mpi
def test_scalapack_with_uneven_and_empty_ranks():
    """Rows 9, 0, 4, ... per rank (a rank without rows, a layout ScaLAPACK cannot take as
    it is): the step is still the dense one."""
    params, counts = 6, [9, 0, 4]
    gen = torch.Generator().manual_seed(5)
    full = [torch.randn(counts[k % 3], params + 1, generator=gen, dtype=torch.float64)
            for k in range(WORLD.size)]
    jac, r = full[WORLD.rank][:, :params], full[WORLD.rank][:, params]
    solver = _solver("scalapack", _Rows(jac, r))
    big = torch.cat(full)
    gram, g = big[:, :params].T @ big[:, :params], big[:, :params].T @ big[:, params]
    sol = solver.solve(0.1, None, None)
    expected = torch.linalg.solve(gram + 0.1 * torch.eye(params, dtype=torch.float64), -g)
    assert _rel(solver.gradient(), g) < 1e-13 and _rel(sol.x, expected) < 1e-12


def _uneven(params, seed):
    """Every rank's rows (9, 0, 4, ... per rank) of a Jacobian with ``params`` columns and a
    residual in the last column."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn([9, 0, 4][k % 3], params + 1, generator=gen, dtype=torch.float64)
            for k in range(WORLD.size)]


@pytest.mark.mpi
def test_collectives_through_torch_distributed_match_those_through_mpi(monkeypatch):
    """The solvers' collectives by torch.distributed (a GPU's path, NCCL; here gloo on the
    CPU, named for it in collectives.BACKENDS) and by MPI on the host: the gather and the
    all-to-all are exact copies of the right rows, the sum the same bits on every rank."""
    from parallel_ms.training.optimizers import collectives
    parallel.init("cpu")
    full = _uneven(6, 7)
    jac, counts = full[WORLD.rank], [len(rows) for rows in full]
    vector = torch.randn(5, generator=torch.Generator().manual_seed(WORLD.rank),
                         dtype=torch.float64)

    def collect():
        return (collectives.replicated_sum(vector, WORLD),
                collectives.gather_rows(jac[:, 0], counts, WORLD),
                collectives.by_columns(jac, counts, WORLD))

    host = collect()
    monkeypatch.setitem(collectives.BACKENDS, "cpu", "gloo")
    device = collect()
    cols = collectives.edges(7, WORLD.size)[WORLD.rank:WORLD.rank + 2]
    for total, gathered, columns in (host, device):
        assert np.array_equal(total.numpy(), WORLD.bcast(total.numpy(), root=0))
        assert torch.equal(gathered, torch.cat(full)[:, 0])
        assert torch.equal(columns, torch.cat(full)[:, cols[0]:cols[1]])
    torch.testing.assert_close(device[0], host[0], rtol=0, atol=1e-14)   # the order may differ


@pytest.mark.mpi
@pytest.mark.parametrize("backend", ["mpi", "torch.distributed"])
def test_sample_space_step_through_either_path_with_uneven_and_empty_ranks(backend, monkeypatch):
    """The Woodbury solver's step, its collectives by MPI or by torch.distributed (gloo on
    the CPU standing in for NCCL): the dense damped Gauss-Newton step, replicated."""
    from parallel_ms.training.optimizers import collectives
    parallel.init("cpu")
    if backend == "torch.distributed":
        monkeypatch.setitem(collectives.BACKENDS, "cpu", "gloo")
    params, full = 6, _uneven(6, 5)
    cfg = config.load(None, SMALL + ["optimizer.gn_solver=woodbury"]).optimizer
    solver = curvature_solver("woodbury")(
        cfg, lambda x: collectives.replicated_sum(x, WORLD), 500, WORLD)
    solver.bind(_Rows(full[WORLD.rank][:, :params], full[WORLD.rank][:, params]))
    big = torch.cat(full)
    gram, g = big[:, :params].T @ big[:, :params], big[:, :params].T @ big[:, params]
    sol = solver.solve(0.1, None, None)
    expected = torch.linalg.solve(gram + 0.1 * torch.eye(params, dtype=torch.float64), -g)
    assert _rel(solver.gradient(), g) < 1e-13 and _rel(sol.x, expected) < 1e-12
    assert np.array_equal(sol.x.numpy(), WORLD.bcast(sol.x.numpy(), root=0))
