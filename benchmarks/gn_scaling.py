"""Scaling of one Gauss-Newton step per curvature solver and per part, measured and modeled.

Measured: the explicit Jacobian, the rest of the solver's set-up (Gram matrix / kernel and
their sums over ranks), the solves, and the trial evaluations of the line search / damping
loop, on R ranks for R in --ranks; strong (fixed global points) and weak (points proportional
to the ranks) scaling:

    .venv/bin/python benchmarks/gn_scaling.py [--ranks 1 2] [--solvers cholesky woodbury cg]
        [--network default|paper|100k] [--points N] [--steps 2] [--kinds strong weak] [--json F]

The run is the embedded default run (parallel_ms/configs/default.toml: hybrid, paper-2d,
Gauss-Newton, fresh points every step) with ``--network paper`` the paper's Ms-FF 2 x 128 with
64 features (33,281 parameters), ``--network 100k`` 2 x 256 (99,329), instead of its
4,801-parameter network. Each R runs as its own ``mpiexec -n R`` job (this script with
--worker), one torch thread per rank; the parts are timed by wrapping the solver's methods
(maxima over ranks, seconds per step after one warm-up step), and the trials and CG's operator
applications per step are counted. Efficiency: strong T(1) / (R T(R)), weak T(1) / T(R).

The collectives' latency and bandwidth (2 ranks; MPI_Allreduce of 8 B .. 64 MiB, fitted by
seconds = alpha + beta bytes; beside it the solvers' replicated sum, a reduce and a broadcast):

    .venv/bin/python benchmarks/gn_scaling.py --collectives [--json F]

Modeled (parallel_ms/training/optimizers/cost_model.py, the model of ``gn_solver = "auto"``;
no training, seconds): the step per solver and part at 1, 2 and the --project rank counts on
a machine of cost_model.MACHINES, for the default, paper and 100k networks, strong scaling at
6,000 and 60,000 interior points and weak at 6,000 per rank, with the solver's memory per rank
(its ``memory()``), whether it fits the machine's, and the fastest solver that fits per rank
count; with --from-json, the model on this machine beside a measurement written by --json
(model / measured per solver and part, at the measurement's own counts per step):

    .venv/bin/python benchmarks/gn_scaling.py --project 8 64 512 [--machine cpu-cluster|gpu]
        [--from-json F] [--json F]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from common import best_time, machine, time_method, write_json

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent / "parallel_ms/configs/default.toml"
NETWORKS = {"default": [], "paper": ["network.width=128", "network.features=64"],
            "100k": ["network.width=256", "network.features=64"]}
PARTS = ("jacobian", "setup", "solve", "trials")
#: the model's parts (cost_model.PARTS) that each measured part times
MEASURED_AS = {"jacobian": ("jacobian",), "setup": ("gram", "reduction"),
               "solve": ("factorisation", "solve"), "trials": ("trials",)}
#: the solvers of a projection
SOLVERS = ("cholesky", "scalapack", "woodbury", "cg")
#: the projections' scalings: (kind, global interior points (strong) or per rank (weak))
PROJECTED = (("strong", 6000), ("strong", 60000), ("weak", 6000))
#: message sizes of --collectives: 8 B .. 64 MiB
MESSAGES = [2 ** k for k in range(3, 27)]


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
    cfg = config.load(DEFAULT, [f"optimizer.gn_solver={solver}", f"sampling.interior={points}",
                                "parallel.threads=1", "train.steps=1000", *NETWORKS[network]])
    trainer = Trainer(cfg, ctx)
    trainer.resample_if_due(1)
    trainer.step(1)
    totals.update(dict.fromkeys(totals, 0.0))
    counts = {"trials": 0.0, "products": 0.0}
    ctx.comm.barrier()
    t0 = time.perf_counter()
    for k in range(2, steps + 2):
        trainer.resample_if_due(k)
        row = trainer.step(k)
        counts["trials"] += row["trials"] / steps
        counts["products"] += row["cg_iters"] / steps
    ctx.comm.barrier()
    step = (time.perf_counter() - t0) / steps
    totals["setup"] = totals.pop("bind") - totals["jacobian"]
    share = {k: ctx.comm.allreduce(v / steps, op=MPI.MAX) for k, v in totals.items()}
    if ctx.is_root:
        out.write_text(json.dumps({
            "solver": solver, "ranks": ctx.size, "points": trainer.s.objective.shard.n_interior,
            "parameters": sum(p.numel() for p in trainer.params), "step_s": step, **share,
            "counts": counts}))
    parallel.finalize()


def collectives_worker(out: Path) -> None:
    """Per message size: seconds of one MPI_Allreduce and of one replicated sum of float64s
    (:func:`~parallel_ms.training.optimizers.collectives.replicated_sum`, as the solvers sum)
    over all ranks, maxima over ranks, best of 3 repeats of up to 100 calls."""
    import numpy as np
    import torch
    from mpi4py import MPI

    from parallel_ms.training.optimizers.collectives import replicated_sum
    comm = MPI.COMM_WORLD

    def per_call(fn: Callable[[], object], calls: int) -> float:
        def block() -> None:
            comm.Barrier()
            for _ in range(calls):
                fn()
        return comm.allreduce(best_time(block, repeats=3), op=MPI.MAX) / calls

    rows = []
    for nbytes in MESSAGES:
        x = torch.ones(nbytes // 8, dtype=torch.float64)
        send, recv = x.numpy(), np.empty(nbytes // 8)
        calls = max(1, min(100, 2 ** 22 // nbytes))
        rows.append({"bytes": nbytes,
                     "allreduce": per_call(lambda: comm.Allreduce(send, recv), calls),
                     "replicated_sum": per_call(lambda: replicated_sum(x, comm), calls)})
    if comm.rank == 0:
        out.write_text(json.dumps({"ranks": comm.size, "rows": rows}))


def mpiexec(ranks: int, args: list[str]) -> dict:
    """This script as a worker with ``args`` under ``mpiexec -n ranks``: its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        cmd = [os.environ.get("MPIEXEC", "mpiexec"), "--oversubscribe", "-n", str(ranks),
               sys.executable, str(HERE / "gn_scaling.py"), "--worker", *args,
               "--out", str(out)]
        subprocess.run(cmd, check=True, env=env, cwd=HERE.parent)
        return json.loads(out.read_text())


