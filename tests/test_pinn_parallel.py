"""Data parallelism of the PINN engine: sharding, n-rank = 1-rank losses and gradients,
DDP-safe L-BFGS, Taylor test, adaptive resampling (run on 1, 2 and 3 ranks)."""
import dataclasses

import numpy as np
import pytest
import torch
from mpi4py import MPI

from parallel_ms import config, parallel
from parallel_ms.coarse.mesh import owned_cell_vertices, unit_mesh
from parallel_ms.fine.sampling import BoundaryLayer, resample_adaptive, sample
from parallel_ms.training.gradcheck import taylor_test
from parallel_ms.training.optimizers.base import flat_grad
from parallel_ms.training.setup import build

WORLD = MPI.COMM_WORLD
SMALL = ["sampling.interior=1200", "sampling.boundary=240", "network.width=24",
         "network.features=8", "coarse.cells=8", "network.dtype=float64",
         "train.eval_every=1000", "train.log_every=1000"]
WEAK = ["loss.tau_weak=10", "loss.weak_cells=3"]          #: the weak residual term on


def _serial_context():
    ctx = parallel.init("cpu")
    return dataclasses.replace(ctx, comm=MPI.COMM_SELF, rank=0, size=1)


def _all_points(points: np.ndarray, comm=WORLD) -> np.ndarray:
    gathered = np.concatenate(comm.allgather(points))
    return gathered[np.lexsort(gathered.T[::-1])]


@pytest.mark.mpi
@pytest.mark.parametrize("dim,method", [(1, "uniform"), (2, "uniform"), (2, "sobol"),
                                        (1, "gauss"), (2, "gauss")])
def test_every_point_on_exactly_one_rank_and_rank_independent(dim, method):
    mesh = unit_mesh(dim, 7 if dim == 2 else 40)
    shard = sample(mesh, 2000, 300, method, 5, WORLD)
    serial = sample(unit_mesh(dim, 7 if dim == 2 else 40, MPI.COMM_SELF), 2000, 300, method, 5,
                    MPI.COMM_SELF)
    for mine, ref, n in ((shard.interior, serial.interior, shard.n_interior),
                         (shard.boundary, serial.boundary, shard.n_boundary)):
        everything = _all_points(mine)
        assert len(everything) == n == len(ref)
        np.testing.assert_allclose(everything, _all_points(ref, MPI.COMM_SELF), atol=1e-14)
        assert len(np.unique(everything.round(14), axis=0)) == n  # no point twice
    if method != "gauss":       # the Gauss rule rounds to m^d sub-cells of every cell
        assert abs(shard.n_interior - 2000) < 60
    if dim == 2:
        assert np.all(np.any((serial.boundary < 1e-14) | (serial.boundary > 1 - 1e-14), axis=1))


@pytest.mark.mpi
@pytest.mark.parametrize("dim", [1, 2])
def test_gauss_points_are_an_equal_weight_quadrature_rule_of_the_domain(dim):
    """The sharded ``gauss`` points with weights 1/n integrate polynomials of the rule's degree
    over the unit interval/square exactly (3 in 1D, 2 in 2D), on any number of ranks."""
    shard = sample(unit_mesh(dim, 7 if dim == 2 else 40), 3000, 0, "gauss", 0, WORLD)
    x = shard.interior
    if dim == 1:
        values, exact = x[:, 0] ** 3 - 2 * x[:, 0] ** 2, 1 / 4 - 2 / 3
    else:
        values, exact = x[:, 0] ** 2 + 3 * x[:, 0] * x[:, 1] - x[:, 1] ** 2, 3 / 4
    assert WORLD.allreduce(float(values.sum())) / shard.n_interior == pytest.approx(exact,
                                                                                 rel=1e-13)


