"""The subspace neural operator (paper 004) against GMsFEM's local eigensolves: basis
construction time, subspace error and the coarse solution's error on held-out coefficients.

    .venv/bin/python benchmarks/subspace_operator.py [--cells 10] [--refinement 8] [--basis 4]
        [--train 3000] [--steps 2000] [--width 12] [--model F] [--json F]
    .venv/bin/python benchmarks/subspace_operator.py --load F ...     (evaluate a saved one)
    mpiexec -n 2 .venv/bin/python benchmarks/subspace_operator.py ...

1. Training: --train coefficient patches (parallel_ms/multiscale/patches.py, sampler seed
   --seed: random-inclusions-2d with random case seeds >= 1 and channels-2d, random rigid
   motions, contrast 1e2-1e4) and their L first local eigenvectors, sample i drawn and solved on
   rank i % size; data-parallel (DDP) training of the operator with the subspace loss.
2. Held out: --test fresh patches (sampler seed --seed + 1), and the neighbourhoods of the
   coarse mesh of random-inclusions-2d with case seed 0 (a field never drawn for training) and
   of channels-2d (the training sees this field at random positions and angles: held out in
   position only).
   (a) time to build the L bases of N neighbourhoods: the local eigensolves (K at the
       quadrature points, assembly of A_omega and S_omega, GMsFEM's eigensolver
       ``smallest_pairs``, per patch) against the operator (K at the nodes, one batched
       forward + QR), and in place for a whole GMsFEM space: spectral.LocalProblems +
       eigenpairs against NeighbourhoodPatches.operator_pairs (K at the nodes, forward, QR,
       to the fine dofs), the patches' grid maps (built once per mesh, like the neighbourhoods
       both ways use) timed apart; each the best of --repeats (the ways timed in turn), slowest
       rank;
   (b) mean L_SAL (sum of sin^2 of the principal angles) and the principal angles;
   (c) the GMsFEM coarse solution's rel. L2 / H1 / energy error against the fine solution with
       GMsFEM's bases, with the operator's, and with GMsFEM's spans tilted at random by
       --perturbation (the sensitivity of each error to the spans), the same R^T A R solve
       (parallel_ms/multiscale/);
   (d) the spectral gap lambda_{L+1} / lambda_L over the neighbourhoods (median, 10 %): how
       well GMsFEM's own spans, the operator's targets, are determined.
Speed-ups are given with and without the K evaluations (which depend on how K is given: here
a formula evaluated by torch, tens of discs per point for random-inclusions-2d).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from mpi4py import MPI

from common import machine, write_json

from parallel_ms import parallel
from parallel_ms.config import CHOICES


class _Tabulated:
    """A patch coefficient evaluated beforehand at fixed point sets (so that timing the
    eigensolve leaves the K evaluation out)."""

    def __init__(self, coefficient: Callable[[np.ndarray], np.ndarray],
                 point_sets: list[np.ndarray]) -> None:
        self.values = {id(p): coefficient(p) for p in point_sets}

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.values[id(points)]


def _patch_timing(patch, model, coefficients, basis: int, eigensolver: str, repeats: int,
                  comm: MPI.Comm) -> dict[str, float]:
    """Seconds to build this rank's bases either way (slowest rank, best of ``repeats``; the
    four parts are timed in turn in every repeat, so that both ways see the same load)."""
    from parallel_ms.multiscale.operator import predict_bases
    from parallel_ms.multiscale.patches import log_k_images
    mask = torch.from_numpy(patch.mask)
    best: dict[str, float] = {}
    for _ in range(repeats):
        tables, t_kq = parallel.slowest(comm, lambda: [_Tabulated(c, patch.quadrature_points)
                                               for c in coefficients])
        _, t_eig = parallel.slowest(comm, lambda: [patch.spectral_basis(t, basis, eigensolver)
                                           for t in tables])
        images, t_kn = parallel.slowest(comm, lambda: torch.from_numpy(
            log_k_images(patch, coefficients)).float())
        _, t_op = parallel.slowest(comm, lambda: predict_bases(model, images, mask))
        for key, value in (("k_quadrature_s", t_kq), ("eigensolve_s", t_eig),
                           ("k_nodes_s", t_kn), ("operator_s", t_op)):
            best[key] = min(best.get(key, float("inf")), value)
    return {"neighbourhoods": comm.allreduce(len(coefficients)), **best,
            "speedup": best["eigensolve_s"] / best["operator_s"],
            "speedup_with_k": (best["k_quadrature_s"] + best["eigensolve_s"])
            / (best["k_nodes_s"] + best["operator_s"])}


def _perturbed(pairs: list[tuple[np.ndarray, np.ndarray]], size: float,
               seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """GMsFEM's local spaces tilted at random: each orthonormalised basis vector plus ``size``
    times a random unit vector orthogonal to the space (angles ~ atan(size)), for the
    sensitivity of the coarse error to the spans."""
    rng = np.random.default_rng(seed)
    out = []
    for lam, phi in pairs:
        q = np.linalg.qr(phi)[0]
        noise = rng.standard_normal(q.shape)
        noise -= q @ (q.T @ noise)
        out.append((lam, q + size * noise / np.linalg.norm(noise, axis=0)))
    return out


def _spectral_gaps(pairs: list[tuple[np.ndarray, np.ndarray]], basis: int,
                   comm: MPI.Comm) -> dict[str, float] | None:
    """Over all neighbourhoods, the median and 10 % quantile of lambda_{L+1} / lambda_L: how
    well the span of the L first eigenvectors is determined (a ratio near 1 leaves it to
    rounding which of two near-equal eigenvectors it holds); None for L = 1 (lambda_1 = 0)."""
    if basis < 2:
        return None
    ratios = np.concatenate(comm.allgather([lam[basis] / lam[basis - 1] for lam, _ in pairs]))
    return {"median": float(np.median(ratios)), "p10": float(np.quantile(ratios, 0.1))}


def _held_out_case(name: str, args, patch, model, ctx) -> dict[str, Any]:
    """(a), (b), (c) on the neighbourhoods of one global case."""
    from parallel_ms.config import GmsfemConfig
    from parallel_ms.multiscale.nested import nested_meshes
    from parallel_ms.multiscale.operator_training import evaluate
    from parallel_ms.multiscale.patches import NeighbourhoodPatches, PatchData
    from parallel_ms.multiscale.solver import GmsfemSolver
    from parallel_ms.multiscale.space import MultiscaleSpace
    from parallel_ms.multiscale.spectral import LocalProblems
    from parallel_ms.reference.metrics import fe_relative_errors
    from parallel_ms.problems import get_case
    from parallel_ms.reference.solver import solve_temperature_drops
    comm, L = ctx.comm, args.basis
    problem = get_case(name)
    settings = GmsfemConfig(basis=L, refinement=args.refinement, eigensolver=args.eigensolver)
    meshes = nested_meshes(args.cells, args.refinement, comm)
    gmsfem = GmsfemSolver(problem, meshes, settings, operator=model)   # no unused local matrices
    hoods = gmsfem.hoods
    t_local = t_operator = t_patches = float("inf")
    for _ in range(args.repeats):           # in turn, so that both ways see the same load
        pairs, t = parallel.slowest(comm, lambda: LocalProblems(problem, meshes, hoods).eigenpairs(
            L, 0.0, args.eigensolver))
        t_local = min(t_local, t)
        patches, t = parallel.slowest(comm, lambda: NeighbourhoodPatches(patch, meshes, hoods))
        t_patches = min(t_patches, t)
        predicted, t = parallel.slowest(comm, lambda: patches.operator_pairs(model, problem))
        t_operator = min(t_operator, t)
    gaps = _spectral_gaps(LocalProblems(problem, meshes, hoods).eigenpairs(
        L + 1, 0.0, args.eigensolver), L, comm)
    mask = torch.from_numpy(patch.mask)
    targets = PatchData(torch.arange(len(pairs)), torch.from_numpy(patches.images(problem)),
                        torch.from_numpy(np.array([patches.to_grid(n, phi) for n, (_, phi)
                                                   in enumerate(pairs)]).reshape(
                            -1, L, patch.size, patch.size)),
                        torch.from_numpy(np.array([lam for lam, _ in pairs]).reshape(-1, L)),
                        mask)
    subspace = evaluate(model, targets, ctx)
    timing = _patch_timing(patch, model, patches.coefficients(problem), L, args.eigensolver,
                           args.repeats, comm)
    u = solve_temperature_drops(problem, meshes.Vf, 1, "mumps")[0]
    k = problem.k_ufl(meshes.fine)
    errors = {}
    for label, space in (("gmsfem", MultiscaleSpace(meshes, hoods, pairs)),
                         ("operator", MultiscaleSpace(meshes, hoods, predicted)),
                         ("gmsfem_perturbed", MultiscaleSpace(meshes, hoods, _perturbed(
                             pairs, args.perturbation, comm.rank)))):
        coarse = space.galerkin(gmsfem.A)
        errors[label] = dict(zip(("rel_l2", "rel_h1", "rel_energy"),
                                 fe_relative_errors(gmsfem.solve(space, coarse), u, k)))
        coarse.destroy()
    return {"case": name, "params": dict(problem.params), "subspace": subspace,
            "spectral_gap": gaps,
            "patch_timing": timing,
            "in_place": {"local_problems_s": t_local, "operator_s": t_operator,
                         "patches_s": t_patches, "speedup": t_local / t_operator,
                         "speedup_with_patches": t_local / (t_patches + t_operator)},
            "errors": errors}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=10, help="coarse cells per direction")
    p.add_argument("--refinement", type=int, default=8, help="fine cells per coarse cell")
    p.add_argument("--basis", type=int, default=4, help="L: basis functions per neighbourhood")
    p.add_argument("--train", type=int, default=3000, help="training patches")
    p.add_argument("--test", type=int, default=300, help="held-out random patches")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32, help="global batch")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width", type=int, default=12, help="channels of the finest U-Net level")
    p.add_argument("--levels", type=int, default=2, help="U-Net coarsenings")
    p.add_argument("--seed", type=int, default=1, help="sampler seed of the training patches")
    p.add_argument("--eigensolver", default="sparse", choices=CHOICES["gmsfem.eigensolver"])
    p.add_argument("--perturbation", type=float, default=0.01,
                   help="size of the random tilt of GMsFEM's spans in the sensitivity row")
    p.add_argument("--repeats", type=int, default=3, help="timings: best of so many")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.add_argument("--model", type=Path, default=None, help="save the trained operator here")
    p.add_argument("--load", type=Path, default=None,
                   help="evaluate this saved operator instead of training one (its cells, "
                        "refinement and L must be those given)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.load is not None and not args.load.is_file():
        raise SystemExit(f"--load {args.load}: no such file (a model saved by --model)")
    torch.set_num_threads(1)
    from parallel_ms import parallel
    from parallel_ms.multiscale.operator import SubspaceUNet, load_operator, save_operator
    from parallel_ms.multiscale.operator_training import TrainSettings, evaluate, train
    from parallel_ms.multiscale.patches import PatchProblem, PatchSampler, sample_shard
    ctx = parallel.init(args.device)
    comm, L = ctx.comm, args.basis
    patch = PatchProblem(args.cells, args.refinement)
    test = sample_shard(patch, PatchSampler(args.cells, seed=args.seed + 1), args.test, L,
                        comm)
    training: dict[str, Any] = {}
    if args.load is not None:
        model, info = load_operator(args.load)
        if (info["cells"], info["refinement"], model.hyper["count"]) != (
                args.cells, args.refinement, L):
            raise SystemExit(f"{args.load}: cells, refinement, L = {info['cells']}, "
                             f"{info['refinement']}, {model.hyper['count']}; asked for "
                             f"{args.cells}, {args.refinement}, {L}")
    else:
        data, t_data = parallel.slowest(comm, lambda: sample_shard(
            patch, PatchSampler(args.cells, seed=args.seed), args.train, L, comm))
        torch.manual_seed(args.seed)
        model = SubspaceUNet(data.mask, L, width=args.width, levels=args.levels)
        settings = TrainSettings(steps=args.steps, batch=args.batch, lr=args.lr,
                                 seed=args.seed, log_every=max(1, args.steps // 10))
        history, t_train = parallel.slowest(comm, lambda: train(model, data, args.train, settings,
                                                        ctx))
        training = {"data_s": t_data, "train_s": t_train,
                    "final_batch_loss": history[-1]["loss"]}
        if args.model is not None and ctx.is_root:
            save_operator(args.model, model, {"cells": args.cells,
                                              "refinement": args.refinement,
                                              "degrees": list(patch.degrees)})
    model.cpu().eval()
    cpu = dataclasses.replace(ctx, device=torch.device("cpu"))
    held_out = PatchSampler(args.cells, seed=args.seed + 1)
    random_rows = {"subspace": evaluate(model, test, cpu),
                   "patch_timing": _patch_timing(
                       patch, model, [held_out(i) for i in test.index.tolist()], L,
                       args.eigensolver, args.repeats, comm)}
    cases = [_held_out_case(name, args, patch, model, cpu)
             for name in ("random-inclusions-2d", "channels-2d")]
    out = {"machine": machine(), "date": datetime.date.today().isoformat(), "ranks": comm.size,
           "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "parameters": sum(q.numel() for q in model.parameters()), "training": training,
           "random_patches": random_rows, "cases": cases}
    if ctx.is_root:
        _print(out)
        write_json(args.json, out)
    parallel.finalize()


def _print(out: dict[str, Any]) -> None:
    a = out["args"]
    print(f"{out['machine']['cpu']}, {out['ranks']} rank(s), {out['date']}; coarse "
          f"{a['cells']}x{a['cells']}, refinement {a['refinement']} "
          f"({2 * a['refinement'] + 1}^2 patch nodes), L = {a['basis']}, eigensolver "
          f"{a['eigensolver']}")
    t = out["training"]
    print(f"operator: {out['parameters']} parameters; " + (
        f"trained on {a['train']} patches (drawn and solved in {t['data_s']:.1f} s), "
        f"{a['steps']} steps of {a['batch']} in {t['train_s']:.1f} s, last batch L_SAL "
        f"{t['final_batch_loss']:.3e}" if t else f"loaded from {a['load']}"))
    print("\n| held-out set | N | L_SAL mean | mean angles (deg) | max angle (deg) | "
          "eigensolves ms/nbh | operator ms/nbh | speed-up | speed-up incl. K |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [("random patches", out["random_patches"])] + [
        (f"{c['case']} neighbourhoods", c) for c in out["cases"]]
    for label, row in rows:
        s, t = row["subspace"], row["patch_timing"]
        n = t["neighbourhoods"]
        print(f"| {label} | {n} | {s['loss']:.3e} | "
              f"{', '.join(f'{x:.2f}' for x in s['angle_mean_deg'])} | "
              f"{max(s['angle_max_deg']):.1f} | {1e3 * t['eigensolve_s'] / n:.3f} | "
              f"{1e3 * t['operator_s'] / n:.3f} | {t['speedup']:.1f} | "
              f"{t['speedup_with_k']:.1f} |")
    print("\n| case | bases | rel. L2 | rel. H1 | rel. energy | L2 ratio | energy ratio |")
    print("|---|---|---|---|---|---|---|")
    for c in out["cases"]:
        g = c["errors"]["gmsfem"]
        for label, key in (("GMsFEM", "gmsfem"), ("operator", "operator"),
                           (f"GMsFEM tilted by {a['perturbation']:g}", "gmsfem_perturbed")):
            e = c["errors"][key]
            print(f"| {c['case']} | {label} | {e['rel_l2']:.3e} | {e['rel_h1']:.3e} | "
                  f"{e['rel_energy']:.3e} | {e['rel_l2'] / g['rel_l2']:.2f} | "
                  f"{e['rel_energy'] / g['rel_energy']:.2f} |")
    print("\n| case | LocalProblems + eigenpairs s | operator in place s | speed-up | "
          "+ patches s (once per mesh) | speed-up incl. patches | "
          "lambda_{L+1} / lambda_L: median, 10 % |")
    print("|---|---|---|---|---|---|---|")
    for c in out["cases"]:
        i, gap = c["in_place"], c["spectral_gap"]
        print(f"| {c['case']} | {i['local_problems_s']:.3f} | {i['operator_s']:.3f} | "
              f"{i['speedup']:.1f} | {i['patches_s']:.4f} | {i['speedup_with_patches']:.1f} | "
              + (f"{gap['median']:.3g}, {gap['p10']:.3g} |" if gap else "— |"))


if __name__ == "__main__":
    main()
