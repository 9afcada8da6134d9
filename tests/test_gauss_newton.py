"""Gauss-Newton training: the objective as residual rows, products with their Jacobian
(PINN, hybrid isotropic / given K~_12, K~_22 / block tensor / GMsFEM space), the explicit
Jacobian, the resource model's count of its rows, and the parallel step (replicas bitwise
equal, n ranks = 1 rank). Run on 1, 2 and 3 ranks."""
import dataclasses

import numpy as np
import pytest
import torch
from mpi4py import MPI

from conftest import bounds_inactive
from parallel_ms import config, parallel
from parallel_ms.training.optimizers import curvature
from parallel_ms.training.optimizers.curvature import conjugate_gradients, normal_matrix
from parallel_ms.training.optimizers.gauss_newton import GaussNewton
from parallel_ms.training.optimizers.registry import curvature_solver
from parallel_ms.training.residuals import Residuals, unflatten
from parallel_ms.training.setup import build

WORLD = MPI.COMM_WORLD
SMALL = ["sampling.interior=2000", "sampling.boundary=200", "network.width=12",
         "network.features=6", "coarse.cells=8", "coupling.delta=0.3", "network.dtype=float64"]
HYBRID_2D = ["problem.case=paper-2d", "train.method=hybrid"]
CASES = {
    "pinn-2d": ["problem.case=paper-2d"],
    "pinn-1d-hard-bc": ["problem.case=paper-1d-eps1_15", "network.hard_bc=true",
                        "coarse.cells=40", "coupling.delta=0.1"],
    "pinn-1d-two-scale": ["problem.case=paper-1d-eps0_01", "network.kind=two-scale",
                          "network.harmonics=2", "coarse.cells=250", "coupling.delta=0.01"],
    "hybrid-isotropic": HYBRID_2D,
    "hybrid-isotropic-hard-bc": HYBRID_2D + ["network.hard_bc=true"],   # the default run's
    "hybrid-k12-k22": HYBRID_2D + ["coupling.k12=0.1", "coupling.k22=1.5"],
    "hybrid-block-tensor": HYBRID_2D + ["coupling.upscaling=block-tensor",
                                        "coupling.blocks=[2,2]", "coupling.tau2=1e4"],
    "hybrid-gmsfem": HYBRID_2D + ["coarse.space=gmsfem", "gmsfem.refinement=4",
                                  "gmsfem.basis=2", "coupling.tau2=1"],
    "hybrid-gmsfem-galerkin": HYBRID_2D + ["coarse.space=gmsfem", "gmsfem.refinement=4",
                                           "gmsfem.basis=2", "coupling.form=galerkin"],
    "hybrid-gmsfem-galerkin-energy": HYBRID_2D + [
        "coarse.space=gmsfem", "gmsfem.refinement=4", "gmsfem.basis=2",
        "coupling.form=galerkin", "loss.form=energy", "coupling.tau2=100"],
    "pinn-2d-weak": ["problem.case=paper-2d", "loss.tau_weak=10", "loss.weak_cells=3"],
    "pinn-2d-energy": ["problem.case=paper-2d", "loss.form=energy"],
    # importance sampling near the boundary: weighted rows, one scale per point
    "pinn-2d-layer": ["problem.case=paper-2d", "network.hard_bc=true",
                      "sampling.layer_width=0.1", "sampling.layer_density=4"],
    "pinn-2d-energy-layer": ["problem.case=paper-2d", "loss.form=energy",
                             "sampling.layer_width=0.1", "sampling.layer_density=4"],
    "pinn-1d-energy-gauss": ["problem.case=high-contrast-1d", "network.hard_bc=true",
                             "coarse.cells=40", "coupling.delta=0.1", "loss.form=energy",
                             "sampling.method=gauss"],
    "hybrid-energy": HYBRID_2D + ["loss.form=energy"],
    # the coefficient-enriched network: g's jet by torch.func inside the Jacobian's transforms
    "pinn-2d-energy-enriched": ["problem.case=high-contrast-2d", "problem.contrast=10",
                                "problem.width=0.5", "network.enrich=coefficient",
                                "loss.form=energy"],
    "hybrid-enriched": HYBRID_2D + ["network.enrich=coefficient"],
    "hybrid-block-tensor-weak": HYBRID_2D + [
        "coupling.upscaling=block-tensor", "coupling.blocks=[2,2]", "coupling.tau2=1e4",
        "loss.tau_weak=10", "loss.weak_cells=3"],
}


