"""``python -m parallel_ms gmsfem``: the GMsFEM coarse solution of a case against the fine
solution, per basis count, beside the P1 coarse solutions with an upscaled coefficient; with
``--basis-from MODEL`` also the coarse solution in the local spaces a subspace neural operator
predicts (:mod:`parallel_ms.multiscale.operator`)."""
from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

from mpi4py import MPI

from parallel_ms import parallel, resources
from parallel_ms.commands.options import (add_case_options, case_of, non_negative_float,
                                          path, positive_int, typed)
from parallel_ms.config import CHOICES, GmsfemConfig
from parallel_ms.errors import UserError

if TYPE_CHECKING:
    from parallel_ms.multiscale.operator import SubspaceUNet
    from parallel_ms.multiscale.study import Study
    from parallel_ms.problems.problem import Problem

#: coarse cells per direction by default
DEFAULT_CELLS = 10
DEFAULT_BASES = (1, 2, 4, 8)


_bases = typed(lambda text: tuple(int(t) for t in text.split(",")),
               lambda values: 1 <= min(values) and max(values) <= 1000,
               "comma-separated integers from 1 to 1000, e.g. 1,2,4,8")


def add_parser(sub: argparse._SubParsersAction) -> None:
    from parallel_ms.reference.solver import SOLVERS
    defaults = GmsfemConfig()
    p = sub.add_parser(
        "gmsfem", help="GMsFEM coarse solutions of a case against its fine solution",
        description="For each basis count L: the GMsFEM solution (L eigenfunctions of the local "
                    "spectral problem per coarse neighbourhood; Efendiev, Galvis & Hou 2013) of "
                    "the lifted problem (4.8) against the fine solution on the same fine mesh "
                    "(rel. L2, H1 and energy errors, coarse dofs, offline and online seconds), "
                    "beside the P1 coarse solutions with the upscaled coefficient per coarse "
                    "square (Algorithm 4.1) and with the scalar K~_11 (4.10). Table on rank 0. "
                    "PETSc options under -gmsfem_ change the coarse solver (default: one sequential "
                    "LU per rank up to 10^5 dofs on several ranks, MUMPS LU otherwise).")
    add_case_options(p, "a 2D case (see 'cases') or FILE.py:NAME")
    p.add_argument("--basis", type=_bases, default=DEFAULT_BASES, metavar="L1,L2,...",
                   help="eigenfunctions per neighbourhood, one row each (default "
                        f"{','.join(map(str, DEFAULT_BASES))})")
    p.add_argument("--threshold", type=non_negative_float, default=defaults.threshold,
                   help="> 0: per neighbourhood only the eigenfunctions with eigenvalue below "
                        "it, at most L (default 0: always L)")
    p.add_argument("--cells", type=positive_int, default=DEFAULT_CELLS,
                   help=f"coarse cells per direction (default {DEFAULT_CELLS})")
    p.add_argument("--refinement", type=positive_int, default=defaults.refinement,
                   help="fine cells per coarse cell and direction, a power of 2 (default "
                        f"{defaults.refinement})")
    p.add_argument("--eigensolver", choices=CHOICES["gmsfem.eigensolver"],
                   default=defaults.eigensolver,
                   help=f"local eigenproblems (default {defaults.eigensolver})")
    p.add_argument("--solver", default="mumps", choices=sorted(SOLVERS),
                   help="PETSc preset of the fine solve (default mumps: robust at any contrast)")
    p.add_argument("--basis-from", type=path, default=None, metavar="MODEL",
                   help="a subspace neural operator (.pt of benchmarks/subspace_operator.py, "
                        "trained with these --cells and --refinement): one more row with the "
                        "local spaces it predicts in place of the local eigensolves, L from the "
                        "model, beside GMsFEM's row for that L")
    p.add_argument("--json", type=path, default=None, help="write the numbers to this file")
    p.add_argument("--plot", type=path, default=None,
                   help="write a figure of the errors against the coarse dofs (PNG)")
    p.add_argument("--memory-per-rank", type=non_negative_float, default=0.0, metavar="GIB",
                   help="memory a rank may use (default 0: the node's available memory); the "
                        "command refuses to start when its estimate exceeds it")