@pytest.mark.mpi
def test_boundary_layer_points_are_denser_there_weighted_back_and_rank_independent():
    """sampling.layer_width / layer_density: within the layer the points are ``density`` times
    as dense, the same set on any number of ranks, and the weighted mean is a quadrature of
    the domain (unbiased: the points' own mean is not)."""
    layer = BoundaryLayer(0.1, 4.0)
    shard = sample(unit_mesh(2, 7), 20000, 0, "uniform", 3, WORLD, layer)
    serial = sample(unit_mesh(2, 7, MPI.COMM_SELF), 20000, 0, "uniform", 3, MPI.COMM_SELF,
                    layer)
    everything = _all_points(shard.interior)
    np.testing.assert_allclose(everything, _all_points(serial.interior, MPI.COMM_SELF),
                               atol=1e-14)
    assert len(everything) == shard.n_interior == serial.n_interior
    assert shard.weight_total == serial.weight_total            # exact: from the counts
    inside = layer.inside(everything)
    volume = 1 - 0.8 ** 2
    assert abs(inside.sum() - 4 * 20000 * volume) < 4 * (4 * 20000 * volume) ** 0.5
    assert abs((~inside).sum() - 20000 * (1 - volume)) < 4 * (20000 * (1 - volume)) ** 0.5
    assert layer.points(20000, 2) == pytest.approx(20000 * (1 + 3 * volume))
    np.testing.assert_array_equal(shard.weights, np.where(layer.inside(shard.interior),
                                                          0.25, 1.0))
    assert shard.weight_total == pytest.approx(WORLD.allreduce(float(shard.weights.sum())),
                                               rel=1e-14)
    f = ((shard.interior - 0.5) ** 2).sum(1)                    # mean 1/6 over the square
    weighted = WORLD.allreduce(float(shard.weights @ f)) / shard.weight_total
    plain = WORLD.allreduce(float(f.sum())) / shard.n_interior
    assert weighted == pytest.approx(1 / 6, abs=3e-3)
    assert plain > 1 / 6 + 0.03                               # the layer's points, unweighted
    mesh = unit_mesh(2, 7)
    off = sample(mesh, 2000, 0, "uniform", 3, WORLD, BoundaryLayer(0.1, 1.0))
    plain_off = sample(mesh, 2000, 0, "uniform", 3, WORLD)
    assert off.weights is None and np.array_equal(off.interior, plain_off.interior)


@pytest.mark.mpi
def test_boundary_layer_loss_is_the_weighted_mean_of_the_squared_residual():
    """The residual term with a boundary layer: sum_i w_i r_i^2 / sum_i w_i over all ranks,
    r from the pointwise residual; on 1 rank the same value."""
    extra = ["problem.case=paper-2d", "network.hard_bc=true", "sampling.layer_width=0.1",
             "sampling.layer_density=4"]
    values = []
    for ctx in (parallel.init("cpu"), _serial_context()):
        s = build(config.load(None, SMALL + extra), ctx)
        shard = s.objective.shard
        r = s.objective.pointwise_residual(s.net, shard.interior)
        expected = ctx.comm.allreduce(float(shard.weights @ r ** 2)) / shard.weight_total
        term = ctx.comm.allreduce(float(s.objective.terms(s.forward)["residual"]))
        assert term == pytest.approx(expected, rel=1e-12)
        values.append(term)
    assert values[0] == pytest.approx(values[1], rel=1e-12)


@pytest.mark.mpi(min_size=2)
def test_default_partition_gives_every_rank_the_same_cells_in_every_build():
    """Which rank holds which coarse cells (and so which collocation points, and how its float32
    sums round) is fixed by the partition: with the default partitioner, building the paper-2d
    coarse mesh again gives every rank the same cells (PT-Scotch, as built here, cut it
    differently in three of four builds in one process: docs/results.md, section 4.3)."""
    builds = [owned_cell_vertices(unit_mesh(2, 25, partitioner=config.Config().coarse.partitioner))
              for _ in range(4)]
    for cells in builds[1:]:
        np.testing.assert_array_equal(cells, builds[0])
    assert WORLD.allreduce(len(builds[0])) == 2 * 25 ** 2


def test_partitioner_missing_from_this_petsc_is_a_one_line_error():
    from petsctools import get_external_packages
    from parallel_ms.errors import UserError
    # chaco (a serial partitioner) is never offered: the fallback when both others are built
    missing = next((p for p in ("parmetis", "ptscotch") if p not in get_external_packages()),
                   "chaco")
    with pytest.raises(UserError, match=rf"coarse.partitioner = '{missing}' \(allowed: simple"):
        unit_mesh(2, 4, partitioner=missing)


@pytest.mark.mpi
@pytest.mark.parametrize("case,extra", [("paper-2d", []),
                                        ("paper-1d-eps1_15", ["network.hard_bc=true"]),
                                        ("paper-2d", ["network.kind=mlp", "network.depth=3"]),
                                        ("paper-2d", WEAK)])
def test_n_rank_loss_and_gradient_equal_one_rank(case, extra):
    from parallel_ms.training.loop import Trainer
    cfg = config.load(None, SMALL + [f"problem.case={case}"] + extra)
    trainer = Trainer(cfg, parallel.init("cpu"))
    loss_local, terms = trainer._local_loss()
    loss_local.backward()                                    # through DDP: averaged gradient
    grad_n = flat_grad(trainer.params)
    loss_n = parallel.allreduce_sum(float(loss_local.detach())) / WORLD.size

    serial = build(cfg, _serial_context())                   # all points on this rank alone
    loss_1 = sum(serial.objective.terms(serial.forward).values())
    loss_1.backward()
    grad_1 = flat_grad(list(serial.net.parameters()))
    assert loss_n == pytest.approx(float(loss_1.detach()), rel=1e-12)
    assert float(torch.linalg.vector_norm(grad_n - grad_1)
                 / torch.linalg.vector_norm(grad_1)) < 1e-12


