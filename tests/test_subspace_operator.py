"""The subspace neural operator of paper 004 (parallel_ms/multiscale/operator.py, patches.py,
operator_training.py): the subspace loss and its gradient, the patch eigenproblems against the
distributed GMsFEM ones, data-parallel training (1 rank = 2 ranks) and ``gmsfem --basis-from``."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from mpi4py import MPI

from parallel_ms import parallel
from parallel_ms.multiscale.operator import (SubspaceUNet, load_operator, predict_bases,
                                             principal_angles, save_operator, subspace_loss)
from parallel_ms.training.gradcheck import taylor_test

WORLD = MPI.COMM_WORLD
CELLS, REFINEMENT = 5, 4             #: small patches: 9 x 9 grid nodes


def _hexagon(size: int) -> torch.Tensor:
    """The mask of the six coarse triangles around the centre (diagonals "left": from the
    top left to the bottom right of each square; row i = y, column j = x)."""
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    m = size // 2
    return (i + j >= m) & (i + j <= 3 * m)


def _random_vectors(batch: int, count: int, mask: torch.Tensor, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    size = mask.shape[-1]
    return torch.randn(batch, count, size, size, generator=gen, dtype=torch.float64) * mask


def test_loss_is_zero_for_any_invertible_recombination_of_the_targets():
    mask = _hexagon(9)
    target = _random_vectors(3, 4, mask, 0)
    gen = torch.Generator().manual_seed(1)
    mixing = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)    # invertible (a.s.)
    mixing[0] = -torch.eye(4)[[2, 0, 3, 1]]                               # signs and order
    predicted = torch.einsum("bij,bjxy->bixy", mixing, target)
    loss = subspace_loss(predicted, target, mask)
    assert loss.abs().max() < 1e-12
    assert principal_angles(predicted, target, mask).max() < 1e-6


def test_loss_is_k_for_an_orthogonal_complement_and_sin2_of_known_angles():
    mask = _hexagon(9)
    n = int(mask.sum())
    gen = torch.Generator().manual_seed(2)
    basis = torch.linalg.qr(torch.randn(n, 6, generator=gen, dtype=torch.float64)).Q

    def image(columns: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(1, columns.shape[1], 9, 9, dtype=torch.float64)
        out[0][:, mask] = columns.T
        return out

    target = image(basis[:, :3])
    assert subspace_loss(image(basis[:, 3:]), target, mask).item() == pytest.approx(3, abs=1e-12)
    # rotate two target directions towards the complement by 0.3 and 0.7 rad
    angles = torch.tensor([0.3, 0.7], dtype=torch.float64)
    tilted = torch.stack([basis[:, 0], torch.cos(angles[0]) * basis[:, 1]
                          + torch.sin(angles[0]) * basis[:, 3],
                          torch.cos(angles[1]) * basis[:, 2]
                          + torch.sin(angles[1]) * basis[:, 4]], dim=1)
    loss = subspace_loss(image(tilted), target, mask).item()
    assert loss == pytest.approx(float(torch.sin(angles).square().sum()), rel=1e-12)
    np.testing.assert_allclose(principal_angles(image(tilted), target, mask)[0],
                               [0.0, 0.3, 0.7], atol=1e-7)


def test_operator_output_and_the_loss_gradient_pass_a_taylor_test():
    torch.manual_seed(0)
    mask = _hexagon(9)
    model = SubspaceUNet(mask, count=4, width=4).double()
    log_k = 4 * torch.rand(5, 1, 9, 9, dtype=torch.float64)
    out = model(log_k)
    assert out.shape == (5, 4, 9, 9)
    assert torch.equal(out[:, 0], mask.double().expand(5, -1, -1))   # the constant, exact
    assert out[:, :, ~mask].abs().max() == 0
    target = _random_vectors(5, 4, mask, 3)
    target[:, 0] = mask                                              # the constant is in it
    result = taylor_test(list(model.parameters()),
                         lambda: subspace_loss(model(log_k), target, mask).mean())
    assert result.min_rate > 1.9, result.rates
    assert result.fd_rel_diff < 1e-6


def test_default_operator_is_a_few_1e4_parameters_and_saves(tmp_path):
    mask = _hexagon(17)
    model = SubspaceUNet(mask, count=4)
    assert 1e4 < sum(p.numel() for p in model.parameters()) < 1e5
    path = tmp_path / "models" / "op.pt"          # a folder that does not exist yet
    save_operator(path, model, {"cells": 10, "refinement": 8})
    again, patch = load_operator(path)
    log_k = 4 * torch.rand(3, 1, 17, 17)
    assert torch.equal(again(log_k), model(log_k)) and patch["refinement"] == 8
    q = predict_bases(again, log_k, mask, batch=2)
    assert q.shape == (3, int(mask.sum()), 4)
    np.testing.assert_allclose(q.transpose(1, 2) @ q, torch.eye(4).expand(3, -1, -1),
                               atol=1e-5)


def test_operator_and_its_training_import_without_firedrake():
    """A GPU node without PETSc and Firedrake can train on patches generated elsewhere."""
    from test_imports import PROGRAM, blocked
    modules = ["parallel_ms.multiscale.operator", "parallel_ms.multiscale.operator_training"]
    out = blocked(PROGRAM, *modules)
    assert out.returncode == 0 and f"imported {len(modules)}" in out.stdout, out.stderr


# ---- patches -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def patch():
    from parallel_ms.multiscale.patches import PatchProblem
    return PatchProblem(CELLS, REFINEMENT)


def test_patch_eigenpairs_solve_the_neumann_problem(patch):
    from parallel_ms.multiscale.patches import PatchSampler
    m = REFINEMENT
    assert patch.mask.sum() == 3 * m * m + 3 * m + 1                  # the closed hexagon
    assert torch.equal(torch.from_numpy(patch.mask), _hexagon(2 * m + 1))
    coefficient = PatchSampler(CELLS, seed=5)(0)
    A, S = patch.matrices(coefficient)
    lam, phi = patch.spectral_basis(coefficient, 4)
    vectors = phi[:, patch.mask].T               # the mask's order is the matrices' order
    assert np.abs(A @ vectors - S @ vectors * lam).max() < 1e-9 * abs(A).max()
    np.testing.assert_allclose(vectors.T @ S @ vectors, np.eye(4), atol=1e-10)
    assert abs(lam[0]) < 1e-10 * lam[1] and np.ptp(vectors[:, 0]) < 1e-10   # the constant
    assert np.all(np.diff(lam) >= 0) and phi[:, ~patch.mask].max() == 0


def test_sampler_is_a_function_of_the_sample_number_and_rotates_the_case():
    from parallel_ms.multiscale.patches import HELD_OUT_SEED, PatchSampler
    sampler = PatchSampler(CELLS, seed=3)
    draws = [sampler(i) for i in range(40)]
    assert {d.problem.name for d in draws} == {"random-inclusions-2d", "channels-2d"}
    assert all(d.problem.params.get("seed", 1) != HELD_OUT_SEED for d in draws)
    assert all(1e2 <= d.problem.params["contrast"] <= 1e4 for d in draws)
    c = sampler(7)
    assert (c.problem.name, c.problem.params, c.centre, c.angle) == (
        draws[7].problem.name, draws[7].problem.params, draws[7].centre, draws[7].angle)
    y = np.array([[0.0, 0.0], [0.03, 0.01]])
    x = np.asarray(c.centre) + np.array([[0.0, 0.0], [math.cos(c.angle) * 0.03
                                                     - math.sin(c.angle) * 0.01,
                                                     math.sin(c.angle) * 0.03
                                                     + math.cos(c.angle) * 0.01]])
    np.testing.assert_allclose(c(y), c.problem.k(torch.from_numpy(x)).numpy(), rtol=1e-14)


def test_images_of_many_patches_are_each_patch_own_log_k(patch):
    """log_k_images evaluates the patches of one problem in one call: the same images as K
    patch by patch, for rotated patches of one field mixed with patches of other fields."""
    from parallel_ms.multiscale.patches import PatchCoefficient, PatchSampler, log_k_images
    sampler = PatchSampler(CELLS, seed=4)
    draws = [sampler(i) for i in range(6)]
    shared = [PatchCoefficient(draws[0].problem, (0.3 + 0.1 * i, 0.5), 0.4 * i)
              for i in range(3)]
    coefficients = [shared[0], draws[1], shared[1], draws[2], shared[2], draws[5]]
    images = log_k_images(patch, coefficients)
    assert images.shape == (6, 1, patch.size, patch.size)
    for image, coefficient in zip(images, coefficients):
        np.testing.assert_allclose(image[0], np.log10(coefficient(patch.grid_points)),
                                   rtol=1e-13, atol=1e-13)
    assert np.ptp(images[0]) > 0.5 and not np.allclose(images[0], images[2])


@pytest.mark.mpi
@pytest.mark.parametrize("case,degrees", [("random-inclusions-2d", (6, 8)),
                                          ("channels-2d", (8, 10))])
def test_patch_problem_is_the_gmsfem_local_problem(case, degrees):
    """With GMsFEM's quadrature, the patch problem of each neighbourhood of the distributed
    GMsFEM space (:mod:`parallel_ms.multiscale.spectral`) has its eigenpairs to rounding, on
    every rank count; NeighbourhoodPatches maps the grid to the neighbourhood's fine dofs."""
    from parallel_ms.multiscale.nested import nested_meshes
    from parallel_ms.multiscale.neighbourhoods import Neighbourhoods
    from parallel_ms.multiscale.patches import NeighbourhoodPatches, PatchProblem
    from parallel_ms.multiscale.spectral import LocalProblems
    from parallel_ms.problems import get_case
    problem = get_case(case)
    local_patch = PatchProblem(CELLS, REFINEMENT, degrees)
    meshes = nested_meshes(CELLS, REFINEMENT)
    hoods = Neighbourhoods(meshes)
    pairs = LocalProblems(problem, meshes, hoods).eigenpairs(4)
    patches = NeighbourhoodPatches(local_patch, meshes, hoods)
    mask = torch.from_numpy(local_patch.mask)
    for n, coefficient in enumerate(patches.coefficients(problem)):
        lam, phi = local_patch.spectral_basis(coefficient, 4)
        np.testing.assert_allclose(lam, pairs[n][0], rtol=1e-9, atol=1e-10 * lam[-1])
        theirs = torch.from_numpy(patches.to_grid(n, pairs[n][1]))[None]
        assert subspace_loss(theirs, torch.from_numpy(phi)[None], mask).item() < 1e-12
        np.testing.assert_array_equal(
            patches.to_grid(n, patches.from_grid(n, phi[:, local_patch.mask].T)), phi)
    assert WORLD.allreduce(len(patches.grid)) == (CELLS - 1) ** 2