def load_model(model: Path, cells: int, refinement: int) -> "SubspaceUNet":
    """The operator saved in ``model``, checked to be trained on the patches of ``cells`` and
    ``refinement`` (one collective line otherwise)."""
    from parallel_ms.multiscale.operator import load_operator
    if not model.is_file():
        raise UserError(f"--basis-from {model}: no such file", collective=True)
    try:
        operator, patch = load_operator(model)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError) as err:
        raise UserError(f"--basis-from {model}: not a model saved by "
                        f"benchmarks/subspace_operator.py ({type(err).__name__})",
                        collective=True) from None
    if (patch["cells"], patch["refinement"]) != (cells, refinement):
        raise UserError(f"--basis-from {model} was trained with cells = {patch['cells']}, "
                        f"refinement = {patch['refinement']}; this run has --cells {cells} "
                        f"--refinement {refinement}", collective=True)
    return operator


def preflight(args: argparse.Namespace
              ) -> tuple["Problem", GmsfemConfig, "SubspaceUNet | None"]:
    """The case, the settings, the operator of ``--basis-from`` and the memory estimate,
    checked before anything is allocated (one collective line each)."""
    from parallel_ms.multiscale.nested import check_sizes, require_2d
    problem = case_of(args)
    require_2d(problem)
    check_sizes(args.cells, args.refinement)
    resources.check([resources.reference_estimate(
        problem, 1, args.cells * args.refinement, MPI.COMM_WORLD.size, "--cells/--refinement",
        what="the fine problem")], MPI.COMM_WORLD, args.memory_per_rank, "--memory-per-rank GIB")
    operator = (None if args.basis_from is None
                else load_model(args.basis_from, args.cells, args.refinement))
    return problem, GmsfemConfig(threshold=args.threshold, refinement=args.refinement,
                                 eigensolver=args.eigensolver), operator


def table(study: "Study") -> list[str]:
    """The printed report of a study."""
    lines = [f"case {study.case} (eps {study.eps:g}"
             + "".join(f", {k} {v:g}" for k, v in study.params.items()) + ")",
             f"coarse {study.cells} x {study.cells} squares, fine {study.refinement} x "
             f"{study.refinement} per coarse square ({study.fine_dofs} P1 dofs), {study.ranks} "
             f"rank(s); fine solve {study.fine_solve_s:.2f} s; eigensolver {study.eigensolver}"
             + (f", threshold {study.threshold:g}" if study.threshold > 0 else "")
             + (f"; operator {study.basis_from}" if study.basis_from else ""),
             f"{'method':<28}{'dofs':>7}{'rel. L2':>11}{'rel. H1':>11}{'rel. energy':>13}"
             f"{'offline s':>11}{'online s':>10}"]
    upto = "<=" if study.threshold > 0 else "="        # a threshold: at most L per neighbourhood
    spectral = [row for row in study.rows if row.bases == "spectral"]
    for row in spectral:
        learned = [r for r in study.rows if r.bases == "operator" and r.basis == row.basis]
        for r, label in ((row, f"GMsFEM L {upto} {row.basis}"),
                         *((r, f"operator L = {r.basis}") for r in learned)):
            lines.append(f"{label:<28}{r.dofs:>7}{r.rel_l2:>11.3e}{r.rel_h1:>11.3e}"
                         f"{r.rel_energy:>13.3e}{r.offline_s:>11.2f}{r.online_s:>10.3f}")
    for label, l2, h1, energy in (
            ("P1, K~ per square (Alg. 4.1)", study.p1_upscaled_rel_l2, study.p1_upscaled_rel_h1,
             study.p1_upscaled_rel_energy),
            ("P1, scalar K~_11 (4.10)", study.p1_scalar_rel_l2, study.p1_scalar_rel_h1,
             study.p1_scalar_rel_energy)):
        lines.append(f"{label:<28}{study.p1_dofs:>7}{l2:>11.3e}{h1:>11.3e}{energy:>13.3e}")
    lines.append(f"errors against the fine solution u of (4.8) on the fine mesh (||u|| = "
                 f"{study.u_over_w:.3g} ||w||, w = u + x_1); K~ from its temperature drops")
    return lines


def main(args: argparse.Namespace) -> int:
    from parallel_ms.multiscale.study import gmsfem_study
    problem, settings, operator = preflight(args)
    study = gmsfem_study(problem, args.cells, args.basis, settings, args.solver,
                         operator=operator)
    if args.basis_from is not None:
        study.basis_from = str(args.basis_from)
    for line in table(study):
        parallel.print0(line)
    if MPI.COMM_WORLD.rank == 0:
        if args.json is not None:
            args.json.write_text(json.dumps(study.to_json(), indent=2) + "\n")
            print(f"wrote {args.json}")
        if args.plot is not None:
            from parallel_ms.multiscale.plots import plot_errors
            plot_errors(study, args.plot)
            print(f"wrote {args.plot}")
    return 0
