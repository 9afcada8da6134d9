"""Command line of parallel_ms: ``python -m parallel_ms [command] ...`` or ``parallel-ms``."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import typing
from pathlib import Path

from parallel_ms import __version__

#: subcommand -> module in parallel_ms.commands (each has add_parser and main)
COMMANDS = ("info", "cases", "config", "reference", "gmsfem", "run", "gradcheck", "report")
#: what ``python -m parallel_ms`` without arguments runs
DEFAULT_RUN = Path(__file__).parent / "configs" / "default.toml"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``prog: error: message``, status 2.
    Subcommand parsers are of this class too (argparse makes them with the parent's class)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="parallel_ms",
        description="Hybrid physics-informed neural network / finite-element solver for "
                    "two-scale elliptic problems, parallel over MPI ranks "
                    "(run under mpiexec/srun for more than one rank).",
    )
    parser.add_argument("--version", action="version", version=f"parallel_ms {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"parallel_ms.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Firedrake asks for one OpenMP thread per MPI rank; set it before anything loads OpenMP.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # PETSc reads the command line as its options database (so -log_view etc. work); our own
    # arguments are not PETSc options and must not be reported as unused.
    os.environ.setdefault("FIREDRAKE_DISABLE_OPTIONS_LEFT", "1")
    args, petsc_args = build_parser().parse_known_args(argv)
    unknown = [a for a in petsc_args if a.startswith("--") or not a.startswith("-")]
    if unknown:
        build_parser().error(f"unrecognized arguments: {' '.join(unknown)}")
    from parallel_ms import parallel

    if args.command is None:   # the embedded default run
        args = build_parser().parse_args(["run", "--config", str(DEFAULT_RUN)])
        parallel.print0(f"no command given: the embedded default run ({DEFAULT_RUN.name}: the "
                        f"paper's 2D case, hybrid, Gauss-Newton; about 5.5 minutes on 2 cores). "
                        f"'python -m parallel_ms --help' lists the commands.")
    command = importlib.import_module(f"parallel_ms.commands.{args.command}")
    return parallel.run_main(lambda: command.main(args))


if __name__ == "__main__":
    sys.exit(main())
