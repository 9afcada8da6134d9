"""Where a run's strong residual lives, and how noisy its loss is on N fresh points: the
pointwise residual r of (4.8) of a finished run's network (its last checkpoint, read only) at
M uniform random points of the unit square, and

- the share of the mean of r^2 (the loss's integral, Monte Carlo) carried by the largest
  0.01 %, 0.1 %, 1 % and 10 % of the values,
- the share carried by the points within ``--near`` of the boundary and of the corners, beside
  the share of the domain they are,
- the relative standard deviation of the mean of r^2 over N independent uniform points,
  std(r^2) / (mean(r^2) sqrt(N)), for each N of ``--sample``: with fresh points every step,
  the noise of the loss each Gauss-Newton step is fitted to (points drawn per coarse cell, as
  ``sampling`` does, are stratified: their noise is at most this),
- with ``--layer WIDTH DENSITY`` (``sampling.layer_width``, ``sampling.layer_density``:
  DENSITY times the points within WIDTH of the boundary, weighted by the inverse) the same
  for the weighted mean, sqrt(mean(r^4 / q) - mean(r^2)^2) / (mean(r^2) sqrt(N')), q the
  points' relative density (mean 1) and N' = N mean(1 + (DENSITY - 1) [inside]) the points
  it takes, beside them.

    mpiexec -n R .venv/bin/python benchmarks/residual_tail.py RUN_DIR [--points M]
        [--sample N ...] [--near D] [--layer WIDTH DENSITY ...] [--json F]

R ranks for a run made on R ranks (the checkpoint is per rank); each rank evaluates M / R of
the points (seeded by rank, so the set depends on R).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import continued, write_json
from parallel_ms.fine.sampling import BoundaryLayer

TOP = (1e-4, 1e-3, 1e-2, 1e-1)
CHUNK = 10000          #: points per evaluation of the residual (its jet's memory)


def tail_shares(r2: np.ndarray) -> dict[str, float]:
    """Share of sum(r2) in its largest fractions :data:`TOP` of the values."""
    ordered = np.sort(r2)[::-1]
    total = ordered.sum()
    return {f"{q:g}": float(ordered[:max(1, int(q * len(r2)))].sum() / total) for q in TOP}


def zone_shares(x: np.ndarray, r2: np.ndarray, near: float) -> dict[str, dict[str, float]]:
    """For the points within ``near`` of the boundary and of the corners of the unit cube:
    their share of the points and of sum(r2)."""
    to_corner = np.linalg.norm(np.minimum(x, 1 - x), axis=1)
    out = {}
    for name, inside in (("boundary", BoundaryLayer(near).inside(x)),
                         ("corners", to_corner < near)):
        out[name] = {"points": float(inside.mean()), "r2": float(r2[inside].sum() / r2.sum())}
    return out


def layer_noise(x: np.ndarray, r2: np.ndarray, width: float, density: float, n: int
                ) -> tuple[float, float]:
    """(N', relative std of the weighted mean of r^2 over N' points) for N uniform points'
    worth with the boundary layer (``width``, ``density``) of :class:`BoundaryLayer`."""
    extra = 1 + (density - 1) * BoundaryLayer(width, density).inside(x)
    q = extra / extra.mean()
    points = n * extra.mean()
    return float(points), float(np.sqrt(max((r2 * r2 / q).mean() - r2.mean() ** 2, 0.0))
                                / (r2.mean() * np.sqrt(points)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("--points", type=int, default=400000, help="M (default 400000)")
    p.add_argument("--sample", type=int, nargs="+", default=[3000, 6000, 9000],
                   help="sample sizes N (default 3000 6000 9000)")
    p.add_argument("--near", type=float, default=0.01,
                   help="width of the boundary and corner zones (default 0.01)")
    p.add_argument("--layer", type=float, nargs=2, action="append", default=[],
                   metavar=("WIDTH", "DENSITY"), help="a boundary layer to weigh (repeatable)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    from parallel_ms import parallel
    trainer = continued(args.run, [])
    comm, dim = trainer.ctx.comm, trainer.s.problem.dim
    x = np.random.default_rng([0, comm.rank]).random((args.points // comm.size, dim))
    r = np.concatenate([trainer.s.objective.pointwise_residual(trainer.s.net, x[i:i + CHUNK])
                        for i in range(0, len(x), CHUNK)])
    gathered = comm.gather((x, r * r), root=0)
    if comm.rank != 0:
        return 0
    x = np.concatenate([g[0] for g in gathered])
    r2 = np.concatenate([g[1] for g in gathered])
    noise = {str(n): float(r2.std() / (r2.mean() * np.sqrt(n))) for n in args.sample}
    layers = {f"{w:g} x{k:g}": {str(n): layer_noise(x, r2, w, k, n) for n in args.sample}
              for w, k in args.layer}
    out = {"run": str(args.run), "step": trainer.current_step, "points": len(r2),
           "mean_r2": float(r2.mean()), "top": tail_shares(r2),
           "zones": zone_shares(x, r2, args.near), "near": args.near, "noise": noise,
           "layers": layers}
    parallel.print0(f"{args.run}, step {out['step']}: mean r^2 {out['mean_r2']:.4g} on "
                    f"{len(r2)} uniform points")
    parallel.print0("| largest values | share of the mean of r^2 |\n|---|---|")
    for q, share in out["top"].items():
        parallel.print0(f"| {float(q) * 100:g} % | {share:.3f} |")
    parallel.print0(f"| within {args.near:g} of the | share of the points | share of the mean "
                    f"of r^2 |\n|---|---|---|")
    for name, z in out["zones"].items():
        parallel.print0(f"| {name} | {z['points']:.2e} | {z['r2']:.3f} |")
    parallel.print0("| N points | relative std of their mean of r^2 |\n|---|---|")
    for n, s in noise.items():
        parallel.print0(f"| {n} | {s:.3f} |")
    if layers:
        parallel.print0("| boundary layer (width x density) | N | points N' | relative std |\n"
                        "|---|---|---|---|")
    for name, by_n in layers.items():
        for n, (points, s) in by_n.items():
            parallel.print0(f"| {name} | {n} | {points:.0f} | {s:.3f} |")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