def _setup(extra, ctx=None):
    s = build(config.load(None, SMALL + extra), ctx or parallel.init("cpu"))
    return s if s.objective.coupling is None else bounds_inactive(s)


def _dot(a, b):
    return parallel.allreduce_sum(sum(float(a[n] @ b[n]) for n in a))


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(CASES))
def test_jacobian_products_are_adjoint_and_match_finite_differences(case):
    s = _setup(CASES[case])
    res = Residuals(s.objective, s.forward)
    lin = res.linearize()
    n = sum(p.numel() for p in res.params)
    delta = 0.01 * torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gen = torch.Generator().manual_seed(100 + WORLD.rank)
    u = {k: torch.randn(r.shape, generator=gen, dtype=torch.float64) for k, r in lin.rows.items()}
    jd = lin.jvp(delta)
    lhs, rhs = _dot(jd, u), float(parallel.allreduce_sum(lin.vjp(u)) @ delta)
    # rounding of a sum of products is relative to ||J delta|| ||u||, not to the (cancelling)
    # sum itself: a wrong adjoint is off by about <J delta, u> itself, orders above that
    scale = (_dot(jd, jd) * _dot(u, u)) ** 0.5
    assert abs(lhs - rhs) <= 1e-12 * scale, (lhs, rhs, scale)
    # the explicit Jacobian times delta is J delta
    jac = lin.jacobian(chunk=700)
    flat = torch.cat([jd[k] for k in lin.rows])
    assert float((jac @ delta - flat).norm()) <= 1e-12 * float(flat.norm())
    # Taylor: |r(theta + t delta) - r(theta) - t J delta| = O(t^2), term by term
    if s.objective.coupling is not None:
        assert not s.objective.coupling.state.bound_active
    theta0 = [p.detach().clone() for p in res.params]
    steps, remainders = (1e-1, 1e-2, 1e-3), []
    for t in steps:
        with torch.no_grad():
            for p, p0, d in zip(res.params, theta0, unflatten(delta, res.params)):
                p.copy_(p0 + t * d)
        moved = res.linearize()
        remainders.append(np.array([
            parallel.allreduce_sum(float(((moved.rows[k] - lin.rows[k] - t * jd[k]) ** 2).sum()))
            for k in lin.rows]) ** 0.5)
    rates = np.log10(remainders[0] / remainders[1]), np.log10(remainders[1] / remainders[2])
    assert np.all(np.concatenate(rates) > 1.9), dict(zip(lin.rows, zip(*rates)))


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(CASES))
def test_the_resource_model_counts_the_residual_rows(case):
    """``resources.curvature_rows`` (what ``gn_solver = auto`` and the memory guard size the
    curvature solvers by) against the rows of the Jacobian the run builds: the sampling's
    counts are rounded per coarse cell and the hybrid's near-boundary nodes are counted with
    the coarse nodes, so the model may be a little above, never below by more than rounding."""
    from parallel_ms import resources
    s = _setup(CASES[case])
    rows = Residuals(s.objective, s.forward).linearize().rows
    built = parallel.allreduce_sum(sum(r.numel() for r in rows.values()))
    model = resources.curvature_rows(config.load(None, SMALL + CASES[case]), s.problem.dim, 1)
    assert 0.97 * model <= built <= 1.01 * model, (built, model,
                                                   {k: r.numel() for k, r in rows.items()})


