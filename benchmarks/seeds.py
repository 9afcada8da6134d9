"""One run configuration over many seeds: does it give the same accuracy on every seed, and
does the error estimate tell the good runs from the bad ones?

    .venv/bin/python benchmarks/seeds.py [--config parallel_ms/configs/default.toml]
        [--seeds 0 1 ... 9] [--ranks 2] [--set KEY=VALUE ...] [--root DIR] [--json F]

Each seed S is one ``mpiexec -n R python -m parallel_ms run --config FILE --seed S`` (the seed
of the network and of the points); a seed whose run directory under --root already holds a
completed summary.json with the same configuration is not rerun; the run's printed output is
kept in its directory as output.txt. The table: per seed the best
iterate's rel. L2 / H1 errors, the error estimate (no reference used) and its effectivity (at
the best iterate, and its range over every step of the run that has both the estimate and the
true error, from metrics.csv), the corrected answer's rel. L2, the wall time; then median and
maximum, and how many seeds meet --target.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import machine, write_json

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("rel_l2", "rel_h1", "estimated_rel_l2", "corrected_rel_l2")


def run_seed(config: Path | None, seed: int, ranks: int, sets: list[str], root: Path,
             select: tuple[str, ...] = ()) -> dict:
    """The summary.json of seed ``seed``'s run (run now unless it completed before) with the
    file ``config`` (None: the case defaults of the case and method in ``select``, e.g.
    ``("--case", NAME, "--method", METHOD)``)."""
    name = f"seed{seed}"
    args = ["run", *(["--config", str(config)] if config else []), *select, "--seed", str(seed),
            "--set", f"output.root={root}", "--set", f"output.name={name}",
            "--set", "output.fields=false", *[a for s in sets for a in ("--set", s)]]
    stamp = root / name / "command.json"
    summary = root / name / "summary.json"
    if (stamp.exists() and json.loads(stamp.read_text()) == args and summary.exists()
            and json.loads(summary.read_text()).get("status") == "completed"):
        return json.loads(summary.read_text())
    launcher = [os.environ.get("MPIEXEC", "mpiexec"), "--oversubscribe", "-n", str(ranks)]
    (root / name).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    command = [*launcher, sys.executable, "-m", "parallel_ms", *args]
    with open(root / name / "output.txt", "w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log,
                              env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
                                       OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
    if done.returncode:     # the run printed its own one-line error on stderr
        raise SystemExit(f"seed {seed}: the run failed (exit {done.returncode}): "
                         f"{' '.join(command)}; its output: {root / name / 'output.txt'}")
    stamp.write_text(json.dumps(args))
    out = json.loads(summary.read_text())
    out["command_wall_s"] = time.perf_counter() - t0
    summary.write_text(json.dumps(out, indent=2))
    return out


def effectivities(metrics: Path) -> list[float]:
    """Estimate / true rel. L2 at every step of a run's metrics.csv that has both."""
    with open(metrics, newline="") as f:
        return [float(r["estimated_rel_l2"]) / float(r["rel_l2"]) for r in csv.DictReader(f)
                if r.get("estimated_rel_l2") and r.get("rel_l2")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "parallel_ms/configs/default.toml")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--target", type=float, default=5e-2, help="rel. L2 every seed should reach")
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "seeds")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    root = args.root.resolve()
    rows = []
    for seed in args.seeds:
        s = run_seed(args.config.resolve(), seed, args.ranks, args.set, root)
        eff = effectivities(root / f"seed{seed}" / "metrics.csv")
        rows.append({"seed": seed, **{k: s.get(k) for k in KEYS},
                     "wall_s": s.get("command_wall_s"), "best_step": s.get("best_step"),
                     "effectivity_range": [min(eff), max(eff)] if eff else None})
        print(f"  seed {seed}: rel. L2 {s['rel_l2']:.3e}", flush=True)
    mach = machine()
    print(f"\nmachine: {mach['cpu']}, {mach['cores']} cores; {args.ranks} ranks; "
          f"{args.config.name} {' '.join(args.set)}")
    print(f"{'seed':>5}{'rel L2':>10}{'rel H1':>10}{'est. L2':>10}{'est/true':>9}"
          f"{'all steps':>12}{'corrected':>11}{'best step':>10}{'wall s':>8}")
    for r in rows:
        est = r["estimated_rel_l2"]
        print(f"{r['seed']:>5}{r['rel_l2']:>10.3e}{r['rel_h1']:>10.3e}"
              + (f"{est:>10.3e}{est / r['rel_l2']:>9.3f}"
                 f"{'{:.3f}-{:.3f}'.format(*r['effectivity_range']):>12}"
                 f"{r['corrected_rel_l2']:>11.3e}"
                 if est is not None and r["effectivity_range"] else
                 f"{'-':>10}{'-':>9}{'-':>12}{'-':>11}")
              + f"{r['best_step']:>10}{r['wall_s'] or float('nan'):>8.0f}")
    l2 = np.array([r["rel_l2"] for r in rows])
    print(f"median {np.median(l2):.3e}, max {l2.max():.3e}; {int((l2 <= args.target).sum())} "
          f"of {len(l2)} seeds at rel. L2 <= {args.target:g}")
    write_json(args.json, {"machine": mach, "ranks": args.ranks, "config": str(args.config),
                           "set": args.set, "rows": rows, "median_rel_l2": float(np.median(l2)),
                           "max_rel_l2": float(l2.max())})


if __name__ == "__main__":
    main()
