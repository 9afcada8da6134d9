"""Command line of parallel_ms: ``python -m parallel_ms [command] ...`` or ``parallel-ms``."""
from __future__ import annotations

import argparse
import os
import sys

from parallel_ms import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parallel_ms",
        description="Hybrid physics-informed neural network / finite-element solver for "
                    "two-scale elliptic problems, parallel over MPI ranks "
                    "(run under mpiexec/srun for more than one rank).",
    )
    parser.add_argument("--version", action="version", version=f"parallel_ms {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = sub.add_parser("info", help="check and describe the parallel environment "
                                       "(MPI, PETSc, Firedrake, torch.distributed, devices)")
    info.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    return parser


def main(argv: list[str] | None = None) -> int:
    # Firedrake asks for one OpenMP thread per MPI rank; set it before anything loads OpenMP.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # PETSc reads the command line as its options database (so -log_view etc. work); our own
    # arguments are not PETSc options and must not be reported as unused.
    os.environ.setdefault("FIREDRAKE_DISABLE_OPTIONS_LEFT", "1")
    args = build_parser().parse_args(argv)
    from parallel_ms import parallel

    if args.command in (None, "info"):
        from parallel_ms import info
        return parallel.run_main(lambda: info.main(getattr(args, "device", "auto")))
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
