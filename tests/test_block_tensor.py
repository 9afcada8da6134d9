"""Block-tensor upscaling in the hybrid loop (Algorithm 4.1 per block, two-output network,
piecewise-constant coarse coefficient, dF/dK~ != 0, matrix bounds)."""
import dataclasses

import numpy as np
import pytest
import torch
from mpi4py import MPI

from conftest import bounds_inactive
from parallel_ms import config, parallel
from parallel_ms.coarse.block_problem import BlockCoarseProblem
from parallel_ms.coarse.mesh import unit_mesh
from parallel_ms.errors import UserError
from parallel_ms.problems import get_case
from parallel_ms.training.gradcheck import taylor_test
from parallel_ms.training.optimizers.base import flat_grad
from parallel_ms.training.setup import build

fd = pytest.importorskip("firedrake")
BLOCK = ["train.method=hybrid", "problem.case=paper-2d", "sampling.interior=3000",
         "sampling.boundary=300", "network.width=16", "network.features=8", "coarse.cells=8",
         "coupling.delta=0.3", "network.dtype=float64", "coupling.upscaling=block-tensor",
         "coupling.blocks=[2,2]", "coupling.tau2=1e5"]


def _setup(extra=(), ctx=None):
    return build(config.load(None, BLOCK + list(extra)), ctx or parallel.init("cpu"))


def _objective(s):
    return lambda: sum(s.objective.terms(s.forward).values())


def _measure(s):
    _, g, *_ = s.forward(s.objective.x_int, s.objective.x_bnd, s.objective.x_nodes)
    return s.objective.coupling.k_global(g)


@pytest.mark.mpi
def test_two_outputs_and_residual_per_temperature_drop():
    s = _setup()
    v, g, lap, v_b, v_n = s.forward(s.objective.x_int, s.objective.x_bnd, s.objective.x_nodes)
    m = len(s.objective.x_int)
    assert v.shape == (m, 2) and g.shape == (m, 2, 2) and lap.shape == (m, 2)
    assert s.objective.f.shape == (m, 2)
    x = s.objective.x_int
    torch.testing.assert_close(s.objective.f[:, 1], s.objective.problem.lifted_source(x, 1))
    # the jet derivatives equal double-backward autograd output by output
    from parallel_ms.fine.derivatives import derivatives
    va, ga, la = derivatives(s.net, x[:50], "autograd")
    torch.testing.assert_close(ga, g[:50])
    torch.testing.assert_close(la, lap[:50])


@pytest.mark.mpi
def test_block_tensor_taylor_test_bound_inactive():
    """Reduced objective with the coarse states re-solved at every theta; rate 2 needs the
    adjoint part including dF/dK~ (next test drops it)."""
    s = bounds_inactive(_setup())
    result = taylor_test(list(s.net.parameters()), _objective(s))
    assert s.objective.coupling.state.bound_active == 0
    assert result.min_rate > 1.9 and result.fd_rel_diff < 1e-5, result.rates


@pytest.mark.mpi
def test_block_tensor_taylor_test_with_partly_active_bound():
    """At the random initial network every block has a clipped eigenvalue and some an unclipped
    one: the gradient through the spectral projection (Daleckii-Krein) is that of what is
    applied."""
    s = _setup()
    result = taylor_test(list(s.net.parameters()), _objective(s))
    assert s.objective.coupling.state.bound_active > 0
    assert s.objective.coupling.upscaling.passes_gradient()
    assert result.min_rate > 1.9 and result.fd_rel_diff < 1e-5, result.rates


@pytest.mark.mpi
def test_dropping_the_block_adjoint_part_breaks_the_gradient(monkeypatch):
    s = bounds_inactive(_setup())
    monkeypatch.setattr(BlockCoarseProblem, "sensitivity",
                        lambda self, ps, ys: np.zeros((self.partition.n, 2, 2)))
    result = taylor_test(list(s.net.parameters()), _objective(s))
    assert result.min_rate < 1.5 or result.fd_rel_diff > 1e-4, result.rates


@pytest.mark.mpi
def test_block_state_solves_the_piecewise_constant_problem():
    """B(K~) y_i = F_i(K~) against an independent assembly with K~ as a UFL conditional."""
    problem = get_case("paper-2d")
    mesh = unit_mesh(2, 8)
    cp = BlockCoarseProblem(mesh, problem, (2, 2))
    k = np.array([[[2.0, 0.3], [0.3, 1.5]], [[3.0, 0.0], [0.0, 2.5]],
                  [[1.2, -0.2], [-0.2, 1.8]], [[2.2, 0.1], [0.1, 2.4]]])
    ys = cp.states(k)
    x = fd.SpatialCoordinate(mesh)
    left, low = fd.lt(x[0], 0.5), fd.lt(x[1], 0.5)
    kt = fd.conditional(left, fd.conditional(low, fd.as_matrix(k[0]), fd.as_matrix(k[1])),
                        fd.conditional(low, fd.as_matrix(k[2]), fd.as_matrix(k[3])))
    phi = fd.TestFunction(cp.V)
    for i, y in enumerate(ys):
        yf = fd.Function(cp.V)
        yf.dat.data_wo[:] = y
        e = fd.as_vector([1.0 if c == i else 0.0 for c in range(2)])
        residual = fd.assemble(fd.inner(kt * fd.grad(yf), fd.grad(phi)) * fd.dx
                               - problem.q_ufl(mesh) * phi * fd.dx
                               + fd.inner(kt * e, fd.grad(phi)) * fd.dx, bcs=[cp.bc])
        scale = np.abs(fd.assemble(problem.q_ufl(mesh) * phi * fd.dx).dat.data_ro).max()
        worst = parallel.allreduce_sum(np.array([np.abs(residual.dat.data_ro).max()]))
        assert worst[0] < 1e-10 * scale
        assert np.abs(y).max() > 1e-4 or MPI.COMM_WORLD.size > 1