def launch(solver: str, network: str, ranks: int, points: int, steps: int) -> dict:
    """One measured run (:func:`worker`) on ``ranks`` ranks."""
    return mpiexec(ranks, ["--solvers", solver, "--network", network, "--points", str(points),
                           "--steps", str(steps)])


def measure(args: argparse.Namespace) -> None:
    """The measured tables (and their JSON)."""
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
              + "".join(f"{part:>10}" for part in PARTS) + f"{'trials/step':>12}")
        for r in rows:
            t1 = next(q["step_s"] for q in rows if q["solver"] == r["solver"] and q["ranks"] == 1
                      ) if any(q["ranks"] == 1 for q in rows) else float("nan")
            eff = t1 / (r["ranks"] * r["step_s"]) if kind == "strong" else t1 / r["step_s"]
            print(f"{r['solver']:>9}{r['ranks']:>6}{r['points']:>8}{r['parameters']:>8}"
                  f"{r['step_s']:>9.2f}{eff:>7.0%}"
                  + "".join(f"{r[part]:>10.2f}" for part in PARTS)
                  + f"{r['counts']['trials']:>12.1f}")
    write_json(args.json, {"machine": mach, "network": args.network, **runs})


def collectives(json_path: Path | None) -> None:
    """--collectives: the all-reduce's latency and bandwidth on 2 ranks, fitted, and the
    replicated sum beside its model (twice the all-reduce)."""
    from parallel_ms.training.optimizers.cost_model import MACHINES, Link
    data = mpiexec(2, ["--collectives"])
    rows = data["rows"]
    link = Link.fit([r["bytes"] for r in rows], [r["allreduce"] for r in rows])
    model = replace(MACHINES["this"], intra=link, inter=link)
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores; MPI over {data['ranks']} ranks; "
          f"seconds per call (maxima over ranks, best of 3)")
    print(f"fit of MPI_Allreduce: alpha = {link.alpha * 1e6:.3g} us, "
          f"beta = 1 / ({1 / link.beta / 1e9:.3g} GB/s)")
    print(f"{'bytes':>10}{'allreduce':>12}{'fit':>12}{'repl. sum':>12}{'model':>12}")
    for r in rows:
        print(f"{r['bytes']:>10}{r['allreduce']:>12.3g}"
              f"{model.allreduce(r['bytes'], data['ranks']):>12.3g}{r['replicated_sum']:>12.3g}"
              f"{model.replicated_sum(r['bytes'], data['ranks']):>12.3g}")
    write_json(json_path, {"machine": mach, **data, "alpha": link.alpha, "beta": link.beta})


