"""``python -m parallel_ms reference``: the fine-scale FE reference of a case (cached)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mpi4py import MPI

from parallel_ms import parallel, resources
from parallel_ms.commands.options import (add_case_options, case_of, non_negative_float,
                                          path, positive_int)
from parallel_ms.errors import UserError

if TYPE_CHECKING:
    from parallel_ms.problems.problem import Problem

DEFAULT_CACHE = Path.home() / ".cache" / "parallel_ms" / "references"


def _blocks(text: str) -> tuple[int, int]:
    try:
        nb = tuple(int(t) for t in text.lower().split("x"))
    except ValueError:
        nb = ()
    if len(nb) != 2 or min(nb) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' (allowed: N1xN2 with N1, N2 >= 1, e.g. 2x2)")
    return nb  # type: ignore[return-value]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from parallel_ms.reference.solver import DEFAULT_SOLVER, SOLVERS
    p = sub.add_parser(
        "reference", help="compute (or load from the cache) the fine-scale FE reference of a case",
        description="Solve the lifted fine-scale problem (4.8) on a mesh resolving eps, print "
                    "K~_11 (4.10) and the solve time, optionally write an HDF5 file. PETSc "
                    "options under the prefix -reference_ override the solver preset.")
    add_case_options(p, "case name (see 'cases') or FILE.py:NAME")
    p.add_argument("--degree", type=int, default=1, choices=(1, 2), help="P1 (default) or P2")
    p.add_argument("--resolution", type=positive_int, default=None,
                   help="cells per direction (default: the resolution rule, see README)")
    p.add_argument("--solver", default=DEFAULT_SOLVER, choices=sorted(SOLVERS),
                   help=f"PETSc solver preset (default {DEFAULT_SOLVER})")
    p.add_argument("--tensor", action="store_true",
                   help="2D: also solve the x_2 temperature drop and print the full K~ (4.10)")
    p.add_argument("--blocks", type=_blocks, default=None, metavar="N1xN2",
                   help="2D: K~ per block of an N1xN2 partition (Algorithm 4.1; implies --tensor)")
    p.add_argument("--homogenized", action="store_true",
                   help="periodic cases: also solve the cell problems and print K*")
    p.add_argument("--out", type=path, default=None, help="write an HDF5 file (layout: README)")
    p.add_argument("--cache-dir", type=path, default=DEFAULT_CACHE,
                   help=f"reference cache (default {DEFAULT_CACHE})")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--memory-per-rank", type=non_negative_float, default=0.0, metavar="GIB",
                   help="memory a rank may use (default 0: the node's available memory, "
                        "cgroup or SLURM limit, shared by its ranks); the solve refuses to "
                        "start when its estimate exceeds it")


def preflight(args: argparse.Namespace) -> "Problem":
    """Everything checked before the solve allocates: the case, the options that depend on
    it, and the memory estimate (one collective line each)."""
    from parallel_ms.reference.solver import cells_for
    problem = case_of(args)
    if (args.tensor or args.blocks is not None) and problem.dim != 2:
        raise UserError(f"--tensor/--blocks need a 2D case; '{args.case}' is {problem.dim}D",
                        collective=True)
    n = args.resolution or cells_for(problem)
    if args.blocks is not None and max(args.blocks) > n:
        raise UserError(f"--blocks {args.blocks[0]}x{args.blocks[1]} (allowed: at most {n} "
                        f"blocks per direction, the reference's cells per direction)",
                        collective=True)
    resources.check([resources.reference_estimate(problem, args.degree, args.resolution,
                                                  MPI.COMM_WORLD.size, "--resolution or --eps")],
                    MPI.COMM_WORLD, args.memory_per_rank, "--memory-per-rank GIB")
    return problem


def main(args: argparse.Namespace) -> int:
    from parallel_ms.reference.cache import load_or_solve
    from parallel_ms.reference.export import write_vertex_file
    from parallel_ms.reference.metrics import norms
    from parallel_ms.reference.solver import block_tensors, upscaled_tensor

    problem = preflight(args)
    tensor = args.tensor or args.blocks is not None
    ref, cached = load_or_solve(problem, args.degree, args.resolution, args.solver, tensor,
                                None if args.no_cache else args.cache_dir)
    say = parallel.print0
    n_dofs = ref.u.function_space().dim()
    say(f"case {problem.name}: {problem.summary()}")
    say(f"reference: P{ref.degree}, {ref.resolution} cells per direction, {n_dofs} dofs, "
        f"{ref.mesh.comm.size} rank(s)" + (" (loaded from cache)" if cached else ""))
    say(f"K~_11 = {ref.k11:.10f}")
    l2, h1, energy = norms(ref.u, problem.k_ufl(ref.mesh))
    say(f"norms of u: L2 {l2:.4e}, H1 seminorm {h1:.4e}, energy {energy:.4e}; L2 / H1 "
        f"seminorm {l2 / h1:.3e} (an eps-periodic oscillation: eps / (2 pi) = "
        f"{problem.eps / (2 * math.pi):.3e})")
    say(f"solve time: {ref.solve_time:.3f} s" + (" (when it was computed)" if cached else ""))
    attrs: dict[str, object] = {}
    if tensor:
        kt = upscaled_tensor(problem, ref.us)
        attrs["K_tilde"] = kt
        say(f"K~ (4.10) = [[{kt[0, 0]:.8f}, {kt[0, 1]:.3e}], [{kt[1, 0]:.3e}, {kt[1, 1]:.8f}]]")
    if args.blocks is not None:
        kb = block_tensors(problem, ref.us, args.blocks)
        attrs["K_blocks"] = kb
        for (i, j) in np.ndindex(*args.blocks):
            b = kb[i, j]
            say(f"K~ block ({i},{j}) = [[{b[0, 0]:.6f}, {b[0, 1]:.3e}], "
                f"[{b[1, 0]:.3e}, {b[1, 1]:.6f}]]")
    if args.homogenized:
        from parallel_ms.reference.cell import effective_tensor
        kstar = effective_tensor(problem)
        attrs["K_star"] = kstar
        say("K* (cell problems) = " + np.array2string(kstar, precision=10, separator=", "))
    if args.out is not None:
        write_vertex_file(ref, args.out, attrs)
        say(f"wrote {args.out}")
    return 0
