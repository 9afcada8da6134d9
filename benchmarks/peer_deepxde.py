"""One plain-PINN training step in parallel_ms and in DeepXDE (PyTorch backend) on the same
problem, network and point counts: the paper's 2D case, its baseline MLP (8 x 64, tanh),
25,000 interior and 2,500 boundary points, float32, Adam.

    benchmarks/setup-deepxde.sh                       (once: DeepXDE in its own environment)
    .venv/bin/python benchmarks/peer_deepxde.py [--points 25000] [--steps 20] [--json F]

parallel_ms runs with its double-backward derivatives (``loss.derivatives = autograd``, what
DeepXDE does too) and with its forward-jet path; DeepXDE runs in benchmarks/.venv-deepxde
(``DEEPXDE_VENV`` to change), as a separate process with the same number of torch threads.
Times are per Adam iteration after warm-up (DeepXDE: ``model.train(iterations=N)`` divided by
N, which includes its own bookkeeping, as a user would see it).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def deepxde_worker(points: int, steps: int, warmup: int, threads: int) -> None:
    os.environ["DDE_BACKEND"] = "pytorch"
    import deepxde as dde
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    eps, pi = 0.1, np.pi

    def pde(x, u):
        k = 3 + torch.sin(pi * x[:, 0:1] / eps) + torch.sin(2 * pi * x[:, 1:2] / eps)
        k1 = pi / eps * torch.cos(pi * x[:, 0:1] / eps)
        k2 = 2 * pi / eps * torch.cos(2 * pi * x[:, 1:2] / eps)
        q = 10 * torch.exp(-100 * ((x[:, 0:1] - 0.5) ** 2 + (x[:, 1:2] - 0.5) ** 2))
        lap = dde.grad.hessian(u, x, i=0, j=0) + dde.grad.hessian(u, x, i=1, j=1)
        ux, uy = dde.grad.jacobian(u, x, i=0, j=0), dde.grad.jacobian(u, x, i=0, j=1)
        return -k * lap - (k1 * ux + k2 * uy) - (q + k1)      # the lifted problem (4.8)

    geom = dde.geometry.Rectangle([0, 0], [1, 1])
    bc = dde.icbc.DirichletBC(geom, lambda x: 0, lambda x, on: on)
    data = dde.data.PDE(geom, pde, bc, num_domain=points, num_boundary=points // 10,
                        train_distribution="pseudo")
    net = dde.nn.FNN([2] + [64] * 8 + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    model.compile("adam", lr=1e-3)
    model.train(iterations=warmup, display_every=10 ** 9, verbose=0)
    t0 = time.perf_counter()
    model.train(iterations=steps, display_every=10 ** 9, verbose=0)
    print(json.dumps({"deepxde": dde.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "seconds_per_step": (time.perf_counter() - t0) / steps}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=25000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--deepxde-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.deepxde_worker:
        deepxde_worker(args.points, args.steps, args.warmup, args.threads)
        return
    venv = Path(os.environ.get("DEEPXDE_VENV", HERE / ".venv-deepxde"))
    if not (venv / "bin" / "python").exists():
        sys.exit(f"peer_deepxde.py: no DeepXDE environment at {venv} (run "
                 f"benchmarks/setup-deepxde.sh first)")
    from common import machine, write_json
    from step_cost import time_steps

    from parallel_ms import parallel
    base = ["problem.case=paper-2d", "network.kind=mlp", "network.width=64", "network.depth=8",
            f"sampling.interior={args.points}", f"sampling.boundary={args.points // 10}",
            "balancing.enabled=false", "optimizer.lr=1e-3", f"parallel.threads={args.threads}"]
    ours = time_steps({"parallel_ms, autograd": base + ["loss.derivatives=autograd"],
                       "parallel_ms, jet": base + ["loss.derivatives=jet"]},
                      args.steps, args.warmup)
    out = subprocess.run([str(venv / "bin" / "python"), __file__, "--deepxde-worker",
                          "--points", str(args.points), "--steps", str(args.steps),
                          "--warmup", str(args.warmup), "--threads", str(args.threads)],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    peer = json.loads(out.stdout.strip().splitlines()[-1])
    times = {**ours, f"DeepXDE {peer['deepxde']}": peer["seconds_per_step"]}
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores, {args.threads} torch threads; "
          f"torch {mach['torch']} (DeepXDE env: torch {peer['torch']})")
    print(f"paper-2d, MLP 8 x 64 tanh, {args.points} + {args.points // 10} points, float32, Adam")
    ref = times[f"DeepXDE {peer['deepxde']}"]
    print(f"{'step':<26}{'s/step':>10}{'/ DeepXDE':>11}")
    for name, t in times.items():
        print(f"{name:<26}{t:>10.4f}{t / ref:>11.3f}")
    write_json(args.json, {"machine": mach, "threads": args.threads, "points": args.points,
                           "seconds_per_step": times})
    parallel.finalize()


if __name__ == "__main__":
    main()
