"""An a-posteriori estimate of a network's error, computed without the reference solution.

For the lifted problem (4.8), a(u, phi) = L(phi) with a(u, phi) = int K_eps grad u . grad phi,
the error e = u - v of any v satisfies a(e, phi) = L(phi) - a(v, phi) =: <R(v), phi> for every
phi in H^1_0: the residual R(v) = q + div K_eps grad(v + x_1) determines e. Its Galerkin
projection onto a finite-element space V_h,

    e_h in V_h,  e_h = -v on the boundary,  a(e_h, phi) = L(phi) - a(v, phi)  for phi in V_h,

is the energy projection of e (one sparse solve; the network enters only through v and grad v
at the quadrature points, no second derivatives). V_h is P``degree`` on a mesh with
``cells_per_period`` cells across K_eps's shortest period: coarser than the reference mesh
(docs/results.md measures the default), fine enough that e - e_h, the part of the error V_h
cannot represent, is small where the error is coarse-scale (docs/results.md §4.3 measures that
it mostly is). The estimates are

    estimated rel. L2 = ||e_h|| / ||v + e_h||,   estimated rel. H1 = |e_h|_1 / |v + e_h|_1,

and v + e_h (= u_h + (v - its energy projection)) is the corrected answer.

Distributed as the reference: the mesh is a DMPlex over ``comm``, each rank evaluates the
network at the quadrature points and nodes it owns, and the solve is PETSc's
(:data:`~parallel_ms.reference.solver.SOLVERS`, options prefix ``estimate_``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import firedrake as fd
import numpy as np
from mpi4py import MPI

from parallel_ms.coarse.mesh import unit_mesh
from parallel_ms.problems import Problem
from parallel_ms.reference.metrics import PointFunction
from parallel_ms.reference.solver import (DEFAULT_SOLVER, cells_for, lifted_forms,
                                          solver_parameters)

OPTIONS_PREFIX = "estimate_"
MESH_NAME = "estimate_mesh"


@dataclass
class Estimate:
    """The projected error e_h of one network and the estimates it gives."""

    rel_l2: float                   #: ||e_h|| / ||v + e_h||
    rel_h1: float                   #: |e_h|_1 / |v + e_h|_1
    correction: fd.Function         #: e_h: v + e_h is the corrected answer
    seconds: float                  #: wall time of the estimate (maximum over ranks)


class ErrorEstimator:
    """The Galerkin projection of the error of a network v onto P``degree`` with
    ``cells_per_period`` cells per shortest period of K_eps (:func:`cells_for`)."""

    def __init__(self, problem: Problem, cells_per_period: int, degree: int = 2,
                 solver: str = DEFAULT_SOLVER, comm: MPI.Comm = MPI.COMM_WORLD) -> None:
        self.problem, self.comm = problem, comm
        self.resolution = cells_for(problem, cells_per_period)
        mesh = unit_mesh(problem.dim, self.resolution, comm, name=MESH_NAME)
        self.V = fd.FunctionSpace(mesh, "CG", degree)
        # quadrature exact for the P_degree terms, with room for K_eps's variation in a cell
        q_degree = 2 * degree + 2
        Q = fd.FunctionSpace(mesh, "Quadrature", q_degree, quad_scheme="default")
        QV = fd.VectorFunctionSpace(mesh, "Quadrature", q_degree, quad_scheme="default")
        self.dx = fd.dx(metadata={"quadrature_degree": q_degree, "quadrature_rule": "default"})
        self.points = np.asarray(fd.Function(QV).interpolate(
            fd.SpatialCoordinate(mesh)).dat.data_ro).reshape(-1, problem.dim)
        self.nodes = np.asarray(fd.Function(fd.VectorFunctionSpace(mesh, "CG", degree))
                                .interpolate(fd.SpatialCoordinate(mesh))
                                .dat.data_ro).reshape(-1, problem.dim)
        self.v, self.grad_v = fd.Function(Q), fd.Function(QV)
        e = fd.Constant(np.eye(problem.dim)[0]) if problem.dim > 1 else fd.Constant(1.0)
        a, load = lifted_forms(problem, self.V, e, self.dx)
        phi = load.arguments()[0]
        load -= problem.k_ufl(mesh) * fd.inner(self.grad_v, fd.grad(phi)) * self.dx
        self.e_h, self.boundary = fd.Function(self.V, name="e_h"), fd.Function(self.V)
        bc = fd.DirichletBC(self.V, self.boundary, "on_boundary")
        self.solver = fd.LinearVariationalSolver(
            fd.LinearVariationalProblem(a, load, self.e_h, bcs=[bc], constant_jacobian=True),
            solver_parameters=solver_parameters(solver), options_prefix=OPTIONS_PREFIX)

    def estimate(self, fn: PointFunction) -> Estimate:
        """The estimate for the network ``fn`` (value and gradient at points; collective)."""
        t0 = time.perf_counter()
        values, grads = fn(self.points)
        self.v.dat.data_wo[:] = values
        self.grad_v.dat.data_wo[:] = np.asarray(grads).reshape(len(values), -1).squeeze()
        self.boundary.dat.data_wo[:] = -fn(self.nodes)[0]
        self.solver.solve()
        reason = self.solver.snes.ksp.getConvergedReason()
        if reason < 0:
            raise RuntimeError(f"error-estimate solve did not converge (KSP reason {reason})")
        e, v, dx = self.e_h, self.v, self.dx
        grad_u = self.grad_v + fd.grad(e)

        def ratio(num: object, den: object) -> float:
            return math.sqrt(float(fd.assemble(num * dx)) / float(fd.assemble(den * dx)))

        rel_l2 = ratio(e ** 2, (v + e) ** 2)
        rel_h1 = ratio(fd.inner(fd.grad(e), fd.grad(e)), fd.inner(grad_u, grad_u))
        seconds = self.comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        return Estimate(rel_l2, rel_h1, e, seconds)