class _Oracle(torch.nn.Module):
    """A stand-in operator that predicts given images (whatever its input)."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images
        self.unused = torch.nn.Parameter(torch.zeros((), dtype=images.dtype))

    def forward(self, log_k: torch.Tensor) -> torch.Tensor:
        return self.images


@pytest.mark.mpi
def test_operator_bases_recombining_gmsfem_bases_give_the_gmsfem_solution():
    """NeighbourhoodPatches.operator_pairs feeds MultiscaleSpace: predictions that span the
    GMsFEM local spaces (here: those spaces mixed by a random invertible matrix per
    neighbourhood) give GMsFEM's coarse solution, on every rank count."""
    from parallel_ms.config import GmsfemConfig
    from parallel_ms.multiscale.nested import nested_meshes
    from parallel_ms.multiscale.patches import NeighbourhoodPatches, PatchProblem
    from parallel_ms.multiscale.solver import GmsfemSolver
    from parallel_ms.multiscale.space import MultiscaleSpace
    from parallel_ms.problems import get_case
    problem = get_case("channels-2d")
    meshes = nested_meshes(CELLS, REFINEMENT)
    gmsfem = GmsfemSolver(problem, meshes, GmsfemConfig(basis=3, refinement=REFINEMENT))
    space, coarse = gmsfem.space()
    reference = gmsfem.solve(space, coarse)
    pairs = gmsfem.local.eigenpairs(3)
    patches = NeighbourhoodPatches(PatchProblem(CELLS, REFINEMENT), meshes, gmsfem.hoods)
    gen = torch.Generator().manual_seed(WORLD.rank)
    images = torch.stack([torch.einsum("ij,jxy->ixy", torch.randn(3, 3, generator=gen,
                                                                  dtype=torch.float64),
                                       torch.from_numpy(patches.to_grid(n, phi)))
                          for n, (_, phi) in enumerate(pairs)])
    predicted = patches.operator_pairs(_Oracle(images), problem)
    assert all(np.isnan(lam).all() and np.allclose(phi.T @ phi, np.eye(3))
               for lam, phi in predicted)
    space_op = MultiscaleSpace(meshes, gmsfem.hoods, predicted)
    u = gmsfem.solve(space_op, space_op.galerkin(gmsfem.A))
    # the same through GmsfemSolver's operator path (gmsfem --basis-from): no local problems
    learned = GmsfemSolver(problem, meshes, GmsfemConfig(refinement=REFINEMENT), _Oracle(images))
    assert learned.local is None
    u_learned = learned.solve(*learned.space())
    with u.dat.vec_ro as a, reference.dat.vec_ro as b, u_learned.dat.vec_ro as c:
        assert (a - b).norm() < 1e-8 * b.norm() and (c - b).norm() < 1e-8 * b.norm()