@lru_cache(maxsize=None)
def sizes(network: str, points: int, ranks: int) -> tuple[float, float]:
    """(parameters, residual rows per rank) of the default run with ``network`` and ``points``
    global interior points on ``ranks`` ranks, as the resource guard counts them."""
    from parallel_ms import config, resources
    from parallel_ms.problems import get_case
    cfg = config.load(DEFAULT, [f"sampling.interior={points}", *NETWORKS[network]])
    problem = get_case(cfg.problem.case)
    return (float(resources.parameter_count(cfg, problem, cfg.outputs)),
            resources.curvature_rows(cfg, problem.dim, ranks))


def project(ranks: list[int], machine_name: str) -> list[dict[str, Any]]:
    """The modeled step per network, scaling, solver and rank count on the named machine."""
    from parallel_ms.training.optimizers.cost_model import ITEM, MACHINES, step
    from parallel_ms.training.optimizers.registry import curvature_solver
    m, out = MACHINES[machine_name], []
    for network in NETWORKS:
        for kind, points in PROJECTED:
            for solver in SOLVERS:
                memory = curvature_solver(solver).memory
                for r in ranks:
                    total = points * r if kind == "weak" else points
                    p, rows = sizes(network, total, r)
                    parts = step(solver, p, rows, r, m)
                    need = memory(p, rows, ITEM, r)
                    out.append({"network": network, "parameters": p, "kind": kind,
                                "scaling_points": points, "points": total, "solver": solver,
                                "ranks": r, "rows": rows,
                                **parts, "step_s": sum(parts.values()), "memory": need,
                                "fits": need <= m.memory})
    return out


def print_projection(rows: list[dict[str, Any]], ranks: list[int], machine_name: str) -> None:
    """One table per network and scaling, and the fastest solver that fits per rank count."""
    from parallel_ms.training.optimizers.cost_model import PARTS as MODEL_PARTS
    from parallel_ms.training.optimizers.cost_model import STEP
    print(f"modeled Gauss-Newton step on {machine_name} (parallel_ms/training/optimizers/"
          f"cost_model.py), {STEP.trials:g} trials (solves) and {STEP.products:g} CG products "
          f"per step; seconds per part, the solver's memory per rank (memory()) and whether "
          f"it fits the machine's")
    for network, kind, points in dict.fromkeys(block_key(r) for r in rows):
        block = [r for r in rows if block_key(r) == (network, kind, points)]
        print(f"\n{network} network ({block[0]['parameters']:,.0f} parameters), {kind} scaling, "
              f"{points:,} interior points{' per rank' if kind == 'weak' else ''}")
        print(f"{'solver':>9}{'ranks':>6}{'rows/rank':>10}"
              + "".join(f"{part if len(part) < 10 else part[:6] + '.':>10}"
                        for part in MODEL_PARTS)
              + f"{'s/step':>10}{'GiB/rank':>10}{'fits':>5}")
        for r in block:
            print(f"{r['solver']:>9}{r['ranks']:>6}{r['rows']:>10.0f}"
                  + "".join(f"{r[part]:>10.3g}" for part in MODEL_PARTS)
                  + f"{r['step_s']:>10.3g}{r['memory'] / 2 ** 30:>10.3g}"
                  f"{'yes' if r['fits'] else 'no':>5}")
        print("fastest that fits: " + "; ".join(
            f"{n}: {winner(block, n)}" for n in ranks))


def block_key(row: dict[str, Any]) -> tuple[str, str, int]:
    """The table of a projected row: (network, scaling kind, its points: global (strong) or
    per rank (weak))."""
    return row["network"], row["kind"], row["scaling_points"]


def winner(block: list[dict[str, Any]], ranks: int) -> str:
    """The fastest solver that fits at ``ranks`` ranks, with its time."""
    fits = [r for r in block if r["ranks"] == ranks and r["fits"]]
    if not fits:
        return "none fits"
    best = min(fits, key=lambda r: r["step_s"])
    return f"{best['solver']} {best['step_s']:.3g} s"