@pytest.mark.mpi
def test_coupling_rows_without_the_coarse_tangent_fail_the_taylor_test(monkeypatch):
    """The check above can fail: with dy = 0 (the coarse problem frozen) the coupling rows'
    derivative is wrong and the adjoint identity alone does not notice."""
    s = _setup(CASES["hybrid-isotropic"])
    coarse = s.objective.coupling.coarse
    monkeypatch.setattr(coarse, "tangents", lambda k, dk, ys: [0 * y for y in ys])
    res = Residuals(s.objective, s.forward)
    lin = res.linearize()
    n = sum(p.numel() for p in res.params)
    delta = 0.01 * torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    jd = lin.jvp(delta)["coupling"]
    theta0 = [p.detach().clone() for p in res.params]
    remainders = []
    for t in (1e-2, 1e-3):
        with torch.no_grad():
            for p, p0, d in zip(res.params, theta0, unflatten(delta, res.params)):
                p.copy_(p0 + t * d)
        r = res.linearize().rows["coupling"] - lin.rows["coupling"] - t * jd
        remainders.append(parallel.allreduce_sum(float(r @ r)) ** 0.5)
    assert np.log10(remainders[0] / remainders[1]) < 1.5


@pytest.mark.parametrize("shape", [(40, 37), (5, 3), (100, 1)])
def test_normal_matrix_from_its_upper_block_triangle_is_jt_j(shape):
    jac = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = normal_matrix(jac)
    assert torch.equal(g, g.T)
    assert torch.allclose(g, jac.T @ jac, rtol=0, atol=1e-12 * float((jac.T @ jac).abs().max()))


def test_conjugate_gradients_solves_a_damped_spd_system():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 30, generator=gen, dtype=torch.float64)
    b = torch.randn(30, generator=gen, dtype=torch.float64)
    out = conjugate_gradients(lambda v: a.T @ (a @ v), b, 0.1, None, 1e-12, 200)
    exact = torch.linalg.solve(a.T @ a + 0.1 * torch.eye(30, dtype=torch.float64), b)
    torch.testing.assert_close(out.x, exact, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.jtj_x, a.T @ (a @ out.x), rtol=1e-8, atol=1e-9)
    warm = conjugate_gradients(lambda v: a.T @ (a @ v), b, 0.1, exact, 1e-8, 200)
    assert warm.iterations == 1                        # a converged warm start needs no more


def test_nystrom_preconditioned_cg_solves_in_fewer_iterations():
    """A Gauss-Newton-like matrix: a few large eigenvalues over a decaying tail (rows with
    column scales 10^(-k/8)). With the rank-20 Nystrom preconditioner (the sketch summed as
    the solver does) CG reaches the same solution of (A + lambda I) x = b in far fewer
    iterations; the approximation's eigenvalues are A's largest ones."""
    from parallel_ms.training.optimizers.nystrom import Nystrom
    gen = torch.Generator().manual_seed(1)
    scales = 10.0 ** (-torch.arange(60, dtype=torch.float64) / 8)
    a = torch.randn(80, 60, generator=gen, dtype=torch.float64) * scales
    b = torch.randn(60, generator=gen, dtype=torch.float64)
    gram, damping = a.T @ a, 1e-6
    exact = torch.linalg.solve(gram + damping * torch.eye(60, dtype=torch.float64), b)
    nys = Nystrom.sketch(lambda omega: gram @ omega, b, 20)
    assert nys is not None and nys.u.shape == (60, 20)
    top = torch.linalg.eigvalsh(gram).flip(0)[:5]
    torch.testing.assert_close(nys.lam[:5], top, rtol=1e-3, atol=0)
    plain = conjugate_gradients(lambda v: gram @ v, b, damping, None, 1e-10, 1000)
    pcg = conjugate_gradients(lambda v: gram @ v, b, damping, None, 1e-10, 1000,
                              nys.inverse(damping))
    for out in (plain, pcg):
        assert float((out.x - exact).norm() / exact.norm()) < 1e-6
    assert pcg.iterations < plain.iterations / 3, (pcg.iterations, plain.iterations)


#: fewer rows than parameters: where the sample-space (Woodbury) step is the one to take (with
#: more rows its N x N kernel is singular but for the damping, which amplifies rounding)
FEW = ["sampling.interior=200", "sampling.boundary=40"]


def _serial_context():
    return dataclasses.replace(parallel.init("cpu"), comm=MPI.COMM_SELF, rank=0, size=1)


def _flat(s):
    return torch.cat([p.detach().reshape(-1) for p in s.net.parameters()])