# ---- gmsfem --basis-from MODEL -------------------------------------------------------------
COMMAND = ["gmsfem", "--case", "channels-2d", "--cells", "4", "--refinement", "4",
           "--basis", "1"]


def _model_file(path, cells: int, refinement: int, count: int = 3):
    """A small untrained operator saved as benchmarks/subspace_operator.py saves one."""
    torch.manual_seed(0)
    model = SubspaceUNet(_hexagon(2 * refinement + 1), count=count, width=4)
    save_operator(path, model, {"cells": cells, "refinement": refinement, "degrees": [4, 4]})
    return path


def test_command_with_an_operator_prints_its_row_beside_gmsfem(tmp_path, capsys):
    """The operator's row (L from the model) and GMsFEM's row for that L (added to --basis);
    its space holds chi_i times the constant, i.e. GMsFEM's L = 1 space, so its energy error
    is not above GMsFEM's for L = 1 (Galerkin), whatever the (untrained) network predicts."""
    from parallel_ms.__main__ import build_parser
    from parallel_ms.commands import gmsfem
    model = _model_file(tmp_path / "op.pt", 4, 4)
    args = build_parser().parse_args(COMMAND + ["--basis-from", str(model),
                                                "--json", str(tmp_path / "g.json")])
    assert gmsfem.main(args) == 0
    out = json.loads((tmp_path / "g.json").read_text())
    assert [(row["basis"], row["bases"]) for row in out["rows"]] == [
        (1, "spectral"), (3, "spectral"), (3, "operator")]
    one, three, learned = out["rows"]
    assert learned["dofs"] == three["dofs"] and learned["offline_s"] > 0
    assert learned["rel_energy"] <= one["rel_energy"] * (1 + 1e-9)
    assert out["basis_from"] == str(model)
    lines = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("GMsFEM L = 3"))
    assert lines[at + 1].startswith("operator L = 3")


