"""The weak residual (r tested against coarse hat functions): the hat functions, its rows
against a direct sum, the Adam term against the Gauss-Newton rows. Run on 1, 2 and 3 ranks
(a hat function's support spans several ranks' points)."""
import numpy as np
import pytest
import torch
from mpi4py import MPI

from parallel_ms import config, parallel
from parallel_ms.training.residuals import Residuals
from parallel_ms.training.optimizers.base import flat_grad
from parallel_ms.training.setup import build
from parallel_ms.training.weak_residual import hat_values

WORLD = MPI.COMM_WORLD
SMALL = ["problem.case=paper-2d", "sampling.interior=1500", "sampling.boundary=200",
         "network.width=12", "network.features=6", "coarse.cells=6", "network.dtype=float64",
         "loss.tau_weak=7", "loss.weak_cells=4"]


@pytest.mark.parametrize("dim", [1, 2])
def test_hat_functions_are_a_partition_of_unity_reproducing_linears(dim):
    x = np.random.default_rng(0).random((500, dim))
    x[:3] = [[0.0] * dim, [1.0] * dim, [0.25] * dim]           # nodes and corners
    n = 4
    nodes, values = hat_values(x, n)
    assert np.all(values >= 0)
    np.testing.assert_allclose(values.sum(1), 1.0, atol=1e-14)
    coords = np.stack([(nodes // (n + 1) ** k) % (n + 1) for k in range(dim)], -1) / n
    np.testing.assert_allclose((values[..., None] * coords).sum(1), x, atol=1e-14)


@pytest.mark.mpi
def test_weak_rows_are_the_tested_residual_and_the_adam_term_their_square():
    s = build(config.load(None, SMALL), parallel.init("cpu"))
    o = s.objective
    lin = Residuals(o, s.forward).linearize()
    r = lin.rows["residual"] * o.shard.n_interior ** 0.5     # the rows: sqrt(1 / M) r
    # direct: W_n = sqrt(tau n^d) / M sum_i phi_n(x_i) r_i over ALL points
    x_all = np.concatenate(WORLD.allgather(o.x_int.numpy()))
    r_all = np.concatenate(WORLD.allgather(r.numpy()))
    nodes, values = hat_values(x_all, 4)
    direct = np.zeros(25)
    np.add.at(direct, nodes.ravel(), (values * r_all[:, None]).ravel())
    direct *= np.sqrt(7 * 16) / o.shard.n_interior
    owned = np.concatenate(WORLD.allgather(lin.rows["weak"].numpy()))
    np.testing.assert_allclose(owned, direct, rtol=1e-12, atol=1e-14 * abs(direct).max())
    # the objective's term (Adam, L-BFGS) is the rows' squared norm, its gradient 2 J^T W
    for p in s.net.parameters():
        p.grad = None
    term = o.terms(s.forward)["weak"]
    assert parallel.allreduce_sum(float(term)) == pytest.approx(float(owned @ owned), rel=1e-12)
    term.backward()
    grad = flat_grad(list(s.net.parameters()))
    u = {k: torch.zeros_like(v) for k, v in lin.rows.items()}
    u["weak"] = 2 * lin.rows["weak"]
    expected = lin.vjp(u)
    assert float((grad - expected).norm()) <= 1e-12 * float(expected.norm())
