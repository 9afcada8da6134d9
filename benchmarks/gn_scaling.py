"""Scaling of one Gauss-Newton step per curvature solver and per part: the explicit Jacobian,
the rest of the solver's set-up (Gram matrix / kernel and their sums over ranks), the solves,
and the trial evaluations of the line search / damping loop, on R ranks for R in --ranks;
strong (fixed global points) and weak (points proportional to the ranks) scaling.

    .venv/bin/python benchmarks/gn_scaling.py [--ranks 1 2] [--solvers cholesky woodbury cg]
        [--network default|paper] [--points N] [--steps 2] [--kinds strong weak] [--json F]

The run is the embedded default run (parallel_ms/configs/default.toml: hybrid, paper-2d,
Gauss-Newton, fresh points every step) with ``--network paper`` the paper's Ms-FF 2 x 128 with
64 features (33,281 parameters) instead of its 4,801-parameter network. Each R runs as its own
``mpiexec -n R`` job (this script with --worker), one torch thread per rank; the parts are
timed by wrapping the solver's methods (maxima over ranks, seconds per step after one warm-up
step). Efficiency: strong T(1) / (R T(R)), weak T(1) / T(R).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, time_method, write_json

HERE = Path(__file__).resolve().parent
NETWORKS = {"default": [], "paper": ["network.width=128", "network.features=64"]}
PARTS = ("jacobian", "setup", "solve", "trials")


def worker(solver: str, network: str, points: int, steps: int, out: Path) -> None:
    from mpi4py import MPI

    from parallel_ms import config, parallel
    from parallel_ms.training.loop import Trainer
    from parallel_ms.training.optimizers.gauss_newton import GaussNewton
    from parallel_ms.training.optimizers.registry import curvature_solver
    from parallel_ms.training.residuals import Linearization
    totals = dict.fromkeys(PARTS + ("bind",), 0.0)
    cls = curvature_solver(solver)
    time_method(Linearization, "jacobian", totals, "jacobian")
    time_method(cls, "bind", totals, "bind")
    time_method(cls, "solve", totals, "solve")
    time_method(GaussNewton, "_trial", totals, "trials")
    ctx = parallel.init("cpu")
    cfg = config.load(Path(__file__).resolve().parent.parent / "parallel_ms/configs/default.toml",
                      [f"optimizer.gn_solver={solver}", f"sampling.interior={points}",
                       "parallel.threads=1", "train.steps=1000", *NETWORKS[network]])
    trainer = Trainer(cfg, ctx)
    trainer.resample_if_due(1)
    trainer.step(1)
    totals.update(dict.fromkeys(totals, 0.0))
    ctx.comm.barrier()
    t0 = time.perf_counter()
    for k in range(2, steps + 2):
        trainer.resample_if_due(k)
        trainer.step(k)
    ctx.comm.barrier()
    step = (time.perf_counter() - t0) / steps
    totals["setup"] = totals.pop("bind") - totals["jacobian"]
    share = {k: ctx.comm.allreduce(v / steps, op=MPI.MAX) for k, v in totals.items()}
    if ctx.is_root:
        out.write_text(json.dumps({
            "solver": solver, "ranks": ctx.size, "points": trainer.s.objective.shard.n_interior,
            "parameters": sum(p.numel() for p in trainer.params), "step_s": step, **share}))
    parallel.finalize()


def launch(solver: str, network: str, ranks: int, points: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = [os.environ.get("MPIEXEC", "mpiexec"), "--oversubscribe", "-n", str(ranks),
               sys.executable, str(HERE / "gn_scaling.py"), "--worker", "--solvers", solver,
               "--network", network, "--points", str(points), "--steps", str(steps),
               "--out", str(out)]
        subprocess.run(cmd, check=True, env=env, cwd=HERE.parent)
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--solvers", nargs="+", default=["cholesky", "woodbury", "cg"])
    p.add_argument("--network", choices=list(NETWORKS), default="default")
    p.add_argument("--points", type=int, default=6000, help="global interior points for R = 1")
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--kinds", nargs="+", choices=["strong", "weak"], default=["strong", "weak"])
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.solvers[0], args.network, args.points, args.steps, args.out)
        return
    runs = {kind: [launch(s, args.network, r, args.points * (r if kind == "weak" else 1),
                          args.steps) for s in args.solvers for r in args.ranks]
            for kind in args.kinds}
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores; torch {mach['torch']}; the default "
          f"run's Gauss-Newton step ({args.network} network), one torch thread per rank; "
          f"seconds per step and per part (maxima over ranks)")
    for kind, rows in runs.items():
        print(f"\n{kind} scaling ({args.points} interior points"
              f"{' per rank' if kind == 'weak' else ''})")
        print(f"{'solver':>9}{'ranks':>6}{'points':>8}{'params':>8}{'s/step':>9}{'eff.':>7}"
              + "".join(f"{part:>10}" for part in PARTS))
        for r in rows:
            t1 = next(q["step_s"] for q in rows if q["solver"] == r["solver"] and q["ranks"] == 1
                      ) if any(q["ranks"] == 1 for q in rows) else float("nan")
            eff = t1 / (r["ranks"] * r["step_s"]) if kind == "strong" else t1 / r["step_s"]
            print(f"{r['solver']:>9}{r['ranks']:>6}{r['points']:>8}{r['parameters']:>8}"
                  f"{r['step_s']:>9.2f}{eff:>7.0%}"
                  + "".join(f"{r[part]:>10.2f}" for part in PARTS))
    write_json(args.json, {"machine": mach, "network": args.network, **runs})


if __name__ == "__main__":
    main()