@pytest.mark.mpi
def test_block_upscaling_of_the_reference_matches_algorithm_4_1():
    """The Monte-Carlo K~^j of the loop, evaluated on the FE temperature drops, equals the
    reference's Algorithm 4.1 (:func:`block_tensors`) up to the Monte-Carlo error."""
    from parallel_ms.reference.solver import block_tensors, solve_reference
    problem = get_case("paper-2d")
    ref = solve_reference(problem, resolution=80, tensor=True)
    exact = block_tensors(problem, ref.us, (2, 2)).reshape(4, 2, 2)
    s = _setup(["sampling.interior=20000"])
    pts = s.objective.shard.interior
    vom = fd.VertexOnlyMesh(ref.mesh, pts, redundant=False)
    W = fd.VectorFunctionSpace(vom, "DG", 0)
    grads = [fd.Function(W).interpolate(
        fd.Function(fd.VectorFunctionSpace(ref.mesh, "DG", 0)).interpolate(fd.grad(u)))
        for u in ref.us]
    order = fd.Function(W).interpolate(fd.SpatialCoordinate(vom)).dat.data_ro
    # VOM order may differ from the shard order: rebuild the upscaling on the VOM points
    from parallel_ms.coupling.upscaling import BlockTensorUpscaling
    k = problem.k(torch.tensor(np.array(order)))
    up = BlockTensorUpscaling(np.array(order), k, (2, 2), MPI.COMM_WORLD)
    g = torch.tensor(np.stack([np.array(gr.dat.data_ro) for gr in grads], -1))  # (M, c, i)
    mc = up.measure(g)
    assert np.abs(mc - exact).max() < 0.03 * np.abs(exact).max(), (mc, exact)


@pytest.mark.mpi
def test_matrix_bound_holds_k_tilde_when_driven_against_it():
    s = _setup()
    c, up = s.objective.coupling, s.objective.coupling.upscaling
    _measure(s)
    c.refresh(np.tile(-2.3 * np.eye(2), (4, 1, 1)))
    assert c.state.bound_active == 4
    np.testing.assert_allclose(c.state.k, up.reuss[:, None, None] * np.eye(2), rtol=1e-12)
    c.refresh(np.tile(np.array([[50.0, 40.0], [-3.0, 0.1]]), (4, 1, 1)))
    lam = np.linalg.eigvalsh(c.state.k)
    assert np.all(lam >= up.reuss[:, None] - 1e-12) and np.all(lam <= up.voigt[:, None] + 1e-12)
    np.testing.assert_allclose(c.state.k, np.swapaxes(c.state.k, 1, 2))
    assert all(np.all(np.isfinite(y)) for y in c.ys)


@pytest.mark.mpi
def test_n_rank_block_gradient_equals_one_rank():
    s = bounds_inactive(_setup())
    sum(s.objective.terms(s.forward).values()).backward()
    grad_n = parallel.allreduce_sum(flat_grad(list(s.net.parameters())))
    ctx1 = dataclasses.replace(parallel.init("cpu"), comm=MPI.COMM_SELF, rank=0, size=1)
    s1 = bounds_inactive(_setup(ctx=ctx1))
    sum(s1.objective.terms(s1.forward).values()).backward()
    grad_1 = flat_grad(list(s1.net.parameters()))
    assert s.objective.coupling.state.bound_active == 0
    assert float(torch.linalg.vector_norm(grad_n - grad_1)
                 / torch.linalg.vector_norm(grad_1)) < 1e-10


@pytest.mark.mpi
@pytest.mark.parametrize("extra,match", [
    (["coupling.blocks=[3,2]"], r"coupling.blocks = \[3, 2\] with coarse.cells = 8"),
    (["problem.case=paper-1d-eps0_01"],
     r"coupling.upscaling = 'block-tensor' \(allowed: 'isotropic' for the 1D case"),
    (["coupling.blocks=[2]"], r"coupling.blocks = \[2\] \(allowed: two integers >= 1\)"),
    (["coupling.blocks=[2,1.5]"], r"coupling.blocks = .* \(allowed: a list of integers\)"),
    (["coupling.k22=2.0"], r"coupling.k22 = 2.0 \(allowed: none with"),
])
def test_block_configuration_errors(extra, match):
    with pytest.raises(UserError, match=match):
        _setup(extra)