@pytest.mark.mpi
@pytest.mark.parametrize("case,solver,extra", [
    ("pinn-2d", "cholesky", []), ("hybrid-isotropic", "cholesky", []),
    ("hybrid-gmsfem", "cholesky", []), ("hybrid-gmsfem-galerkin", "cholesky", []),
    ("hybrid-isotropic", "cg", []), ("pinn-2d-weak", "cholesky", []), ("pinn-2d-weak", "cg", []),
    ("pinn-2d", "cholesky", ["optimizer.gn_momentum=0.9"]),
    ("hybrid-isotropic", "cg", ["optimizer.gn_momentum=0.9"]),
    ("pinn-2d", "cg", ["optimizer.cg_preconditioner=none"]),
    ("hybrid-isotropic", "woodbury", FEW), ("pinn-2d-weak", "woodbury", FEW),
    ("pinn-2d", "woodbury", FEW + ["optimizer.gn_momentum=0.9"]),
    ("pinn-2d-energy", "cholesky", []), ("hybrid-energy", "cholesky", [])])
def test_parallel_step_keeps_replicas_bitwise_equal_and_equals_one_rank(case, solver, extra):
    """Every rank takes the same steps (same damping, CG iterations, accept/reject): bitwise
    equal parameters after 10 steps. The n-rank step equals the 1-rank step for the same
    global points to 1e-10. (CG is held to 5 iterations here: longer Krylov solves of these
    ill-conditioned systems amplify the summation order's rounding, as a different BLAS
    thread count does on one rank; see docs/gauss-newton.md.)"""
    cfg = config.load(None, SMALL + CASES[case] + extra + [
        "optimizer.kind=gauss-newton", f"optimizer.gn_solver={solver}", "optimizer.cg_max_iter=5"])
    steps = {}
    for ctx in (parallel.init("cpu"), _serial_context()):
        s = build(cfg, ctx)
        gn = GaussNewton(Residuals(s.objective, s.forward), cfg.optimizer,
                         curvature_solver(solver), ctx.comm)
        theta0 = _flat(s)
        first = gn.step().stats
        steps[ctx.comm is WORLD] = (_flat(s) - theta0, first)
        if ctx.comm is WORLD:
            infos = [first] + [gn.step().stats for _ in range(9)]
            flat = _flat(s).numpy()
            assert np.array_equal(flat, WORLD.bcast(flat, root=0))        # bitwise, 10 steps
            decisions = [(i["damping"], i["cg_iters"], i["accepted"]) for i in infos]
            assert decisions == WORLD.bcast(decisions, root=0)
            # it trains (the energy form's loss has a positive minimum: it falls less)
            assert infos[-1]["loss"] < (0.5 if "energy" in case else 1e-2) * infos[0]["loss"]
    (dn, info_n), (d1, info_1) = steps[True], steps[False]
    assert float((dn - d1).norm() / d1.norm()) < 1e-10
    assert info_n["accepted"] == info_1["accepted"] and info_n["cg_iters"] == info_1["cg_iters"]
    assert info_n["loss"] == pytest.approx(info_1["loss"], rel=1e-8)


MU = 0.9


def _after_one_momentum_step(solver):
    """A Gauss-Newton optimizer with momentum MU after its first (accepted, momentum-free)
    step, and the explicit G = J^T J and g = J^T r at its parameters (summed over ranks)."""
    cfg = config.load(None, SMALL + CASES["pinn-2d"] + [
        "optimizer.kind=gauss-newton", f"optimizer.gn_solver={solver}",
        f"optimizer.gn_momentum={MU}", "optimizer.gn_damping=10", "optimizer.cg_max_iter=20"])
    s = build(cfg, parallel.init("cpu"))
    res = Residuals(s.objective, s.forward)
    gn = GaussNewton(res, cfg.optimizer, curvature_solver(solver))
    first = gn.step().stats
    assert first["accepted"] and gn.previous is not None and first["momentum"] == 0  # no s' yet
    lin = res.linearize()
    jac = lin.jacobian(gn.solver.chunk)
    gram = parallel.allreduce_sum(jac.T @ jac)
    g = parallel.allreduce_sum(jac.T @ torch.cat(list(lin.rows.values())))
    return s, gn, gram, g


