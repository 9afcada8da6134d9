"""Cost of one training step: plain PINN vs hybrid (lazy and every-step coarse refresh), measured
in one run on the same network and points (paper's 2D setting by default).

    .venv/bin/python benchmarks/step_cost.py [--points 25000] [--steps 20] [--json F]
    mpiexec -n 2 .venv/bin/python benchmarks/step_cost.py        (data parallel)

Each variant runs a few warm-up steps (JIT compilation of Firedrake kernels, first solves);
then the variants take ``--steps`` timed Adam steps in turn (round robin, so that the noise of a
shared machine hits all of them alike); the table gives the mean time per step and the ratio
to the PINN step. The lazy variant re-solves the state at most every 100 steps (paper); every-step
re-solves it at every step.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import machine, write_json
from parallel_ms import config, parallel


def time_steps(variants: dict[str, list[str]], steps: int, warmup: int) -> dict[str, float]:
    from parallel_ms.training.loop import Trainer
    ctx = parallel.init("cpu")
    trainers = {name: Trainer(config.load(None, o), ctx) for name, o in variants.items()}
    for trainer in trainers.values():
        for k in range(1, warmup + 1):
            trainer.step(k)
    total = dict.fromkeys(trainers, 0.0)
    for k in range(warmup + 1, warmup + steps + 1):
        for name, trainer in trainers.items():
            ctx.comm.barrier()
            t0 = time.perf_counter()
            trainer.step(k)
            total[name] += time.perf_counter() - t0
    return {name: t / steps for name, t in total.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="paper-2d")
    p.add_argument("--points", type=int, default=25000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    base = [f"problem.case={args.case}", f"sampling.interior={args.points}",
            f"sampling.boundary={args.points // 10}", "balancing.enabled=false"]
    variants = {
        "pinn": base,
        "hybrid (lazy refresh)": base + ["train.method=hybrid"],
        "hybrid (every-step refresh)": base + ["train.method=hybrid",
                                               "coupling.refresh=every-step"],
    }
    times = time_steps(variants, args.steps, args.warmup)
    ctx = parallel.init("cpu")
    if ctx.is_root:
        mach = machine()
        print(f"machine: {mach['cpu']}, {mach['cores']} cores, {ctx.size} rank(s), "
              f"torch {mach['torch']} ({mach['torch_threads']} threads per rank)")
        print(f"case {args.case}, {args.points} interior points, Ms-FF 2 x 128, float32, Adam")
        print(f"{'step':<30}{'s/step':>10}{'/ pinn':>9}")
        for name, t in times.items():
            print(f"{name:<30}{t:>10.4f}{t / times['pinn']:>9.3f}")
        write_json(args.json, {"machine": mach, "ranks": ctx.size, "case": args.case,
                               "points": args.points, "seconds_per_step": times})
    parallel.finalize()


if __name__ == "__main__":
    main()