@pytest.mark.parametrize("argv,message", [
    (["--cells", "5"], r"trained with cells = 4, refinement = 4; this run has --cells 5 "
                       r"--refinement 4"),
    (["--refinement", "8"], r"--cells 4 --refinement 8"),
])
def test_command_refuses_a_model_of_other_patches_in_one_line(tmp_path, argv, message):
    from parallel_ms.__main__ import build_parser
    from parallel_ms.commands.gmsfem import preflight
    from parallel_ms.errors import UserError
    model = _model_file(tmp_path / "op.pt", 4, 4)
    args = build_parser().parse_args(["gmsfem", "--case", "channels-2d", "--cells", "4",
                                      "--refinement", "4", *argv, "--basis-from", str(model)])
    with pytest.raises(UserError, match=message) as err:
        preflight(args)
    assert err.value.collective and "\n" not in str(err.value)


@pytest.mark.parametrize("content,message", [(None, "no such file"),
                                              (b"not a model", "not a model saved by")])
def test_command_refuses_a_missing_or_foreign_model_file_in_one_line(tmp_path, content,
                                                                     message):
    from parallel_ms.__main__ import build_parser
    from parallel_ms.commands.gmsfem import preflight
    from parallel_ms.errors import UserError
    model = tmp_path / "op.pt"
    if content is not None:
        model.write_bytes(content)
    args = build_parser().parse_args(COMMAND + ["--basis-from", str(model)])
    with pytest.raises(UserError, match=message) as err:
        preflight(args)
    assert str(model) in str(err.value) and "\n" not in str(err.value)