def check(path: Path) -> list[dict[str, Any]]:
    """The model on this machine beside each run of a measurement (--json of this script), at
    the run's counts per step where it has them (else cost_model.STEP's)."""
    from parallel_ms.training.optimizers.cost_model import MACHINES, STEP, Counts, step
    data, out = json.loads(path.read_text()), []
    for kind in ("strong", "weak"):
        for run in data.get(kind, []):
            _, rows = sizes(data["network"], run["points"], run["ranks"])
            counts = Counts(**run["counts"]) if "counts" in run else STEP
            parts = step(run["solver"], run["parameters"], rows, run["ranks"],
                         MACHINES["this"], counts)
            model = {part: sum(parts[k] for k in MEASURED_AS[part]) for part in PARTS}
            out.append({"kind": kind, "solver": run["solver"], "ranks": run["ranks"],
                        "points": run["points"], "rows": rows, "counts": asdict(counts),
                        "counted": "counts" in run,
                        "model": {**model, "step_s": sum(parts.values())},
                        "measured": {k: run[k] for k in (*PARTS, "step_s")}})
    return out


def print_check(rows: list[dict[str, Any]], path: Path) -> None:
    """Model, measured and their ratio per run and measured part."""
    print(f"\ncheck: the model on this machine (cost_model.MACHINES['this']) against {path}; "
          f"seconds per step: model, measured, model / measured; trials and CG products per "
          f"step measured (* where the file has none: cost_model.STEP's); cg's setup is its "
          f"gradient, which no measured part times (GaussNewton.step asks for it between bind "
          f"and solve)")
    print(f"{'kind':>7}{'solver':>10}{'ranks':>6}{'trials':>8}{'products':>9}"
          + "".join(f"{part:>25}" for part in (*PARTS, "step")))
    for r in rows:
        mark = "" if r["counted"] else "*"
        cells = "".join(
            f"{r['model'][k]:>9.3g}{r['measured'][k]:>9.3g}{ratio(r, k):>7.2f}"
            for k in (*PARTS, "step_s"))
        print(f"{r['kind']:>7}{r['solver']:>10}{r['ranks']:>6}"
              f"{r['counts']['trials']:>7.3g}{mark:1}{r['counts']['products']:>8.3g}{mark:1}"
              + cells)


def ratio(row: dict[str, Any], part: str) -> float:
    """Model / measured of a checked run's part (nan where nothing was measured)."""
    measured = row["measured"][part]
    return row["model"][part] / measured if measured > 0 else math.nan


def model(args: argparse.Namespace) -> None:
    """--project and --from-json: the projection and the check (and their JSON)."""
    from parallel_ms.training.optimizers.cost_model import MACHINES, STEP
    out: dict[str, Any] = {"machine": args.machine, "rates": asdict(MACHINES[args.machine]),
                           "step": asdict(STEP)}
    if args.project is not None:
        ranks = sorted({1, 2, *args.project})
        out["ranks"] = ranks
        out["projection"] = project(ranks, args.machine)
        print_projection(out["projection"], ranks, args.machine)
    if args.from_json is not None:
        out["check"] = check(args.from_json)
        print_check(out["check"], args.from_json)
    write_json(args.json, out)


def main() -> None:
    from parallel_ms.training.optimizers.cost_model import MACHINES
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--solvers", nargs="+", default=["cholesky", "woodbury", "cg"])
    p.add_argument("--network", choices=list(NETWORKS), default="default")
    p.add_argument("--points", type=int, default=6000, help="global interior points for R = 1")
    p.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up step")
    p.add_argument("--kinds", nargs="+", choices=["strong", "weak"], default=["strong", "weak"])
    p.add_argument("--collectives", action="store_true",
                   help="measure the all-reduce's latency and bandwidth on 2 ranks")
    p.add_argument("--project", type=int, nargs="*", metavar="R",
                   help="model the step at 1, 2 and these rank counts (no training)")
    p.add_argument("--machine", choices=list(MACHINES), default="cpu-cluster",
                   help="the projection's machine (cost_model.MACHINES)")
    p.add_argument("--from-json", type=Path, default=None,
                   help="check the model against this measurement (--json of this script)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker and args.collectives:
        collectives_worker(args.out)
    elif args.worker:
        worker(args.solvers[0], args.network, args.points, args.steps, args.out)
    elif args.collectives:
        collectives(args.json)
    elif args.project is not None or args.from_json is not None:
        model(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
