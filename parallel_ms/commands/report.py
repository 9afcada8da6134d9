"""``python -m parallel_ms report RUN_DIR``: regenerate a run's plots and print its summary."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mpi4py import MPI

from parallel_ms.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="regenerate the plots of a run directory and print its "
                                      "summary")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")


def main(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"'{run_dir}' is not a run directory (allowed: a directory written by "
                        f"'run', holding config.toml)", collective=True)
    if MPI.COMM_WORLD.rank != 0:
        return 0
    from parallel_ms.io.plots import make_plots
    for path in make_plots(run_dir):
        print(f"plot: {path}")
    summary = run_dir / "summary.json"
    if summary.is_file():
        for key, value in json.loads(summary.read_text()).items():
            print(f"{key:>14}: {value}")
    else:
        print(f"no summary.json in {run_dir}: the run has not finished (resume it with "
              f"'python -m parallel_ms run --resume {run_dir}')")
    return 0