@pytest.mark.mpi
def test_lbfgs_keeps_identical_parameters_on_all_ranks():
    from parallel_ms.training.loop import Trainer
    cfg = config.load(None, SMALL + ["optimizer.kind=lbfgs", "train.steps=20",
                                     "optimizer.lbfgs_max_iter=5", "problem.case=paper-2d"])
    trainer = Trainer(cfg, parallel.init("cpu"))
    for step in range(1, 21):
        row = trainer.step(step)
        flat = torch.cat([p.detach().reshape(-1) for p in trainer.params]).numpy()
        first = WORLD.bcast(flat, root=0)
        assert np.array_equal(flat, first), step
    assert np.isfinite(row["loss"])


@pytest.mark.mpi
@pytest.mark.parametrize("case,extra", [("paper-2d", []), ("paper-1d-eps1_15", []),
                                        ("paper-2d", WEAK), ("paper-1d-eps1_15", WEAK)])
def test_taylor_test_passes(case, extra):
    cfg = config.load(None, SMALL + [f"problem.case={case}"] + extra)
    s = build(cfg, parallel.init("cpu"))
    result = taylor_test(list(s.net.parameters()),
                         lambda: sum(s.objective.terms(s.forward).values()))
    assert result.min_rate > 1.9, result.rates
    assert result.fd_rel_diff < 1e-4
    # the same numbers on every rank count: compare with a serial evaluation of J
    serial = build(cfg, _serial_context())
    j1 = float(sum(serial.objective.terms(serial.forward).values()).detach())
    jn = parallel.allreduce_sum(float(sum(s.objective.terms(s.forward).values()).detach()))
    assert jn == pytest.approx(j1, rel=1e-12)


@pytest.mark.mpi
def test_adaptive_resampling_follows_the_residual_and_is_rank_independent():
    def residual(x):
        return np.exp(-200 * ((x[:, 0] - 0.3) ** 2 + (x[:, 1] - 0.6) ** 2))

    pts = resample_adaptive(unit_mesh(2, 8), 4000, 3, 1, residual, 1.0, 0.1, WORLD)
    ref = resample_adaptive(unit_mesh(2, 8, MPI.COMM_SELF), 4000, 3, 1, residual, 1.0, 0.1,
                            MPI.COMM_SELF)
    np.testing.assert_allclose(_all_points(pts), _all_points(ref, MPI.COMM_SELF), atol=1e-14)
    everything = _all_points(pts)
    assert abs(len(everything) - 4000) < 300
    near = np.linalg.norm(everything - [0.3, 0.6], axis=1) < 0.1
    assert near.mean() > 5 * np.pi * 0.1 ** 2  # far denser than uniform near the peak


@pytest.mark.mpi
def test_validation_loss_is_the_fine_loss_at_a_fixed_rank_independent_point_set():
    """``sampling.validation``: the best iterate of a run with fresh points every step is the
    one with the smallest fine-problem loss (3.24) at a fixed validation set, drawn once from
    its own stream: the same global set on any number of ranks, not the training points; its
    value is the mean of r^2 at those points (computed with all of them on one rank) plus the
    boundary term."""
    from parallel_ms.training.loop import Trainer
    cfg = config.load(None, SMALL + [
        "problem.case=paper-1d-eps1_15", "problem.eps=0.5", "sampling.interior=300",
        "sampling.validation=500", "sampling.resample_every=1", "train.steps=6",
        "optimizer.lr=1e-2", "train.eval_every=6", "reference.degree=1",
        "reference.resolution=200", "train.best_by=loss"])
    trainer = Trainer(cfg, parallel.init("cpu"))
    result = trainer.run()
    validation = [row["validation"] for row in result.history]
    assert result.best_criterion == min(validation)
    assert result.best_step == 1 + int(np.argmin(validation))
    assert validation != [row["residual"] + row["boundary"] for row in result.history]

    serial = build(cfg, _serial_context())
    points = _all_points(trainer.s.validation.shard.interior)
    everything = _all_points(serial.validation.shard.interior, MPI.COMM_SELF)
    np.testing.assert_allclose(points, everything, atol=1e-14)
    assert abs(len(everything) - 500) < 30
    training = _all_points(serial.objective.shard.interior, MPI.COMM_SELF)
    assert not np.isin(everything.round(12), training.round(12)).any()

    serial.net.load_state_dict(trainer.s.net.state_dict())    # the last iterate
    r = serial.objective.pointwise_residual(serial.net, everything)
    boundary = float(serial.objective.terms(serial.forward)["boundary"].detach())
    assert validation[-1] == pytest.approx(float(np.mean(r ** 2)) + boundary, rel=1e-12)
