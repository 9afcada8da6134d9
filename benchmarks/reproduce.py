"""The paper's accuracy experiments, and the project's variants beyond them, run with the
project's own command and tabulated in the paper's format.

    .venv/bin/python benchmarks/reproduce.py [TABLE ...] [--scale reduced] [--seeds 0 1 2]
                                             [--jobs 2] [--ranks 1] [--rows REGEX]
                                             [--root runs/reproduce] [--json F]

Every (row, seed) of a table is one ``python -m parallel_ms run --config jobs/<case>.toml
--set ...`` (the exact command is printed and logged), ``--jobs`` of them at a time with
``cores / (jobs x ranks)`` torch threads each (``--ranks R`` runs each under ``mpiexec -n R``,
in a directory of its own; ``--rows`` keeps the rows whose name matches). A run
whose directory already holds a summary for the same resolved configuration (up to the torch
thread count) is not repeated, so a table can be re-printed, or extended by seeds or rows run
with another ``--jobs``, without recomputing it. Each table is
printed as Markdown (mean ± standard deviation over the seeds, the paper's numbers beside):
rel. L2 and H1 errors of the best iterate (smallest fine-problem loss (3.24); with the hard
boundary condition the residual alone, the paper's rule), the rel. L2 error at the last step,
steps and wall time (training and validation); the time tables add the training time
(validation excluded) to each target error. The error
histories are plotted to ``<root>/<scale>/<table>.png`` (``<table>-n<R>.png`` on R ranks).

Tables: ``1d-eps0_01`` and ``1d-eps1_15`` (paper Figs. 1-2: hybrid vs Ms-PINN), ``2d``
(Table 1), ``beyond-1d`` and ``beyond-2d`` (tau_2 continuation, residual-based resampling,
block-tensor upscaling), ``tta-1d-eps1_15`` and ``tta-1d-eps0_01``
and ``tta-2d`` (time to accuracy: Adam, Adam -> L-BFGS, Gauss-Newton; Ms-FF and two-scale
networks).
Scales: ``paper`` (the job files as they are), ``reduced`` (what the results page reports on
a 2-core machine) and ``quick`` (a few
dozen steps: checks that everything runs).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"

MLP = ("network.kind=mlp", "network.width=64", "network.depth=8", "optimizer.lr=1e-3")
LBFGS = ("optimizer.kind=adam-lbfgs", "optimizer.lbfgs_max_iter=1", "optimizer.switch_tol=0.5")
#: Adam -> L-BFGS switching at the plateau switch's first check, step 1,000 (2 x its window):
#: the 2,000-step runs of 1D eps = 0.01 would not switch before their end otherwise
LBFGS_AT_1000 = (*LBFGS, "optimizer.switch_tol=1")
#: Gauss-Newton as measured best on 1D (docs/gauss-newton.md): 2 x 32 tanh, 16 features per
#: map, 4000 points, float64
GN = ("optimizer.kind=gauss-newton", "network.width=32", "network.features=16",
      "sampling.interior=4000", "train.steps=40", "train.eval_every=2")
#: Gauss-Newton as measured best on 2D (jobs/paper-2d.toml on top of the table's job file):
#: 2 x 48 tanh, 24 features per map, hard boundary condition, 6,000 fresh points every step
GN_2D = ("optimizer.kind=gauss-newton", "network.width=48", "network.features=24",
         "network.hard_bc=true", "sampling.interior=6000", "sampling.boundary=800",
         "sampling.resample_every=1", "sampling.adaptive_every=0", "train.eval_every=10",
         "train.log_every=1", "output.checkpoint_every=10")
#: the two-scale network N_0(x) + eps N_1(x, x/eps) with a soft boundary condition
TWO_SCALE = ("network.kind=two-scale", "network.harmonics=2", "network.hard_bc=false")


@dataclass(frozen=True)
class Row:
    name: str
    overrides: tuple[str, ...]
    #: the paper's (rel. L2, rel. H1, iterations, seconds); None where it gives none
    paper: tuple[float | None, float | None, int | None, float | None] | None = None


@dataclass(frozen=True)
class Table:
    title: str
    config: str                                    #: job file in jobs/
    rows: tuple[Row, ...]
    scales: dict[str, tuple[str, ...]] = field(default_factory=dict)
    note: str = ""                                 #: where the paper's numbers come from
    time_axis: bool = False                        #: figure: rel. L2 against wall time
    #: errors whose first training time (validation excluded) the table reports
    targets: tuple[float, ...] = ()


SCALES_1D_001 = {"paper": (), "reduced": ("train.steps=2000",),
                 "quick": ("train.steps=60", "train.eval_every=30")}
SCALES_1D_115 = {"paper": (), "reduced": ("train.steps=3000",),
                 "quick": ("train.steps=60", "train.eval_every=30")}
SCALES_TTA_1D = {"paper": (), "reduced": ("train.steps=3000", "train.eval_every=250"),
                 "quick": ("train.steps=20", "train.eval_every=10")}
SCALES_2D = {"paper": (),
             "reduced": ("sampling.interior=2000", "sampling.boundary=400",
                         "sampling.adaptive_every=100", "train.steps=2000",
                         "train.eval_every=500", "train.log_every=100",
                         "output.checkpoint_every=500"),
             "quick": ("sampling.interior=1500", "sampling.boundary=300",
                       "sampling.adaptive_every=20", "train.steps=40", "train.eval_every=40")}
SCALES_TTA_2D = {**SCALES_2D, "reduced": (*SCALES_2D["reduced"], "train.eval_every=100")}

TABLES = {
    "1d-eps0_01": Table("1D, eps = 0.01 (paper Fig. 2)", "paper-1d-eps0_01-adam.toml", (
        Row("hybrid", ("train.method=hybrid",), (0.1, None, None, None)),
        Row("Ms-PINN", ("train.method=pinn",), (10.0, None, None, None))), SCALES_1D_001,
        "Paper (its text, after up to 2e5 iterations): hybrid about 0.1, about two orders of "
        "magnitude better than Ms-PINN (hence 10)."),
    "1d-eps1_15": Table("1D, eps = 1/15 (paper Fig. 1)", "paper-1d-eps1_15-adam.toml", (
        Row("hybrid", ("train.method=hybrid",), (0.3, None, None, None)),
        Row("Ms-PINN", ("train.method=pinn",), (1e-2, None, None, None))), SCALES_1D_115,
        "Paper (its text, after up to 2e5 iterations): hybrid about 0.3 (the consistency gap "
        "of the upscaled coarse problem at this eps), Ms-PINN about 1e-2."),
    "2d": Table("2D, eps = 0.1 (paper Table 1)", "paper-2d-adam.toml", (
        Row("Hybrid Ms-PINN", ("train.method=hybrid",), (1.28e-2, 2.23e-2, 77478, 554)),
        Row("Hybrid MLP", ("train.method=hybrid", *MLP), (1.42e-2, 1.44e-2, 139400, 1725)),
        Row("Ms-PINN", ("train.method=pinn",), (1.97e-2, 2.20e-2, 70009, 354)),
        Row("MLP PINN", ("train.method=pinn", *MLP), (1.71e-2, 1.89e-2, 150000, 1221))),
        SCALES_2D, "Paper: Table 1, averages over 5 seeds, A100 GPU, JAX + FEniCS; MLP PINN: "
        "1 of the 5 runs worked (its numbers)."),
    "beyond-1d": Table("Beyond the paper: 1D, eps = 1/15", "paper-1d-eps1_15-adam.toml", (
        Row("hybrid, Adam (paper; the row of 1d-eps1_15)", ("train.method=hybrid",)),
        Row("hybrid, Adam, tau_2 continuation from 50 %",
            ("train.method=hybrid", "coupling.continuation=0.5")),
        Row("hybrid, Adam, residual-based resampling every 100",
            ("train.method=hybrid", "sampling.adaptive_every=100")),
        Row("Ms-PINN, Adam (paper; the row of 1d-eps1_15)", ("train.method=pinn",))),
        SCALES_1D_115),
    "beyond-2d": Table("Beyond the paper: 2D, eps = 0.1, hybrid Ms-PINN", "paper-2d-adam.toml", (
        Row("isotropic K~, resampling (Table 1 row)", ("train.method=hybrid",)),
        Row("block-tensor K~, 5 x 5 blocks",
            ("train.method=hybrid", "coupling.upscaling=block-tensor", "coupling.blocks=[5,5]")),
        Row("isotropic K~, fixed points", ("train.method=hybrid", "sampling.adaptive_every=0"))),
        SCALES_2D),
    "tta-1d-eps1_15": Table("Time to accuracy: 1D, eps = 1/15", "paper-1d-eps1_15-adam.toml", (
        Row("Ms-PINN, Adam (paper)", ("train.method=pinn",)),
        Row("Ms-PINN, Adam -> L-BFGS", ("train.method=pinn", *LBFGS)),
        Row("hybrid, Adam (paper)", ("train.method=hybrid",)),
        Row("hybrid, Adam -> L-BFGS", ("train.method=hybrid", *LBFGS)),
        Row("Ms-PINN, Gauss-Newton", ("train.method=pinn", *GN)),
        Row("hybrid, Gauss-Newton", ("train.method=hybrid", *GN)),
        Row("hybrid, Gauss-Newton, tau_2 continuation from 50 %",
            ("train.method=hybrid", *GN, "coupling.continuation=0.5"))),
        SCALES_TTA_1D, "Gauss-Newton rows keep their own step counts (40) at every scale.",
        time_axis=True, targets=(1e-2, 1e-3, 1e-4)),
    "tta-1d-eps0_01": Table("Time to accuracy: 1D, eps = 0.01", "paper-1d-eps0_01-adam.toml", (
        Row("hybrid, Adam (paper; the row of 1d-eps0_01)", ("train.method=hybrid",)),
        Row("Ms-PINN, Adam (paper; the row of 1d-eps0_01)", ("train.method=pinn",)),
        Row("hybrid, Adam -> L-BFGS", ("train.method=hybrid", *LBFGS_AT_1000)),
        Row("Ms-PINN, Adam -> L-BFGS", ("train.method=pinn", *LBFGS_AT_1000)),
        Row("Ms-PINN, Gauss-Newton, Ms-FF network", ("train.method=pinn", *GN)),
        Row("Ms-PINN, Gauss-Newton, two-scale network", ("train.method=pinn", *GN, *TWO_SCALE)),
        Row("hybrid, Gauss-Newton, two-scale network",
            ("train.method=hybrid", *GN, *TWO_SCALE)),
        Row("hybrid, Gauss-Newton, two-scale network, tau_2 continuation from 50 %",
            ("train.method=hybrid", *GN, *TWO_SCALE, "coupling.continuation=0.5"))),
        SCALES_1D_001, "Gauss-Newton rows keep their own step counts (40) at every scale.",
        time_axis=True, targets=(1e-2, 1e-3, 1e-4)),
    "tta-2d": Table("Time to accuracy: 2D, eps = 0.1", "paper-2d-adam.toml", (
        Row("Ms-PINN, Adam (paper)", ("train.method=pinn",)),
        Row("hybrid, Adam (paper)", ("train.method=hybrid",)),
        Row("Ms-PINN, Adam -> L-BFGS", ("train.method=pinn", *LBFGS_AT_1000)),
        Row("hybrid, Adam -> L-BFGS", ("train.method=hybrid", *LBFGS_AT_1000)),
        Row("Ms-PINN, Gauss-Newton (jobs/paper-2d.toml)",
            ("train.method=pinn", *GN_2D, "optimizer.gn_momentum=0.9", "train.steps=220")),
        Row("hybrid, Gauss-Newton, tau_2 continuation from 50 % (the default run)",
            ("train.method=hybrid", *GN_2D, "train.steps=40", "coupling.continuation=0.5"))),
        SCALES_TTA_2D, "Gauss-Newton rows keep their own point and step counts at every scale "
        "(220 and 40 steps: about 26 and 6 minutes on 2 ranks).",
        time_axis=True, targets=(0.1, 0.05, 1.28e-2)),
}


@dataclass
class Run:
    table: str
    row: Row
    seed: int
    path: Path
    overrides: list[str]

    def command(self, ranks: int) -> list[str]:
        sets = [a for o in self.overrides for a in ("--set", o)]
        cmd = [sys.executable, "-m", "parallel_ms", "run", "--config",
               str(JOBS / TABLES[self.table].config), *sets]
        launcher = os.environ.get("MPIEXEC", "mpiexec")
        return [launcher, "-n", str(ranks), *cmd] if ranks > 1 else cmd

    def cached(self) -> dict[str, Any] | None:
        """The run's summary if it was made with the same resolved configuration, up to its
        torch thread count (``--jobs`` sets it; it changes the run's time, not its method)."""
        from parallel_ms import config
        summary, saved = self.path / "summary.json", self.path / "config.toml"
        if not summary.is_file() or not saved.is_file():
            return None
        wanted = config.load(JOBS / TABLES[self.table].config, self.overrides)
        wanted.parallel.threads = config.load(saved).parallel.threads
        done = json.loads(summary.read_text())
        return done if saved.read_text() == config.to_toml(wanted) \
            and done.get("status") == "completed" else None


def on_ranks(ranks: int) -> str:
    """Suffix of the run directories and figures of runs on ``ranks`` ranks."""
    return "" if ranks == 1 else f"-n{ranks}"


def selected(name: str, rows: str | None) -> list[Row]:
    """The rows of a table whose name matches the regular expression ``rows`` (all if None)."""
    return [row for row in TABLES[name].rows if rows is None or re.search(rows, row.name)]


def plan(tables: list[str], scale: str, seeds: list[int], root: Path, threads: int,
         ranks: int = 1, rows: str | None = None) -> list[Run]:
    """The runs of the tables; a run's directory is named by its configuration (job file and
    overrides) and its rank count, so rows that two tables share are run once."""
    runs = []
    for name in tables:
        table = TABLES[name]
        for row in selected(name, rows):
            setting = [*table.scales[scale], *row.overrides]
            key = hashlib.sha1(" ".join([table.config, *setting]).encode()).hexdigest()[:10]
            for seed in seeds:
                path = (root / scale / f"{Path(table.config).stem}-{key}{on_ranks(ranks)}"
                        / f"seed{seed}")
                overrides = [*setting, f"network.seed={seed}", f"sampling.seed={seed}",
                             f"parallel.threads={threads}", "output.progress=log",
                             f"output.root={path.parent}", f"output.name={path.name}"]
                runs.append(Run(name, row, seed, path, overrides))
    return runs


def say(line: str) -> None:
    """One whole line at a time: the runs report from several threads."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def execute(run: Run, ranks: int, threads: int) -> dict[str, Any]:
    summary = run.cached()
    if summary is not None:
        say(f"[cached] {run.path}")
        return summary
    run.path.parent.mkdir(parents=True, exist_ok=True)
    cmd = run.command(ranks)
    say(f"[start] {run.table} / {run.row.name} / seed {run.seed}: {shlex.join(cmd)}")
    log = run.path.parent / f"{run.path.name}.log"
    with open(log, "w") as f:
        f.write(shlex.join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                              env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if done.returncode != 0:
        raise SystemExit(f"reproduce.py: run failed (exit {done.returncode}), see {log}")
    summary = json.loads((run.path / "summary.json").read_text())
    say(f"[done] {run.path}: rel. L2 {summary['rel_l2']:.3g}, {summary['wall_time_s']:.0f} s")
    return summary


#: (evaluation steps, rel. L2 errors at them, step of the Adam -> L-BFGS switch or None,
#: training times at the evaluation steps: wall time less validation)
History = tuple[list[int], list[float], int | None, list[float]]


def history(path: Path, column: str = "rel_l2") -> History:
    """(steps, rel. L2 errors) at the evaluation steps of a run's metrics.csv, the step at
    which Adam -> L-BFGS switched (None if it did not) and the wall times of those steps.
    ``column``: ``rel_l2`` (the step's answer) or ``best_rel_l2`` (the best answer so far,
    which the run returns)."""
    steps, errors, switched, times = [], [], None, []
    with open(path / "metrics.csv") as f:
        for r in csv.DictReader(f):
            if r.get(column):
                steps.append(int(r["step"]))
                errors.append(float(r[column]))
                times.append(float(r.get("train_time") or r["wall_time"]))
            if switched is None and r["optimizer"] == "lbfgs":
                switched = int(r["step"])
    return steps, errors, switched, times


def first_reach(times: list[float], errors: list[float], target: float) -> float | None:
    """Training time of the first evaluation at or below ``target`` (None if never)."""
    return next((t for t, e in zip(times, errors) if e <= target), None)


def stat(values: list[float], fmt: str = "{:.3g}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def paper_cell(value: float | int | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def reach_cell(done: list[tuple[Run, dict, History]], target: float) -> str:
    """Mean +- sd training time to ``target`` over the seeds that reached it (how many, if
    not all)."""
    reached = [t for t in (first_reach(h[3], h[1], target) for _, _, h in done)
               if t is not None]
    if not reached:
        return "—"
    return stat(reached, "{:.0f}") + ("" if len(reached) == len(done)
                                      else f" ({len(reached)}/{len(done)} seeds)")


def markdown(name: str, scale: str, seeds: list[int], ranks: int,
             by_row: dict[str, list[tuple[Run, dict, History]]]) -> str:
    table = TABLES[name]
    with_paper = any(row.paper for row in table.rows)
    lines = [f"### {table.title}: scale `{scale}`, seeds {', '.join(map(str, seeds))}, "
             f"{ranks} rank(s) per run",
             f"jobs/{table.config} with {' '.join(table.scales[scale]) or '(as is)'}", "",
             "| method | rel. L2 | rel. H1 | rel. L2 per seed | rel. L2, last step | steps "
             "| time (s) |" + "".join(f" training time to {t:g} (s) |" for t in table.targets)
             + (" paper rel. L2 | paper rel. H1 | paper iterations "
                "| paper time (s) |" if with_paper else ""),
             "|---" * (7 + len(table.targets) + (4 if with_paper else 0)) + "|"]
    notes = []
    for row in table.rows:
        if row.name not in by_row:
            continue
        done = by_row[row.name]
        s = [summary for _, summary, _ in done]
        per_seed = ", ".join(f"{r['rel_l2']:.3g}" for r in s)
        line = (f"| {row.name} | {stat([r['rel_l2'] for r in s])} "
                f"| {stat([r['rel_h1'] for r in s])} | {per_seed} "
                f"| {stat([h[1][-1] for _, _, h in done])} | {s[0]['steps']}"
                f" | {stat([r['wall_time_s'] for r in s], '{:.0f}')} |"
                + "".join(f" {reach_cell(done, t)} |" for t in table.targets))
        if with_paper:
            paper = row.paper or (None, None, None, None)
            line += (f" {paper_cell(paper[0], '{:.3g}')} | {paper_cell(paper[1], '{:.3g}')}"
                     f" | {paper_cell(paper[2], '{}')} | {paper_cell(paper[3], '{}')} |")
        lines.append(line)
        if "optimizer.kind=adam-lbfgs" in row.overrides:
            switched = ", ".join("never" if h[2] is None else str(h[2]) for _, _, h in done)
            notes.append(f"\n{row.name}: L-BFGS from step {switched} (per seed; Adam before)")
    lines += notes
    if table.note:
        lines.append(f"\n{table.note}")
    return "\n".join(lines)


def figure(name: str, by_row: dict[str, list[tuple[Run, dict, History]]], out: Path) -> None:
    from common import plot_errors
    on_time = TABLES[name].time_axis
    curves = {row: [(h[3] if on_time else h[0], h[1]) for _, _, h in done]
              for row, done in by_row.items()}
    plot_errors(curves, TABLES[name].title, "training time (s), validation excluded"
                if on_time else "step", out, loglog=on_time)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tables", nargs="*", default=list(TABLES), metavar="TABLE",
                   help=f"any of {', '.join(TABLES)} (default: all)")
    p.add_argument("--scale", choices=("paper", "reduced", "quick"), default="reduced")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--ranks", type=int, default=1, help="MPI ranks per run (default 1)")
    p.add_argument("--rows", default=None, metavar="REGEX",
                   help="only the rows whose name matches REGEX (default: all)")
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "reproduce")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    unknown = [t for t in args.tables if t not in TABLES]
    if unknown:
        p.error(f"unknown table {unknown[0]!r} (allowed: {', '.join(TABLES)})")
    threads = max(1, (os.cpu_count() or 1) // (args.jobs * args.ranks))
    runs = plan(args.tables, args.scale, args.seeds, args.root.resolve(), threads,
                args.ranks, args.rows)
    t0 = time.perf_counter()
    unique = {run.path: run for run in runs}
    with ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip(unique, pool.map(lambda r: execute(r, args.ranks, threads),
                                         unique.values())))
    summaries = [done[run.path] for run in runs]
    from common import machine, write_json
    mach = machine()
    print(f"\nmachine: {mach['cpu']}, {mach['cores']} cores, device {mach['device']}; "
          f"{args.jobs} run(s) at a time, {args.ranks} rank(s) x {threads} torch thread(s) "
          f"each; {time.perf_counter() - t0:.0f} s in all\n")
    report: dict[str, Any] = {"machine": mach, "scale": args.scale, "seeds": args.seeds,
                              "jobs": args.jobs, "ranks": args.ranks, "tables": {}}
    histories = {path: history(path) for path in unique}
    for name in args.tables:
        by_row = {row.name: [(r, s, histories[r.path]) for r, s in zip(runs, summaries)
                             if r.table == name and r.row is row]
                  for row in selected(name, args.rows)}
        if not any(by_row.values()):
            continue
        print(markdown(name, args.scale, args.seeds, args.ranks, by_row) + "\n")
        figure(name, by_row, args.root / args.scale / f"{name}{on_ranks(args.ranks)}.png")
        report["tables"][name] = {"overrides": list(TABLES[name].scales[args.scale]),
                                  "rows": {row: [{"seed": r.seed, "path": str(r.path), **s}
                                                 for r, s, _ in done]
                                           for row, done in by_row.items()}}
    write_json(args.json, report)


if __name__ == "__main__":
    main()
