"""Cost of one training step on the paper's 2D case, everything measured in one run: plain
PINN with double-backward derivatives, with the forward jet, with the jet under torch.compile;
the hybrid step with lazy and with every-step coarse refresh; one Gauss-Newton CG iteration
and one hybrid Gauss-Newton step with its split (network, coarse solves, all-reduce); the
matmul roofline of this machine; and the same plain-PINN step in DeepXDE (PyTorch backend,
its own environment) on the same network and points.

    benchmarks/setup-deepxde.sh                      (once; without it the DeepXDE row is absent)
    .venv/bin/python benchmarks/step_cost.py [--network msff mlp] [--points 25000] [--steps 10]
                                             [--json F]
    mpiexec -n 2 .venv/bin/python benchmarks/step_cost.py --no-peer      (data parallel)

Each variant is a full ``Trainer.step`` (residual and boundary losses, backward, Adam) with
loss balancing off; after a warm-up (JIT compilation, first solves) the variants take
``--steps`` timed steps in turn (round robin, so the noise of a shared machine hits all alike).
FLOPs are counted by ``torch.utils.flop_counter`` on one step of each variant (the compiled
jet does the jet's FLOPs); the roofline is the PINN jet step's FLOPs at the rate torch.matmul
reaches here on the step's dominant shape, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import best_time, machine, write_json
from deepxde_peer import deepxde_python
from parallel_ms import config, parallel

HERE = Path(__file__).resolve().parent
NETWORKS = {"msff": ["network.kind=msff"],
            "mlp": ["network.kind=mlp", "network.width=64", "network.depth=8"]}
TITLES = {"msff": "Ms-FF (2 maps x 64 features, 2 x 128 tanh)", "mlp": "MLP 8 x 64 tanh"}
JET = "PINN, forward jet"
VARIANTS = {"PINN, double backward": ["loss.derivatives=autograd"],
            JET: ["loss.derivatives=jet"],
            "PINN, jet + torch.compile": ["loss.derivatives=jet-compiled"],
            "hybrid, lazy refresh": ["train.method=hybrid"],
            "hybrid, every-step refresh": ["train.method=hybrid", "coupling.refresh=every-step"]}


def time_steps(trainers: dict, steps: int, warmup: int, comm) -> dict[str, float]:
    """Mean seconds per step of each trainer, the trainers stepping in turn."""
    for trainer in trainers.values():
        for k in range(1, warmup + 1):
            trainer.step(k)
    total = dict.fromkeys(trainers, 0.0)
    for k in range(warmup + 1, warmup + steps + 1):
        for name, trainer in trainers.items():
            comm.barrier()
            t0 = time.perf_counter()
            trainer.step(k)
            total[name] += time.perf_counter() - t0
    return {name: t / steps for name, t in total.items()}


def step_flops(trainer, k: int) -> float | None:
    """FLOPs (all ranks) of one step, counted by torch's FLOP counter; None where the counter
    cannot follow the step (its module hooks refuse ``autograd.grad`` inside a forward, i.e.
    double backward)."""
    try:
        with FlopCounterMode(display=False) as counter:
            trainer.step(k)
    except RuntimeError:
        return None
    return float(parallel.allreduce_sum(counter.get_total_flops()))


def matmul_rate(rows: int, width: int, dtype: torch.dtype, device: torch.device) -> float:
    """FLOP/s of (rows x width) @ (width x width) on this rank, into a preallocated result
    (a fresh 10^8-byte result would add page faults and halve the rate measured)."""
    a = torch.randn(rows, width, dtype=dtype, device=device)
    b = torch.randn(width, width, dtype=dtype, device=device)
    c = torch.empty(rows, width, dtype=dtype, device=device)
    return 2.0 * rows * width * width / best_time(lambda: torch.matmul(a, b, out=c), repeats=5)


def deepxde_step(network: str, points: int, steps: int, warmup: int) -> dict | None:
    python = deepxde_python()
    if not python.exists():
        print(f"  (no DeepXDE environment at {python.parent.parent}: run "
              f"benchmarks/setup-deepxde.sh for the DeepXDE row)")
        return None
    threads = torch.get_num_threads()
    out = subprocess.run([str(python), str(HERE / "deepxde_step.py"),
                          "--network", network, "--points", str(points), "--steps", str(steps),
                          "--warmup", str(warmup), "--threads", str(threads)],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(network: str, args: argparse.Namespace, ctx) -> dict:
    from parallel_ms.training.loop import Trainer
    base = ["problem.case=paper-2d", *NETWORKS[network], f"sampling.interior={args.points}",
            f"sampling.boundary={args.points // 10}", "balancing.enabled=false",
            f"parallel.threads={args.threads}"]
    trainers = {name: Trainer(config.load(None, base + extra), ctx)
                for name, extra in VARIANTS.items()}
    times = time_steps(trainers, args.steps, args.warmup, ctx.comm)
    k = args.warmup + args.steps + 1
    flops = {name: step_flops(t, k) for name, t in trainers.items() if "compile" not in name}
    flops["PINN, jet + torch.compile"] = flops[JET]
    net = trainers[JET].s.net
    maps = net.B.shape[0] if hasattr(net, "B") else 1
    width = trainers[JET].cfg.network.width
    rows = maps * trainers[JET].s.objective.shard.n_interior * 4     # value, 2 grads, lap
    rate = parallel.allreduce_sum(matmul_rate(rows, width, torch.float32, ctx.device))
    peer = deepxde_step(network, args.points, args.steps, args.warmup) \
        if args.peer and ctx.size == 1 else None
    return {"seconds_per_step": times, "flops": flops, "matmul_gflops": rate / 1e9,
            "roofline_s": flops[JET] / rate, "deepxde": peer,
            "gauss_newton": gauss_newton_cost(trainers, base, args, ctx)}


class Timers:
    """Seconds spent inside functions wrapped on objects (``restore`` puts them back)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._saved: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, attr: str, label: str) -> None:
        fn = getattr(owner, attr)
        self._saved.append((owner, attr, fn))

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0
        setattr(owner, attr, timed)

    def restore(self) -> None:
        for owner, attr, fn in reversed(self._saved):
            setattr(owner, attr, fn)
        self._saved.clear()


