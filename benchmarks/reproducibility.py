"""Does an n-rank run repeat itself? The three things that can change between identical runs: the
coarse mesh's partition (which rank holds which cells, and so which collocation points), the
assembly of the coarse matrix (the project's ``assemble_matrix`` sums it in a fixed order) and
the parallel coarse solve (``coarse_solver``: one sequential LU per rank for a small
coarse problem on several ranks, MUMPS LU otherwise; ``--solver mumps`` forces MUMPS).

    mpiexec -n 3 .venv/bin/python benchmarks/reproducibility.py [--partitioner simple]
        [--cells 25] [--builds 4] [--solver default|mumps]

Prints, for each of ``--builds`` builds of the 2D coarse mesh in this process, the cells each
rank owns and an MD5 of their vertices, then an MD5 of one P1 solve on each build (values
ordered by coordinates, so partition independent) and how many of them differ. Run it several
times to compare runs: equal hashes, equal results.
"""
from __future__ import annotations

import argparse
import hashlib

import firedrake as fd
import numpy as np
from mpi4py import MPI

from parallel_ms.coarse.assembly import assemble_matrix
from parallel_ms.coarse.mesh import owned_cell_vertices, unit_mesh
from parallel_ms.coarse.problem import MUMPS, coarse_solver

COMM = MPI.COMM_WORLD


def _md5(values: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(values).tobytes()).hexdigest()[:12]


def _solve_hash(mesh: fd.MeshGeometry, solver: str) -> tuple[str, str]:
    """MD5 of the P1 solution of -div((1 + sin(7x)/2) grad y) = exp(-20|x - (.3, .6)|^2), and
    the solver's name."""
    V = fd.FunctionSpace(mesh, "CG", 1)
    parameters = dict(MUMPS) if solver == "mumps" else coarse_solver(V)
    u, v = fd.TrialFunction(V), fd.TestFunction(V)
    x = fd.SpatialCoordinate(mesh)
    a = (1 + 0.5 * fd.sin(7 * x[0])) * fd.inner(fd.grad(u), fd.grad(v)) * fd.dx
    bc = fd.DirichletBC(V, 0, "on_boundary")
    A = assemble_matrix(a, (bc,))
    rhs = fd.assemble(fd.exp(-20 * ((x[0] - 0.3) ** 2 + (x[1] - 0.6) ** 2)) * v * fd.dx, bcs=[bc])
    y = fd.Function(V)
    fd.LinearSolver(A, solver_parameters=parameters).solve(y, rhs)
    coords = fd.Function(fd.VectorFunctionSpace(mesh, "CG", 1)).interpolate(x).dat.data_ro
    coords = np.concatenate(COMM.allgather(coords.round(12)))
    values = np.concatenate(COMM.allgather(y.dat.data_ro))
    name = parameters.get("pc_factor_mat_solver_type", parameters["pc_type"])
    return _md5(values[np.lexsort(coords.T[::-1])]), name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--partitioner", default="simple", help="simple | ptscotch | parmetis")
    p.add_argument("--cells", type=int, default=25, help="coarse cells per direction")
    p.add_argument("--builds", type=int, default=4, help="mesh builds in this process")
    p.add_argument("--solver", choices=("default", "mumps"), default="default",
                   help="the project's default coarse solver, or MUMPS at any size")
    args = p.parse_args()
    solves = []
    for build in range(args.builds):
        mesh = unit_mesh(2, args.cells, COMM, partitioner=args.partitioner)
        cells = owned_cell_vertices(mesh).round(12)
        owned = COMM.gather((len(cells), _md5(cells)))
        if COMM.rank == 0:
            print(f"build {build}: cells per rank {[n for n, _ in owned]}, "
                  f"hashes {[h for _, h in owned]}", flush=True)
        solves.append(_solve_hash(mesh, args.solver))
    if COMM.rank == 0:
        hashes = [h for h, _ in solves]
        print(f"P1 solves ({solves[0][1]}): {hashes}; {len(set(hashes))} distinct result(s) "
              f"in {len(hashes)} solves", flush=True)


if __name__ == "__main__":
    main()
