"""Fine-scale reference solver: the lifted problem (4.8) on a mesh that resolves eps, and the
upscaled coefficient of the reference solution (4.10) / Algorithm 4.1.

Distributed over ``comm`` (a DMPlex mesh partitioned by PETSc); PETSc solver settings come
from :data:`DEFAULT_SOLVER` and the options database under the prefix ``reference_``
(e.g. ``-reference_ksp_type preonly -reference_pc_type lu
-reference_pc_factor_mat_solver_type mumps``), or from the named presets in :data:`SOLVERS`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import firedrake as fd
import numpy as np
from mpi4py import MPI
from ufl.domain import extract_unique_domain

from parallel_ms import parallel
from parallel_ms.coarse.blocks import BlockPartition, tensor_from_averages
from parallel_ms.coarse.mesh import unit_mesh
from parallel_ms.errors import UserError
from parallel_ms.problems import Problem

OPTIONS_PREFIX = "reference_"
#: Named PETSc solver presets for the reference solve.
SOLVERS: dict[str, dict[str, Any]] = {
    "cg-gamg": {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12, "ksp_atol": 1e-50,
                "ksp_max_it": 2000},
    "mumps": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
}
DEFAULT_SOLVER = "cg-gamg"
#: Default resolution rule: cells per shortest period of K_eps, per direction (1D is cheap, so
#: finer: K~_11 of the reference then changes by < 1e-4 under refinement).
CELLS_PER_PERIOD = {1: 128, 2: 32}
MESH_NAME = "reference_mesh"


def cells_for(problem: Problem, cells_per_period: int | None = None) -> int:
    """Cells per direction of the reference mesh: ``cells_per_period`` (default
    :data:`CELLS_PER_PERIOD`) cells across the shortest oscillation length
    ``eps * min_period`` of K_eps."""
    per_period = cells_per_period or CELLS_PER_PERIOD[problem.dim]
    return max(8, math.ceil(per_period / (problem.eps * problem.min_period)))


def solver_parameters(solver: str) -> dict[str, Any]:
    if solver not in SOLVERS:
        raise UserError(f"reference solver '{solver}' is unknown "
                        f"(allowed: {', '.join(SOLVERS)})", collective=True)
    return dict(SOLVERS[solver])


def lifted_forms(problem: Problem, V: fd.FunctionSpace, e: Any,
                 dx: Any = fd.dx) -> tuple[Any, Any]:
    """The bilinear form and load of the lifted problem (4.8) for the temperature drop along
    the constant vector ``e`` (a scalar in 1D), integrated with the measure ``dx``:

        a(u, phi) = int K grad u . grad phi,    L(phi) = int q phi - int K e . grad phi."""
    mesh = V.mesh()
    k, q = problem.k_ufl(mesh), problem.q_ufl(mesh)
    u, phi = fd.TrialFunction(V), fd.TestFunction(V)
    grad_phi_e = fd.inner(e, fd.grad(phi)) if problem.dim > 1 else e * phi.dx(0)
    return (k * fd.inner(fd.grad(u), fd.grad(phi)) * dx,
            q * phi * dx - k * grad_phi_e * dx)


def solve_temperature_drops(problem: Problem, V: fd.FunctionSpace, directions: int = 1,
                            solver: str = DEFAULT_SOLVER) -> list[fd.Function]:
    """u_i = w_i - x_i for the temperature drops w_i = x_i on the boundary, i < directions (4.8):

        int K grad u_i . grad phi = int q phi - int K e_i . grad phi,    u_i = 0 on the boundary.

    One operator (and one preconditioner setup) serves all directions."""
    e = fd.Constant(np.eye(problem.dim)[0]) if problem.dim > 1 else fd.Constant(1.0)
    a, rhs = lifted_forms(problem, V, e)
    uh = fd.Function(V)
    bc = fd.DirichletBC(V, 0, "on_boundary")
    lvp = fd.LinearVariationalProblem(a, rhs, uh, bcs=[bc], constant_jacobian=True)
    lvs = fd.LinearVariationalSolver(lvp, solver_parameters=solver_parameters(solver),
                                     options_prefix=OPTIONS_PREFIX)
    out = []
    for i in range(directions):
        if problem.dim > 1:
            e.assign(np.eye(problem.dim)[i])
        lvs.solve()
        reason = lvs.snes.ksp.getConvergedReason()
        if reason < 0:
            raise RuntimeError(f"reference solve for direction {i + 1} did not converge "
                               f"(KSP reason {reason})")
        out.append(uh.copy(deepcopy=True))
    return out


def upscaled_k11(problem: Problem, u: Any) -> float:
    """K~_11 = int K_eps (d_1 u + 1) dx (4.10), for the lifted solution u (any UFL field)."""
    mesh = extract_unique_domain(u)
    return float(fd.assemble(problem.k_ufl(mesh) * (u.dx(0) + 1) * fd.dx))


def upscaled_tensor(problem: Problem, us: list[fd.Function]) -> np.ndarray:
    """K~ over the whole domain (4.10): K~_ki = int K_eps (d_k u_i + delta_ki) dx, i.e. the
    fluxes <K grad w_i> of the two temperature drops (Algorithm 4.1 with V = Omega)."""
    mesh = us[0].function_space().mesh()
    k = problem.k_ufl(mesh)
    d = problem.dim
    return np.array([[float(fd.assemble(k * (us[i].dx(kk) + (1.0 if i == kk else 0.0)) * fd.dx))
                      for i in range(d)] for kk in range(d)])


def block_tensors(problem: Problem, us: list[fd.Function],
                  blocks: tuple[int, int]) -> np.ndarray:
    """Algorithm 4.1 on the uniform partition of (0,1)^2 into blocks[0] x blocks[1] blocks V_j:

        T^j_i = <grad w_i>_{V_j},  F^j_i = <K grad w_i>_{V_j},   K~^j T^j = F^j   (4.7)

    Returns K~ with shape (blocks[0], blocks[1], 2, 2). Cell integrals are assembled against
    DG0 (one assembly per quantity), summed per block on each rank and reduced over ranks
    (:class:`~parallel_ms.coarse.blocks.BlockPartition`).
    Blocks should be unions of mesh cells (mesh cells per direction divisible by blocks)."""
    if problem.dim != 2 or len(us) != 2:
        raise ValueError("block upscaling needs the two temperature drops of a 2D problem")
    mesh = us[0].function_space().mesh()
    k = problem.k_ufl(mesh)
    partition = BlockPartition(mesh, blocks)
    per_block = partition.integrals
    nb = np.array(blocks)
    vol = per_block(fd.Constant(1.0))
    grads = [[per_block(us[i].dx(c) + (1.0 if i == c else 0.0)) / vol for c in range(2)]
             for i in range(2)]
    fluxes = [[per_block(k * (us[i].dx(c) + (1.0 if i == c else 0.0))) / vol for c in range(2)]
              for i in range(2)]
    t = np.moveaxis(np.array([[grads[i][c] for i in range(2)] for c in range(2)]), -1, 0)
    f = np.moveaxis(np.array([[fluxes[i][c] for i in range(2)] for c in range(2)]), -1, 0)
    out = tensor_from_averages(t, f)
    return out.reshape(nb[0], nb[1], 2, 2)


@dataclass
class Reference:
    """A fine-scale reference solution u_h^eps of (4.8) and its upscaled coefficient."""

    problem: Problem
    degree: int
    resolution: int
    mesh: Any
    us: list[fd.Function]
    k11: float
    solve_time: float

    @property
    def u(self) -> fd.Function:
        """u_h^eps for the x_1 temperature drop (lifted: zero on the boundary)."""
        return self.us[0]

    def w(self) -> Any:
        """w = u + x_1 (UFL expression), the solution of (4.6)."""
        return self.u + fd.SpatialCoordinate(self.mesh)[0]


def solve_reference(problem: Problem, degree: int = 1, resolution: int | None = None,
                    solver: str = DEFAULT_SOLVER, tensor: bool = False,
                    comm: MPI.Comm = MPI.COMM_WORLD) -> Reference:
    """Solve (4.8) with P``degree`` elements on ``resolution`` cells per direction
    (default :func:`cells_for`); ``tensor=True`` (2D) also solves the x_2 temperature drop."""
    if degree not in (1, 2):
        raise UserError(f"reference degree {degree} is not supported (allowed: 1, 2)",
                        collective=True)
    n = resolution or cells_for(problem)
    if n < 1:
        raise UserError(f"reference resolution {n} (allowed: >= 1 cell per direction)",
                        collective=True)
    mesh = unit_mesh(problem.dim, n, comm, name=MESH_NAME)
    V = fd.FunctionSpace(mesh, "CG", degree)
    us, solve_time = parallel.slowest(comm, lambda: solve_temperature_drops(
        problem, V, 2 if tensor and problem.dim == 2 else 1, solver))
    for i, u in enumerate(us):
        u.rename(f"u{i + 1}")
    return Reference(problem, degree, n, mesh, us, upscaled_k11(problem, us[0]), solve_time)