def gauss_newton_cost(trainers: dict, base: list[str], args: argparse.Namespace, ctx) -> dict:
    """One CG iteration (J delta and J^T u on all local points, one all-reduce of a
    parameter vector) on the jet trainer's network and points, beside its Adam step; and one
    hybrid Gauss-Newton step on the Gauss-Newton network (2 x 32 tanh, 16 features per map;
    matrix-free CG capped at 20 iterations, and the explicit Cholesky variant) split into
    coarse solves, all-reduce and the rest (network); and a fresh interior point set of the
    hybrid trainer (sampling, the compression operator Q_delta, the upscaling's point data),
    which ``sampling.resample_every = 1`` costs every step."""
    from parallel_ms.training.loop import Trainer
    from parallel_ms.training.residuals import Residuals
    jet = trainers[JET]
    lin = Residuals(jet.s.objective, jet.s.forward).linearize()
    delta = torch.randn(sum(p.numel() for p in jet.params), dtype=jet.params[0].dtype)
    out: dict = {"cg_iteration_s": best_time(
        lambda: parallel.allreduce_replicated(lin.vjp(lin.jvp(delta))), repeats=args.steps),
        "steps": {}}
    for solver in ("cg", "cholesky"):
        trainer = Trainer(config.load(None, base + [
            "train.method=hybrid", "optimizer.kind=gauss-newton", "network.width=32",
            "network.features=16",
            f"optimizer.gn_solver={solver}", "optimizer.cg_max_iter=20"]), ctx)
        trainer.step(1)                                                   # warm-up
        timers = Timers()
        for attr in ("tangents", "adjoint", "states"):
            timers.wrap(trainer.s.objective.coupling.coarse, attr, "coarse solves")
        timers.wrap(parallel, "allreduce_replicated", "all-reduce")
        ctx.comm.barrier()
        t0 = time.perf_counter()
        info = trainer.optimizer.step(2).stats
        total = time.perf_counter() - t0
        timers.restore()
        split = dict(timers.seconds)
        split["network (the rest)"] = total - sum(split.values())
        out["steps"][solver] = {"seconds": total, "cg_iterations": info["cg_iters"],
                                "accepted": info["accepted"], "split": split}
    out["new_point_set_s"] = best_time(lambda: trainer.resample(1, args.points, adaptive=False),
                                       repeats=args.steps)
    return out


