"""Effectivity of the error estimate (parallel_ms/reference/estimate.py): estimate / true rel.
L2 error at every evaluation of training runs, for estimate meshes of several resolutions, and
the error of the corrected answer v + e_h.

    .venv/bin/python benchmarks/error_estimate.py [--cases paper-2d paper-1d-eps1_15
        paper-1d-eps0_01] [--methods pinn hybrid] [--seeds 0 1 2] [--cells-per-period 2 4 8]
        [--ranks 2] [--eval-every 5] [--set KEY=VALUE ...] [--root DIR] [--json F]

Each case trains with its measured Gauss-Newton settings (2D: the embedded default run,
parallel_ms/configs/default.toml; 1D: jobs/CASE.toml), seeds S for the network and the points,
as one ``mpiexec -n R`` job (this script with --worker), its result kept in --root (a run with
the same settings there is not repeated). At every evaluation the true errors
(against the cached reference) and, per estimate mesh, the estimate and its wall time are
recorded; at the last one also the corrected answer's errors. The table: per case, method and
mesh, the effectivity index (estimate / true rel. L2) over the evaluations where the true error
is below 0.5 (min, median, max), the share within a factor 2, and the corrected answer's rel.
L2 error against the network's at the last evaluation.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import machine, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: the evaluations counted in the effectivity table: a true error below this
BELOW = 0.5


def run_file(case: str) -> Path:
    """The case's measured Gauss-Newton settings."""
    job = ROOT / "jobs" / f"{case}.toml"
    return job if case != "paper-2d" else ROOT / "parallel_ms" / "configs" / "default.toml"


def worker(case: str, method: str, seed: int, cells: list[int], eval_every: int,
           sets: list[str], out: Path) -> None:
    from parallel_ms import config, parallel
    from parallel_ms.reference.estimate import ErrorEstimator
    from parallel_ms.reference.metrics import relative_errors
    from parallel_ms.training.loop import Callback, Trainer

    ctx = parallel.init("cpu")
    cfg = config.load(run_file(case), [f"train.method={method}", f"network.seed={seed}",
                                       f"sampling.seed={seed}", f"train.eval_every={eval_every}",
                                       "estimate.enabled=false", "train.best_by=loss",
                                       "output.fields=false",
                                       *sets])
    trainer = Trainer(cfg, ctx)
    estimators = {c: ErrorEstimator(trainer.s.problem, c, cfg.estimate.degree, comm=ctx.comm)
                  for c in cells}
    rows = []

    class Record(Callback):
        def on_step_end(self, trainer: Trainer, row: dict) -> None:
            if "rel_l2" not in row:
                return
            fn = trainer.point_function()
            entry = {"step": row["step"], "rel_l2": row["rel_l2"], "rel_h1": row["rel_h1"],
                     "train_time": row["train_time"], "estimates": {}}
            last = row["step"] == cfg.train.steps
            for c, estimator in estimators.items():
                est = estimator.estimate(fn)
                entry["estimates"][str(c)] = {
                    "rel_l2": est.rel_l2, "rel_h1": est.rel_h1, "seconds": est.seconds,
                    "dofs": est.correction.function_space().dim()}
                if last:            # the corrected answer: another reference-mesh evaluation
                    l2, h1 = relative_errors(fn, trainer.reference(), correction=est.correction)
                    entry["estimates"][str(c)].update(corrected_rel_l2=l2, corrected_rel_h1=h1)
            rows.append(entry)

    trainer.run(callbacks=[Record()])
    if ctx.is_root:
        out.write_text(json.dumps({"case": case, "method": method, "seed": seed,
                                   "ranks": ctx.size, "evaluations": rows}))
    parallel.finalize()


