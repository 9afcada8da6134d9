"""Parallel scaling of one hybrid training step: strong (fixed global points) and weak (points
proportional to the ranks) scaling over ``mpiexec -n R`` for R in --ranks, with the time spent
in coarse solves, in the compression operator (its PETSc scatters are the point-to-node
communication) and an estimate of the gradient all-reduce.

    .venv/bin/python benchmarks/scaling.py [--ranks 1 2] [--points 25000] [--steps 10] [--json F]

Each R runs as a separate ``mpiexec -n R`` job (this script with --worker). Coarse-solve and
compression times come from timers wrapped around those methods (maxima over ranks); the
all-reduce estimate is the time of ``torch.distributed.all_reduce`` of a tensor with as many
entries as the network has parameters (DDP reduces the same amount, in buckets, overlapped with
the backward pass). One torch thread per rank, so that R ranks use R cores. Efficiency: strong
T(1) / (R T(R)), weak T(1) / T(R).
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


def worker(points: int, steps: int, warmup: int, out: Path) -> None:
    import torch
    import torch.distributed as dist
    from mpi4py import MPI

    from parallel_ms import config, parallel
    from parallel_ms.coarse.problem import CoarseProblem
    from parallel_ms.coupling.compression import Compression
    from parallel_ms.training.loop import Trainer
    totals = {"coarse": 0.0, "compression": 0.0}
    time_method(CoarseProblem, "_solve", totals, "coarse")
    time_method(CoarseProblem, "state", totals, "coarse")
    time_method(Compression, "apply", totals, "compression")
    time_method(Compression, "transpose", totals, "compression")
    ctx = parallel.init("cpu")
    cfg = config.load(None, ["problem.case=paper-2d", f"sampling.interior={points}",
                             f"sampling.boundary={max(points // 10, 40)}",
                             "balancing.enabled=false", "train.method=hybrid",
                             "coupling.refresh=every-step", "parallel.threads=1"])
    trainer = Trainer(cfg, ctx)
    for k in range(1, warmup + 1):
        trainer.step(k)
    for key in totals:
        totals[key] = 0.0
    ctx.comm.barrier()
    t0 = time.perf_counter()
    for k in range(warmup + 1, warmup + steps + 1):
        trainer.step(k)
    ctx.comm.barrier()
    step = (time.perf_counter() - t0) / steps
    n_params = sum(p.numel() for p in trainer.params)
    flat = torch.zeros(n_params, dtype=torch.float32)
    for _ in range(3):
        dist.all_reduce(flat)
    t0 = time.perf_counter()
    for _ in range(20):
        dist.all_reduce(flat)
    allreduce = (time.perf_counter() - t0) / 20 if ctx.size > 1 else 0.0
    share = {k: ctx.comm.allreduce(v / steps, op=MPI.MAX) for k, v in totals.items()}
    if ctx.is_root:
        out.write_text(json.dumps({
            "ranks": ctx.size, "points": trainer.s.objective.shard.n_interior,
            "threads_per_rank": torch.get_num_threads(), "step_s": step,
            "coarse_s": share["coarse"], "compression_s": share["compression"],
            "allreduce_s": allreduce, "parameters": n_params}))
    parallel.finalize()


def launch(ranks: int, points: int, steps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = [os.environ.get("MPIEXEC", "mpiexec"), "--oversubscribe", "-n", str(ranks),
               sys.executable, str(HERE / "scaling.py"), "--worker", "--points", str(points),
               "--steps", str(steps), "--warmup", str(warmup), "--out", str(out)]
        subprocess.run(cmd, check=True, env=env, cwd=HERE.parent)
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--points", type=int, default=25000, help="global points for R = 1")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.points, args.steps, args.warmup, args.out)
        return
    runs = {"strong": [launch(r, args.points, args.steps, args.warmup) for r in args.ranks],
            "weak": [launch(r, args.points * r, args.steps, args.warmup) for r in args.ranks]}
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores; torch {mach['torch']}; hybrid step "
          f"(every-step refresh), paper-2d, Ms-FF 2 x 128, float32, Adam")
    for kind, rows in runs.items():
        print(f"\n{kind} scaling ({args.points} points{' per rank' if kind == 'weak' else ''})")
        print(f"{'ranks':>5}{'threads':>8}{'points':>8}{'s/step':>9}{'eff.':>7}"
              f"{'coarse ms':>11}{'compr. ms':>11}{'allred. ms':>12}")
        t1 = rows[0]["step_s"]
        for r in rows:
            eff = t1 / (r["ranks"] * r["step_s"]) if kind == "strong" else t1 / r["step_s"]
            print(f"{r['ranks']:>5}{r['threads_per_rank']:>8}{r['points']:>8}{r['step_s']:>9.4f}"
                  f"{eff:>7.0%}{1e3 * r['coarse_s']:>11.2f}{1e3 * r['compression_s']:>11.2f}"
                  f"{1e3 * r['allreduce_s']:>12.2f}")
    write_json(args.json, {"machine": mach, **runs})


if __name__ == "__main__":
    main()