def gauss_newton_table(r: dict, adam_step: float) -> None:
    g = r["gauss_newton"]
    print(f"Gauss-Newton: one CG iteration (J.d and J^T.u on all local points + all-reduce) "
          f"{g['cg_iteration_s']:.4f} s = {g['cg_iteration_s'] / adam_step:.2f}x the Adam jet "
          f"step (target <= 3x)")
    for solver, st in g["steps"].items():
        split = ", ".join(f"{k} {v:.3f} s" for k, v in st["split"].items())
        print(f"  hybrid Gauss-Newton step ({solver}, 2 x 32 tanh, 16 features, float64): "
              f"{st['seconds']:.3f} s, "
              f"{st['cg_iterations']} CG iterations, accepted {st['accepted']}: {split}")
    print(f"  a fresh point set (sampling, Q_delta, upscaling data; hybrid): "
          f"{g['new_point_set_s']:.4f} s = "
          f"{g['new_point_set_s'] / g['steps']['cholesky']['seconds']:.3f}x the Cholesky step")


def table(network: str, r: dict) -> None:
    roof, ref = r["roofline_s"], r["seconds_per_step"][JET]
    print(f"\n{TITLES[network]}")
    print(f"{'step':<32}{'s/step':>9}{'/ jet':>8}{'GFLOP/s':>9}{'/ roofline':>12}")
    for name, t in r["seconds_per_step"].items():
        rate = "—" if r["flops"][name] is None else f"{r['flops'][name] / t / 1e9:.1f}"
        print(f"{name:<32}{t:>9.4f}{t / ref:>8.3f}{rate:>9}{t / roof:>11.2f}x")
    if r["deepxde"] is not None:
        t = r["deepxde"]["seconds_per_step"]
        name = f"DeepXDE {r['deepxde']['deepxde']}, PINN"
        print(f"{name:<32}{t:>9.4f}{t / ref:>8.3f}{'':>9}{t / roof:>11.2f}x")
    print(f"{'matmul roofline':<32}{roof:>9.4f}{roof / ref:>8.3f}{r['matmul_gflops']:>9.1f}"
          f"{1.0:>11.2f}x")
    s = r["seconds_per_step"]
    fast = min(s[JET], s["PINN, jet + torch.compile"])
    print(f"targets: fast path vs double backward {s['PINN, double backward'] / fast:.2f}x "
          f"(>= 2.5x); vs roofline {fast / roof:.2f}x (<= 1.5x); hybrid / PINN "
          f"{s['hybrid, lazy refresh'] / s[JET]:.3f} lazy, "
          f"{s['hybrid, every-step refresh'] / s[JET]:.3f} every step (<= 1.10)")
    gauss_newton_table(r, s[JET])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", nargs="+", choices=tuple(NETWORKS), default=list(NETWORKS))
    p.add_argument("--points", type=int, default=25000, help="interior points (boundary: 1/10)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: the "
                   "cores shared among the ranks on a node)")
    p.add_argument("--no-peer", dest="peer", action="store_false", help="skip DeepXDE")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    ctx = parallel.init("auto")
    results = {network: measure(network, args, ctx) for network in args.network}
    if ctx.is_root:
        mach = machine()
        print(f"machine: {mach['cpu']}, {mach['cores']} cores, device {mach['device']}, "
              f"{ctx.size} rank(s) x {torch.get_num_threads()} torch thread(s); torch "
              f"{mach['torch']}; paper-2d, {args.points} + {args.points // 10} points per step "
              f"(all ranks), float32, Adam")
        for network, r in results.items():
            table(network, r)
        write_json(args.json, {"machine": mach, "ranks": ctx.size, "points": args.points,
                               "networks": results})
    parallel.finalize()


if __name__ == "__main__":
    main()