# ---- data-parallel training ----------------------------------------------------------------
def _serial_context() -> parallel.ParallelContext:
    ctx = parallel.init("cpu")
    return dataclasses.replace(ctx, comm=MPI.COMM_SELF, rank=0, size=1)


def test_training_lowers_the_loss(patch):
    from parallel_ms.multiscale.operator_training import TrainSettings, evaluate, train
    from parallel_ms.multiscale.patches import PatchSampler, sample_shard
    torch.set_num_threads(1)
    ctx = _serial_context()
    data = sample_shard(patch, PatchSampler(CELLS, seed=11), 48, 3, MPI.COMM_SELF)
    torch.manual_seed(0)
    model = SubspaceUNet(data.mask, count=3, width=6)
    before = evaluate(model, data, ctx)["loss"]
    history = train(model, data, 48, TrainSettings(steps=60, batch=16, lr=3e-3), ctx)
    after = evaluate(model, data, ctx)
    assert len(history) == 60 and after["loss"] < 0.7 * before, (before, after)
    assert after["samples"] == 48 and after["angle_mean_deg"][0] < 0.1   # the constant


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("batch", [8, 1])
def test_n_rank_training_equals_one_rank_training(patch, batch):
    """The same initial network and global batches: after 5 Adam steps the DDP replicas
    (samples sharded by rank) hold the parameters of one rank trained on all samples (batch 1:
    every step some rank holds none of the batch)."""
    from parallel_ms.multiscale.operator_training import TrainSettings, evaluate, train
    from parallel_ms.multiscale.patches import PatchSampler, sample_shard
    torch.set_num_threads(1)
    ctx = parallel.init("cpu")
    sampler, total = PatchSampler(CELLS, seed=12), 20
    shard = sample_shard(patch, sampler, total, 3, WORLD)
    everything = sample_shard(patch, sampler, total, 3, MPI.COMM_SELF)
    assert WORLD.allreduce(len(shard)) == total
    assert torch.equal(shard.basis, everything.basis[shard.index])
    settings = TrainSettings(steps=5, batch=batch, lr=1e-2, seed=4)

    def trained(data, context):
        torch.manual_seed(0)
        model = SubspaceUNet(data.mask, count=3, width=4).double()
        history = train(model, data, total, settings, context)
        return model, history

    model_n, history_n = trained(shard, ctx)
    model_1, history_1 = trained(everything, _serial_context())
    for p_n, p_1 in zip(model_n.parameters(), model_1.parameters()):
        np.testing.assert_allclose(p_n.detach().numpy(), p_1.detach().numpy(),
                                   rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose([h["loss"] for h in history_n], [h["loss"] for h in history_1],
                               rtol=1e-10)
    flat = torch.cat([p.detach().reshape(-1) for p in model_n.parameters()]).numpy()
    assert np.array_equal(flat, WORLD.bcast(flat, root=0))        # the replicas agree bitwise
    stats_n = evaluate(model_n, shard, ctx)
    stats_1 = evaluate(model_n, everything, _serial_context())
    assert stats_n["loss"] == pytest.approx(stats_1["loss"], rel=1e-12)
    np.testing.assert_allclose(stats_n["angle_max_deg"], stats_1["angle_max_deg"], rtol=1e-12)
