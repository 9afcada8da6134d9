"""The peer a user would pick instead: DeepXDE on the same case, network and number of points,
with its L-BFGS and its NysNewton-CG, for the same wall-clock budget on the same machine; its
errors measured exactly as ``run`` measures the project's (results §4.3, "The paper's network").

    benchmarks/setup-deepxde.sh                                    (once)
    .venv/bin/python benchmarks/deepxde_peer.py [--budget 1800] [--switch 900] [--seed 0]
        [--root runs/deepxde-peer] [--json F]

Runs benchmarks/deepxde_train.py in the DeepXDE environment: Adam then L-BFGS for --budget
seconds of training, then NysNewton-CG continued from the L-BFGS network at --switch seconds
until the same budget (the L-BFGS run up to --switch is the first part of that curve). Then,
in the project's environment, each saved network's rel. L2 / H1 errors against the project's
reference (parallel_ms.reference.metrics, the quadrature ``run`` uses), written as run
directories ROOT/lbfgs-seedS and ROOT/nncg-seedS (metrics.csv, summary.json) that
benchmarks/time_to_accuracy.py plots beside the project's runs. A part whose last snapshot
reached the budget is not rerun.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
from pathlib import Path

import torch
from torch import nn

from common import machine, write_json
from parallel_ms.config import NetworkConfig
from parallel_ms.fine.model import build_network
from parallel_ms.problems import Problem

HERE = Path(__file__).resolve().parent
COLUMNS = ("step", "optimizer", "loss", "train_time", "rel_l2", "rel_h1")


def network(problem: Problem, width: int, features: int, seed: int, hard_bc: bool = True,
            dtype: str = "float64") -> nn.Module:
    """The project's Ms-FF network (2 hidden layers per map, sigmas 1 and 1/eps)."""
    cfg = NetworkConfig(kind="msff", width=width, depth=2, features=features, hard_bc=hard_bc,
                        dtype=dtype, seed=seed)
    return build_network(cfg, problem)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The run's case, network, points and seed, shared by the peer and its worker."""
    p.add_argument("--case", default="paper-2d")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--points", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)


def deepxde_python() -> Path:
    """The DeepXDE environment's interpreter (benchmarks/setup-deepxde.sh, or $DEEPXDE_VENV)."""
    venv = Path(os.environ.get("DEEPXDE_VENV", HERE / ".venv-deepxde"))
    return venv / "bin" / "python"


def snapshots(out: Path) -> list[Path]:
    return sorted(out.glob("snap-*.pt"))


def train(part: str, args: argparse.Namespace, out: Path, extra: list[str]) -> None:
    """Run deepxde_train.py for ``part`` unless its snapshots already reach the budget."""
    done = snapshots(out)
    if done and torch.load(done[-1])["train_time"] >= args.budget:
        return
    for old in [*done, out / "failure.txt"]:
        old.unlink(missing_ok=True)
    subprocess.run([str(deepxde_python()), str(HERE / "deepxde_train.py"), "--optimizer", part,
                    "--case", args.case, "--width", str(args.width), "--features",
                    str(args.features), "--points", str(args.points), "--seed", str(args.seed),
                    "--budget", str(args.budget), "--every", str(args.every), "--out", str(out),
                    *extra], check=True)


def evaluate(snaps: list[Path], args: argparse.Namespace) -> dict[Path, dict]:
    """Rel. L2 / H1 errors of each snapshot's network against the project's reference, by
    snapshot."""
    from parallel_ms.config import Config
    from parallel_ms.problems import get_case
    from parallel_ms.reference.cache import load_or_solve
    from parallel_ms.reference.metrics import relative_errors, torch_point_function

    problem = get_case(args.case)
    r = Config().reference
    ref, _ = load_or_solve(problem, r.degree, r.resolution,
                           cache_dir=Path(r.cache_dir).expanduser())
    net = network(problem, args.width, args.features, args.seed)
    rows = {}
    for path in snaps:
        snap = torch.load(path)
        net.load_state_dict(snap["state"])
        l2, h1 = relative_errors(torch_point_function(net), ref)
        rows[path] = {"step": snap["iteration"], "optimizer": snap["optimizer"],
                      "loss": snap["loss"], "train_time": snap["train_time"], "rel_l2": l2,
                      "rel_h1": h1}
        print(f"  {path.parent.name}/{path.name}: {snap['optimizer']:6s} iteration "
              f"{snap['iteration']:6d}  {snap['train_time']:7.0f} s  loss {snap['loss']:.3e}  "
              f"rel. L2 {l2:.3e}  rel. H1 {h1:.3e}", flush=True)
    return rows


def write_run(run: Path, rows: list[dict], args: argparse.Namespace, label: str) -> None:
    """``rows`` as a run directory that benchmarks/time_to_accuracy.py reads."""
    with open(run / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    best = min(rows, key=lambda r: r["rel_l2"])
    summary = {"status": "completed", "method": "pinn", "case": args.case, "ranks": 1,
               "peer": label, "threads": os.cpu_count(), "steps": rows[-1]["step"],
               "wall_time_s": rows[-1]["train_time"], "rel_l2": rows[-1]["rel_l2"],
               "rel_h1": rows[-1]["rel_h1"], "smallest_rel_l2": best["rel_l2"]}
    (run / "summary.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(p)
    p.add_argument("--budget", type=float, default=1800.0, help="training seconds")
    p.add_argument("--switch", type=float, default=900.0,
                   help="NNCG starts from the L-BFGS network at this training time")
    p.add_argument("--every", type=float, default=90.0, help="seconds between snapshots")
    p.add_argument("--root", type=Path, default=Path("runs/deepxde-peer"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if not deepxde_python().exists():
        p.error(f"no DeepXDE environment at {deepxde_python().parent.parent}: run "
                f"benchmarks/setup-deepxde.sh first")
    lbfgs, nncg = (args.root / f"{name}-seed{args.seed}" for name in ("lbfgs", "nncg"))
    train("lbfgs", args, lbfgs, [])
    start = next((s for s in snapshots(lbfgs) if torch.load(s)["train_time"] >= args.switch),
                 None)
    if start is None:
        p.error(f"no L-BFGS snapshot at or after --switch {args.switch:g} s in {lbfgs}")
    train("nncg", args, nncg, ["--resume", str(start)])
    results = {}
    errors = evaluate(snapshots(lbfgs) + snapshots(nncg), args)   # each snapshot once
    for label, run, snaps in (("DeepXDE L-BFGS", lbfgs, snapshots(lbfgs)),
                              ("DeepXDE NNCG", nncg,
                               [s for s in snapshots(lbfgs) if s <= start] + snapshots(nncg))):
        rows = [errors[s] for s in snaps]
        write_run(run, rows, args, label)
        results[label] = rows
    failure = nncg / "failure.txt"
    stopped = {"DeepXDE NNCG": failure.read_text().strip() if failure.exists() else ""}
    print("| peer | iterations | training time (s) | last rel. L2 | smallest rel. L2 | stopped |")
    print("|---|---|---|---|---|---|")
    for label, rows in results.items():
        print(f"| {label} | {rows[-1]['step']} | {rows[-1]['train_time']:.0f} | "
              f"{rows[-1]['rel_l2']:.3g} | {min(r['rel_l2'] for r in rows):.3g} | "
              f"{stopped.get(label) or 'at the budget'} |")
    write_json(args.json, {"machine": machine(), "args": {k: str(v) for k, v in
                                                          vars(args).items()},
                           "runs": results, "stopped": stopped})


if __name__ == "__main__":
    main()
