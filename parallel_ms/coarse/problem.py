"""The coarse-scale problem (paper 000 (3.17)/(4.18)) and its adjoint ((3.18)/(3.23)).

P1 on the coarse mesh, y_h in H^1_0. For the isotropic upscaled coefficient K~ = K~_11 I:

    state:    K~_11 A y = F,          F_i = int q phi_i            (the lifting term
                                                                    int K~ e_1 . grad phi
                                                                    vanishes for constant K~)
    adjoint:  K~_11 A p = b,          b = -dJ/dy

A is the Laplace stiffness matrix with the Dirichlet rows: it is assembled and factorised (or
preconditioned) ONCE, and every state and adjoint solve of the run reuses that setup. Solver
settings: :data:`COARSE_SOLVER` and the options database under the prefix ``coarse_``.
"""
from __future__ import annotations

import firedrake as fd
import numpy as np

from parallel_ms.problems import Problem

OPTIONS_PREFIX = "coarse_"
COARSE_SOLVER = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


class CoarseProblem:
    def __init__(self, mesh: fd.MeshGeometry, problem: Problem) -> None:
        self.V = fd.FunctionSpace(mesh, "CG", 1)
        u, phi = fd.TrialFunction(self.V), fd.TestFunction(self.V)
        self.bc = fd.DirichletBC(self.V, 0, "on_boundary")
        self.A = fd.assemble(fd.inner(fd.grad(u), fd.grad(phi)) * fd.dx, bcs=[self.bc])
        self.solver = fd.LinearSolver(self.A, solver_parameters=dict(COARSE_SOLVER),
                                      options_prefix=OPTIONS_PREFIX)
        self.F = fd.assemble(problem.q_ufl(mesh) * phi * fd.dx, bcs=[self.bc])
        self.boundary = np.zeros(len(self.V.dof_dset.lgmap.indices[:self.V.dof_dset.size]),
                                 dtype=bool)
        self.boundary[self.bc.nodes[self.bc.nodes < self.V.dof_dset.size]] = True
        self._base = fd.Function(self.V)
        self.solver.solve(self._base, self.F)     # A^{-1} F, once: y = base / K~_11

    def state(self, k11: float) -> np.ndarray:
        """y at the owned coarse dofs for K~ = k11 I."""
        return self._base.dat.data_ro / k11

    def adjoint(self, k11: float, rhs: np.ndarray) -> np.ndarray:
        """p with (k11 A) p = rhs (rhs at the owned dofs; boundary rows are zeroed)."""
        b = fd.Cofunction(self.V.dual())
        b.dat.data_wo[:] = np.where(self.boundary, 0.0, rhs)
        p = fd.Function(self.V)
        self.solver.solve(p, b)
        return p.dat.data_ro / k11

    def energy(self, p: np.ndarray, y: np.ndarray) -> float:
        """p^T A y (collective): dB/dK~_11 = A contracted with the adjoint and the state."""
        pf, yf = fd.Function(self.V), fd.Function(self.V)
        pf.dat.data_wo[:] = p
        yf.dat.data_wo[:] = y
        with pf.dat.vec_ro as pv, yf.dat.vec_ro as yv:
            ay = yv.duplicate()
            self.A.petscmat.mult(yv, ay)
            return float(pv.dot(ay))
