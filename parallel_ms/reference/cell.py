"""Homogenized reference for periodic K_eps(x) = a(x/eps): cell problems and K*.

Cell problems on the periodic cell Y = [0, p_1] x ... (``Problem.period``, in units of eps):
find chi_j periodic with zero mean such that

    -div_y( a(y) (grad_y chi_j + e_j) ) = 0   in Y,

then K*_ij = |Y|^{-1} int_Y a(y) (delta_ij + d_i chi_j) dy (paper 001 (2.4)-(2.6)). In 1D this
is the harmonic mean of a; for K_eps = 2 + sin(2 pi x/eps) it is sqrt(3).
The homogenized solution solves -div(K* grad w_0) = q, w_0 = x_1 on the boundary.
"""
from __future__ import annotations

from typing import Any

import firedrake as fd
import numpy as np
from mpi4py import MPI

from parallel_ms.errors import UserError
from parallel_ms.problems import Problem
from parallel_ms.problems.math import ufl_math

CELL_SOLVER = {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12, "ksp_atol": 1e-50,
               "ksp_max_it": 2000}


#: Cells per unit length of the cell, P2: K* converges like h^4 (1D: error 2e-10 at 256).
CELL_RESOLUTION = {1: 256, 2: 32}


def effective_tensor(problem: Problem, n: int | None = None, degree: int = 2,
                     comm: MPI.Comm = MPI.COMM_WORLD) -> np.ndarray:
    """K* (dim x dim) from the cell problems, with P``degree`` on ``n`` cells per unit length
    of the cell (default :data:`CELL_RESOLUTION`)."""
    n = n or CELL_RESOLUTION[problem.dim]
    if problem.period is None:
        raise UserError(f"case '{problem.name}' is not periodic: it has no cell problem",
                        collective=True)
    p = problem.period
    if problem.dim == 1:
        mesh = fd.PeriodicIntervalMesh(round(n * p[0]), p[0], comm=comm)
    else:
        mesh = fd.PeriodicRectangleMesh(round(n * p[0]), round(n * p[1]), p[0], p[1], comm=comm)
    y = fd.SpatialCoordinate(mesh)
    a = problem.conductivity([problem.eps * y[i] for i in range(problem.dim)], ufl_math())
    V = fd.FunctionSpace(mesh, "CG", degree)
    chi, phi = fd.TrialFunction(V), fd.TestFunction(V)
    nullspace = fd.VectorSpaceBasis(constant=True, comm=mesh.comm)
    volume = float(np.prod(p))
    d = problem.dim
    kstar = np.empty((d, d))
    for j in range(d):
        e = fd.as_vector(np.eye(d)[j])
        sol = fd.Function(V)
        fd.solve(a * fd.inner(fd.grad(chi), fd.grad(phi)) * fd.dx
                 == -a * fd.inner(e, fd.grad(phi)) * fd.dx, sol,
                 nullspace=nullspace, transpose_nullspace=nullspace,
                 solver_parameters=CELL_SOLVER, options_prefix="cell_")
        for i in range(d):
            kstar[i, j] = float(fd.assemble(a * (sol.dx(i) + (1.0 if i == j else 0.0)) * fd.dx))
    return kstar / volume


def homogenized_solution(problem: Problem, kstar: np.ndarray, mesh: Any,
                         degree: int = 1) -> fd.Function:
    """u_0 = w_0 - x_1 for -div(K* grad w_0) = q, w_0 = x_1 on the boundary, on ``mesh``.
    For constant K* the lifting term int K* e_1 . grad phi vanishes."""
    V = fd.FunctionSpace(mesh, "CG", degree)
    u, phi = fd.TrialFunction(V), fd.TestFunction(V)
    k = fd.as_matrix(kstar) if problem.dim > 1 else fd.Constant(float(kstar[0, 0]))
    grad = (lambda f: fd.grad(f)) if problem.dim > 1 else (lambda f: f.dx(0))
    a_form: Any = fd.inner(k * grad(u), grad(phi)) * fd.dx if problem.dim > 1 \
        else k * grad(u) * grad(phi) * fd.dx
    u0 = fd.Function(V, name="u0")
    fd.solve(a_form == problem.q_ufl(mesh) * phi * fd.dx, u0,
             bcs=[fd.DirichletBC(V, 0, "on_boundary")],
             solver_parameters={"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": 1e-12},
             options_prefix="homogenized_")
    return u0
