"""The hybrid method on the GMsFEM coarse space (``coarse.space = "gmsfem"``): the coarse state
is the compression of the multiscale solution u_ms at the run's own points, the same on any
rank count, independent of the network (no K~, no adjoint part). Run on 1, 2 and 3 ranks; the
Jacobian products and the parallel Gauss-Newton step of this variant are in
test_gauss_newton.py (case ``hybrid-gmsfem``)."""
import dataclasses

import numpy as np
import pytest
from mpi4py import MPI

from parallel_ms import config, parallel
from parallel_ms.coarse.mesh import vertex_coordinates
from parallel_ms.errors import UserError
from parallel_ms.training.gradcheck import taylor_test
from parallel_ms.training.setup import build

GMSFEM = ["problem.case=high-contrast-2d", "train.method=hybrid", "coarse.space=gmsfem",
          "gmsfem.refinement=4", "gmsfem.basis=2", "sampling.interior=2000",
          "sampling.boundary=200", "network.width=12", "network.features=6", "coarse.cells=8",
          "coupling.delta=0.3", "network.dtype=float64", "coupling.tau2=1e4"]


def _serial_context():
    return dataclasses.replace(parallel.init("cpu"), comm=MPI.COMM_SELF, rank=0, size=1)


@pytest.mark.mpi
def test_state_is_the_compressed_multiscale_solution_on_any_rank_count():
    cfg = config.load(None, GMSFEM)
    s = build(cfg, parallel.init("cpu"))
    c = s.objective.coupling
    state = c.coarse
    # point evaluation across the partition: u_ms at its own owned fine vertices is its dofs
    fine = state.u_ms
    x = vertex_coordinates(fine.function_space().mesh())
    dofs = fine.dat.data_ro[:len(x)]
    assert np.abs(state.values_at(x) - dofs).max() <= 1e-12 * np.abs(dofs).max()
    # the state is Q u_ms with u_ms from an independent one-rank GMsFEM solve
    serial = build(cfg, _serial_context()).objective.coupling.coarse
    points = s.objective.shard.interior
    expected = c.compression.apply(serial.values_at(points),
                                   serial.values_at(c.compression.node_coords))
    (y,) = state.states(0.0)
    assert np.abs(y - expected).max() <= 1e-10 * MPI.COMM_WORLD.allreduce(np.abs(expected).max(), MPI.MAX)
    assert MPI.COMM_WORLD.allreduce(np.abs(y).max(), MPI.MAX) > 0
    # no K~: nothing measured, nothing logged about it, the state is fixed
    assert c.k_global(s.forward(*[getattr(s.objective, n) for n in
                                  ("x_int", "x_bnd", "x_nodes")])[1]) == 0.0
    assert set(c.log_values()) == {"R", "tau2"}


@pytest.mark.mpi
def test_reduced_gradient_passes_the_taylor_test():
    """J(v) + tau_2 ||Q v - Q u_ms||^2: the gradient (Q^T, no adjoint part) has rate 2."""
    s = build(config.load(None, GMSFEM + ["coupling.tau2=1e7"]), parallel.init("cpu"))
    result = taylor_test(list(s.net.parameters()),
                         lambda: sum(s.objective.terms(s.forward).values()))
    assert result.min_rate > 1.9 and result.fd_rel_diff < 1e-5, result.rates


@pytest.mark.parametrize("extra,allowed", [
    (["problem.case=paper-1d-eps1_15"], "'p1' for the 1D case"),
    (["coupling.upscaling=block-tensor"], "'p1' with coupling.upscaling = 'block-tensor'"),
    (["coupling.k22=2.0"], "'p1' with coupling.upscaling"),
    (["coarse.space=q2"], "allowed: p1, gmsfem")])
def test_bad_coarse_space_is_one_line(extra, allowed):
    with pytest.raises(UserError, match="coarse.space") as err:
        config.load(None, ["coarse.space=gmsfem", *extra])
    assert allowed in str(err.value) and "\n" not in str(err.value)
