"""``python -m parallel_ms report PATH``: for a run directory, how the run ended, its summary
and its regenerated plots; for a directory of run directories, one line per run (name,
status, method, case, steps, rel. L2, wall time), sorted by start time."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mpi4py import MPI

from parallel_ms.errors import UserError
from parallel_ms.io.rundir import read_summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="how a run ended, its summary and plots; or one line per "
                                      "run for a directory of runs")
    p.add_argument("path", type=Path, metavar="RUN_DIR|RUNS_DIR",
                   help="a run directory (written by 'run') or a directory holding run "
                        "directories (e.g. runs/)")


def _is_run(path: Path) -> bool:
    return (path / "config.toml").is_file()


def status_text(summary: dict[str, Any] | None) -> str:
    """How a run ended, for people: a run still marked running was killed or is still going."""
    if summary is None:
        return "unknown (no summary.json)"
    status = summary.get("status", "completed")  # summaries before statuses: completed runs
    if status == "running":
        step = summary.get("checkpoint_step")
        return ("not finished (running, or killed; "
                + (f"last checkpoint at step {step})" if step else "no checkpoint yet)"))
    return status


def _row(path: Path) -> tuple[float, list[str]]:
    s = read_summary(path) or {}
    steps = s.get("steps", s.get("checkpoint_step"))
    rel_l2, wall = s.get("rel_l2"), s.get("wall_time_s")
    return s.get("start_time", path.stat().st_mtime), [
        path.name, status_text(s if s else None), str(s.get("method", "-")),
        str(s.get("case", "-")), "-" if steps is None else str(steps),
        "-" if rel_l2 is None else f"{rel_l2:.3e}", "-" if wall is None else f"{wall:.1f} s"]


def print_runs(runs: list[Path]) -> None:
    rows = sorted(_row(p) for p in runs)
    header = ["run", "status", "method", "case", "steps", "rel. L2", "wall time"]
    table = [header] + [r for _, r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def print_run(run_dir: Path) -> None:
    summary = read_summary(run_dir)
    print(f"{'status':>14}: {status_text(summary)}")
    if (run_dir / "metrics.csv").is_file():
        from parallel_ms.io.plots import make_plots
        for path in make_plots(run_dir):
            print(f"plot: {path}")
    for key, value in (summary or {}).items():
        if key != "status":
            print(f"{key:>14}: {value}")
    if summary is None or summary.get("status") in ("running", "preempted"):
        print(f"the run has not finished: resume it with 'python -m parallel_ms run --resume "
              f"{run_dir}'")


def main(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.is_dir():
        raise UserError(f"'{path}' is not a directory (allowed: a run directory or a "
                        f"directory of them)", collective=True)
    runs = [] if _is_run(path) else [p for p in path.iterdir() if p.is_dir() and _is_run(p)]
    if not _is_run(path) and not runs:
        raise UserError(f"'{path}' holds no run directories (allowed: a run directory or a "
                        f"directory of them, each holding config.toml)", collective=True)
    if MPI.COMM_WORLD.rank == 0:
        print_runs(runs) if runs else print_run(path)
    return 0