@pytest.mark.mpi
@pytest.mark.parametrize("solver", ["cholesky", "cg", "woodbury"])
def test_momentum_step_solves_the_spring_system(solver, monkeypatch):
    """With momentum mu the step is (J^T J + lambda I)^-1 (-J^T r + lambda mu s'), s' the
    previous accepted step (docs/gauss-newton.md), from J formed here (summed over ranks);
    CG (tested on its own above) is handed that right-hand side and s' as warm start."""
    s, gn, gram, g = _after_one_momentum_step(solver)
    previous, damping, theta1 = gn.previous.clone(), gn.damping, _flat(s)
    rhs = -g + damping * MU * previous
    calls = []
    solve = curvature.conjugate_gradients
    monkeypatch.setattr(curvature, "conjugate_gradients",
                        lambda *args: calls.append(args) or solve(*args))
    info = gn.step().stats
    assert info["accepted"]
    taken = _flat(s) - theta1
    torch.testing.assert_close(gn.previous, taken, rtol=1e-10,      # (theta + s) - theta
                               atol=1e-12 * float(taken.abs().max()))
    if solver == "cg":
        b, lam, x0 = calls[0][1:4]
        assert lam == damping and torch.equal(x0, previous)
        torch.testing.assert_close(b, rhs, rtol=1e-10, atol=1e-10 * float(g.norm()))
        return
    expected = torch.linalg.solve(gram + damping * torch.eye(len(g), dtype=g.dtype), rhs)
    assert float((taken - expected).norm() / expected.norm()) < 1e-8
    assert (info["momentum"], info["trials"]) == (1, 1)   # the momentum step, at its first trial
    plain = torch.linalg.solve(gram + damping * torch.eye(len(g), dtype=g.dtype), -g)
    assert float((plain - expected).norm() / expected.norm()) > 1e-4      # momentum matters


@pytest.mark.mpi
@pytest.mark.parametrize("solver", ["cholesky", "cg", "woodbury"])
def test_rejected_momentum_step_is_solved_again_without_momentum(solver, monkeypatch):
    """A momentum step the line search rejects (Cholesky: its full step; CG: every
    backtracking trial) is solved again without momentum at the same damping, and the step's
    statistics say so: no momentum, one trial more than were rejected."""
    s, gn, gram, g = _after_one_momentum_step(solver)
    damping, theta1 = gn.damping, _flat(s)
    rejected = 1 if gn.solver.explicit else gn.cfg.line_search + 1
    trial, outcomes, solves = gn._trial, [], []
    monkeypatch.setattr(gn, "_trial", lambda *args: outcomes.append(trial(*args))
                        or (None if len(outcomes) <= rejected else outcomes[-1]))
    solve = curvature.conjugate_gradients
    monkeypatch.setattr(curvature, "conjugate_gradients",
                        lambda *args: solves.append(args) or solve(*args))
    info = gn.step().stats
    assert info["accepted"] and (info["momentum"], info["trials"]) == (0, rejected + 1)
    taken = _flat(s) - theta1
    if solver == "cg":
        assert len(solves) == 2 and solves[1][2] == damping
        torch.testing.assert_close(solves[1][1], -g, rtol=1e-10, atol=1e-10 * float(g.norm()))
        return
    plain = torch.linalg.solve(gram + damping * torch.eye(len(g), dtype=g.dtype), -g)
    assert float((taken - plain).norm() / plain.norm()) < 1e-8


@pytest.mark.mpi
def test_cg_retry_without_momentum_keeps_the_nystrom_sketch(monkeypatch):
    """A momentum step that every backtracking trial rejects is solved again without
    momentum at the same parameters (a fresh linearization, the same J): the Nystrom
    preconditioner is sketched once in the step, not again for the retry."""
    s, gn, _, _ = _after_one_momentum_step("cg")
    assert gn.cfg.cg_preconditioner == "nystrom"
    sketches, sketch = [], curvature.Nystrom.sketch
    monkeypatch.setattr(curvature.Nystrom, "sketch", classmethod(
        lambda cls, *args: sketches.append(1) or sketch(*args)))
    rejected = gn.cfg.line_search + 1
    trial, outcomes = gn._trial, []
    monkeypatch.setattr(gn, "_trial", lambda *args: outcomes.append(trial(*args))
                        or (None if len(outcomes) <= rejected else outcomes[-1]))
    info = gn.step().stats
    assert info["accepted"] and info["momentum"] == 0
    assert len(sketches) == 1
