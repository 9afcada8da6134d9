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
from parallel_ms.training.weak_residual import dual_weights, hat_values

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


@pytest.mark.parametrize("dim", [1, 2])
def test_dual_weights_invert_the_laplacian_stiffness(dim):
    # ||T b||^2 = b^T A^-1 b on the interior nodes: with b = A c (c a nodal vector vanishing
    # on the boundary), ||T b||^2 = c^T A c = |c_h|_1^2, the H^1 seminorm of its interpolant
    cells = 6
    n = cells + 1
    t = dual_weights(cells, dim)
    index = np.indices((n,) * dim).reshape(dim, -1)[::-1] / cells       # node coordinates
    c = np.prod(np.sin(np.pi * index), axis=0)                          # 0 on the boundary
    # the Q1 interpolant of prod sin(pi x_k): |.|_1^2 -> dim pi^2 / 2^dim as cells grow; here
    # compare with the stiffness directly
    h = 1.0 / cells
    off = np.ones(n - 1)
    k1 = (np.diag(np.full(n, 2.0)) - np.diag(off, 1) - np.diag(off, -1)) / h
    m1 = h / 6 * (np.diag(np.full(n, 4.0)) + np.diag(off, 1) + np.diag(off, -1))
    a = k1 if dim == 1 else np.kron(m1, k1) + np.kron(k1, m1)
    b = a @ c
    assert np.linalg.norm(t @ b) ** 2 == pytest.approx(c @ a @ c, rel=1e-12)
    assert c @ a @ c == pytest.approx(dim * np.pi ** 2 / 2 ** dim, rel=0.1)
    boundary = ~np.all((index > 0) & (index < 1), axis=0)
    assert not t[boundary].any() and not t[:, boundary].any()


@pytest.mark.mpi
def test_dual_rows_are_the_inverse_stiffness_weighting_of_the_tested_residual():
    base = [k for k in SMALL if not k.startswith("loss.tau_weak")]
    l2 = build(config.load(None, base + ["loss.tau_weak=1"]), parallel.init("cpu"))
    dual = build(config.load(None, base + ["loss.tau_weak=1", "loss.weak_norm=dual"]),
                 parallel.init("cpu"))
    rows = {}
    for name, s in (("l2", l2), ("dual", dual)):
        lin = Residuals(s.objective, s.forward).linearize()
        rows[name] = np.concatenate(WORLD.allgather(lin.rows["weak"].numpy()))
    # l2 rows: sqrt(n^d) b over all nodes; dual: T b
    b = rows["l2"] / np.sqrt(4 ** 2)
    np.testing.assert_allclose(rows["dual"], dual_weights(4, 2) @ b, rtol=1e-10,
                               atol=1e-12 * abs(rows["dual"]).max())