def launch(case: str, method: str, seed: int, cells: list[int], eval_every: int,
           sets: list[str], ranks: int, root: Path) -> dict:
    """The run's result, from ``root`` when a run with the same settings is there."""
    cmd = ["--cases", case, "--methods", method, "--seeds", str(seed), "--eval-every",
           str(eval_every), "--cells-per-period", *map(str, cells),
           *[a for s in sets for a in ("--set", s)]]
    kept = root / f"{case}-{method}-seed{seed}.json"
    if kept.exists() and json.loads(kept.read_text()).get("command") == cmd + [str(ranks)]:
        return json.loads(kept.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
                   OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        subprocess.run([os.environ.get("MPIEXEC", "mpiexec"), "--oversubscribe", "-n",
                        str(ranks), sys.executable, str(HERE / "error_estimate.py"), "--worker",
                        *cmd, "--out", str(out)],
                       check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        result = {**json.loads(out.read_text()), "command": cmd + [str(ranks)]}
    root.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps(result))
    return result


def table(runs: list[dict], cells: list[int]) -> list[dict]:
    """Per case, method and estimate mesh: effectivity over all seeds and evaluations with
    a true rel. L2 error below :data:`BELOW`; the last evaluation's corrected error."""
    out = []
    for case, method in dict.fromkeys((r["case"], r["method"]) for r in runs):
        group = [r for r in runs if (r["case"], r["method"]) == (case, method)]
        evals = [e for r in group for e in r["evaluations"] if e["rel_l2"] < BELOW]
        for c in map(str, cells):
            eff = np.array([e["estimates"][c]["rel_l2"] / e["rel_l2"] for e in evals])
            last = [r["evaluations"][-1] for r in group]
            out.append({
                "case": case, "method": method, "cells_per_period": int(c),
                "dofs": last[0]["estimates"][c]["dofs"], "evaluations": len(evals),
                "effectivity_min": float(eff.min()) if len(eff) else None,
                "effectivity_median": float(np.median(eff)) if len(eff) else None,
                "effectivity_max": float(eff.max()) if len(eff) else None,
                "within_factor_2": float(np.mean((eff >= 0.5) & (eff <= 2))) if len(eff)
                else None,
                "last_rel_l2": [e["rel_l2"] for e in last],
                "last_corrected_rel_l2": [e["estimates"][c]["corrected_rel_l2"] for e in last],
                "estimate_s": float(np.median([e["estimates"][c]["seconds"] for r in group
                                               for e in r["evaluations"]]))})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+",
                   default=["paper-2d", "paper-1d-eps1_15", "paper-1d-eps0_01"])
    p.add_argument("--methods", nargs="+", default=["pinn", "hybrid"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cells-per-period", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every run (after the case's own)")
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "error_estimate",
                   help="where each run's result is kept")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.cases[0], args.methods[0], args.seeds[0], args.cells_per_period,
               args.eval_every, args.set, args.out)
        return
    runs = []
    for case in args.cases:
        for method in args.methods:
            for seed in args.seeds:
                runs.append(launch(case, method, seed, args.cells_per_period, args.eval_every,
                                   args.set, args.ranks, args.root))
                last = runs[-1]["evaluations"][-1]
                print(f"  {case} {method} seed {seed}: last rel. L2 {last['rel_l2']:.3e}, "
                      + ", ".join(f"est({c}) {e['rel_l2']:.3e}"
                                  for c, e in last["estimates"].items()), flush=True)
    rows = table(runs, args.cells_per_period)
    mach = machine()
    print(f"\nmachine: {mach['cpu']}, {mach['cores']} cores; {args.ranks} ranks; seeds "
          f"{args.seeds}; effectivity = estimate / true rel. L2 over the evaluations (every "
          f"{args.eval_every} steps) with true rel. L2 < {BELOW}")
    print(f"{'case':>17}{'method':>7}{'c/p':>4}{'dofs':>8}{'n':>4}{'eff. min':>9}"
          f"{'median':>8}{'max':>7}{'in 2x':>7}{'last rel L2 (net -> corrected)':>44}{'est s':>7}")
    for r in rows:
        eff = ("{:>9.2f}{:>8.2f}{:>7.2f}{:>7.0%}".format(
            r["effectivity_min"], r["effectivity_median"], r["effectivity_max"],
            r["within_factor_2"]) if r["evaluations"] else f"{'-':>9}{'-':>8}{'-':>7}{'-':>7}")
        last = " ".join(f"{a:.1e}->{b:.1e}" for a, b in zip(r["last_rel_l2"],
                                                             r["last_corrected_rel_l2"]))
        print(f"{r['case']:>17}{r['method']:>7}{r['cells_per_period']:>4}{r['dofs']:>8}"
              f"{r['evaluations']:>4}{eff}  {last:>42}{r['estimate_s']:>7.2f}")
    write_json(args.json, {"machine": mach, "ranks": args.ranks, "seeds": args.seeds,
                           "eval_every": args.eval_every, "rows": rows, "runs": runs})


if __name__ == "__main__":
    main()
