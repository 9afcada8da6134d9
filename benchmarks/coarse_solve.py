"""Coarse state and adjoint solve time against the coarse degrees of freedom (2D, P1, the default
coarse solver, ``parallel_ms.coarse.problem.coarse_solver``: one sequential LU per rank for up to
``REDUNDANT_MAX_DOFS`` dofs on several ranks, MUMPS LU otherwise; PETSc options under the prefix
``coarse_`` override it, e.g. ``PETSC_OPTIONS="-coarse_pc_type lu
-coarse_pc_factor_mat_solver_type mumps"`` for MUMPS at every size).

    .venv/bin/python benchmarks/coarse_solve.py [--cells 31 99 315 999] [--json F]
    mpiexec -n 2 .venv/bin/python benchmarks/coarse_solve.py

For each mesh: the one-time setup of the isotropic problem (assembly of A, LU factorisation,
the state A^-1 F), one adjoint solve (what every hybrid step pays), and one refresh of the
anisotropic variant (re-assembly, re-factorisation and state solve, paid when K~_11 changes),
and the assembly of A alone: the project's (``assemble_matrix``, summed in a fixed order) and
Firedrake's AIJ assembly.
Times are the smallest of --repeats runs (setup: one run), maxima over ranks. The last line
fits time ~ dofs^p between the two largest meshes.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from mpi4py import MPI

from common import machine, write_json

from parallel_ms import parallel


def _timed(fn, comm: MPI.Comm) -> float:
    return parallel.slowest(comm, fn)[1]


def _solver_name(cp) -> str:
    """The coarse solver in use, as PETSc reports it."""
    pc = cp.solver.ksp.getPC()
    if pc.getType() == "redundant":
        return "sequential LU on every rank (redundant)"
    return f"{pc.getType()} ({pc.getFactorSolverType()})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, nargs="+", default=[31, 99, 315, 999],
                   help="cells per direction (dofs = (cells + 1)^2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import firedrake as fd

    from parallel_ms import parallel
    from parallel_ms.coarse.assembly import assemble_matrix
    from parallel_ms.coarse.mesh import unit_mesh
    from parallel_ms.coarse.problem import CoarseProblem
    from parallel_ms.problems import get_case
    comm = MPI.COMM_WORLD
    problem = get_case("paper-2d")
    rows = []
    for n in args.cells:
        mesh = unit_mesh(2, n, comm)
        holder: dict = {}
        setup = _timed(lambda: holder.update(cp=CoarseProblem(mesh, problem)), comm)
        cp = holder["cp"]
        rhs = np.ones(cp.V.dof_dset.size)
        adjoint = min(_timed(lambda: cp.adjoint(2.8, rhs), comm) for _ in range(args.repeats))
        aniso = CoarseProblem(mesh, problem, 0.05, 2.8)
        refresh = min(_timed(lambda k=k: aniso.states(2.8 + 0.01 * k), comm)
                      for k in range(args.repeats))
        u, phi = fd.TrialFunction(cp.V), fd.TestFunction(cp.V)
        laplace = fd.inner(fd.grad(u), fd.grad(phi)) * fd.dx
        assembly = {name: min(_timed(fn, comm) for _ in range(args.repeats)) for name, fn in (
            ("assembly_s", lambda: assemble_matrix(laplace, (cp.bc,))),
            ("firedrake_assembly_s", lambda: fd.assemble(laplace, bcs=[cp.bc])))}
        dofs = (n + 1) ** 2
        rows.append({"cells": n, "dofs": dofs, "setup_s": setup, "adjoint_s": adjoint,
                     "anisotropic_refresh_s": refresh, **assembly, "solver": _solver_name(cp)})
    if comm.rank == 0:
        mach = machine()
        print(f"machine: {mach['cpu']}, {mach['cores']} cores, {comm.size} rank(s); "
              f"P1, 2D, paper-2d source")
        print(f"{'cells':>6}{'dofs':>10}{'setup s':>10}{'adjoint s':>11}{'refresh s':>11}"
              f"{'assembly s':>12}{'(Firedrake)':>12}  solver")
        for r in rows:
            print(f"{r['cells']:>6}{r['dofs']:>10}{r['setup_s']:>10.4f}{r['adjoint_s']:>11.5f}"
                  f"{r['anisotropic_refresh_s']:>11.4f}{r['assembly_s']:>12.4f}"
                  f"{r['firedrake_assembly_s']:>12.4f}  {r['solver']}")
        if len(rows) > 1:
            a, b = rows[-2], rows[-1]
            slope = {k: math.log(b[k] / a[k]) / math.log(b["dofs"] / a["dofs"])
                     for k in ("setup_s", "adjoint_s", "anisotropic_refresh_s")}
            print("growth exponent p (time ~ dofs^p, two largest meshes): "
                  + ", ".join(f"{k.removesuffix('_s')} {v:.2f}" for k, v in slope.items()))
        write_json(args.json, {"machine": mach, "ranks": comm.size, "rows": rows})
    parallel.finalize()


if __name__ == "__main__":
    main()
