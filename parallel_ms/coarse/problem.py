"""The coarse-scale problem (paper 000 (3.17)/(4.18)) and its adjoint ((3.18)/(3.23)).

P1 on the coarse mesh, y_h in H^1_0, constant upscaled coefficient K~ whose entry K~_11 comes
from the network and, in the anisotropic variant, K~_12 = K~_21 and K~_22 are given and fixed
(Assumption 4.3):

    state:    B(K~_11) y = F,          F_i = int q phi_i      (the lifting term
                                                              int K~ e_1 . grad phi vanishes
                                                              for constant K~)
    adjoint:  B(K~_11) p = b,          b = -dJ/dy
    tangent:  B(K~_11) dy = -(dB/dK~_11) y dK~_11   (tangent-linear, for Gauss-Newton)
    B(K~_11) = K~_11 D + C,            D = dB/dK~_11

Isotropic (K~ = K~_11 I): B = K~_11 A with A the Laplace stiffness matrix with Dirichlet rows;
A is assembled and factorised ONCE and every state and adjoint solve of the run reuses that
setup (the state is A^{-1} F / K~_11). Anisotropic: D = int d_1 u d_1 phi, and B is
re-assembled and re-factorised when K~_11 changes (the lazy refresh makes that rare).
Solver settings: :func:`coarse_solver`, and the options database under the prefix ``coarse_``
(e.g. ``-coarse_pc_type lu -coarse_pc_factor_mat_solver_type mumps`` for MUMPS at any size).
"""
from __future__ import annotations

import firedrake as fd
import numpy as np

from parallel_ms.coarse.assembly import assemble_matrix
from parallel_ms.problems import Problem

OPTIONS_PREFIX = "coarse_"
#: Distributed direct solve (MUMPS LU): large coarse meshes, and every mesh on one rank.
MUMPS = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
#: One sequential LU of the whole coarse matrix on every rank (PCREDUNDANT): bitwise the same
#: result in every run, which MUMPS's parallel factorisation is not (its dynamic scheduling
#: sums in a different order from run to run: docs/gauss-newton.md, resume).
REDUNDANT_LU = {"ksp_type": "preonly", "pc_type": "redundant", "redundant_pc_type": "lu"}
#: Largest coarse problem (global dofs) solved by :data:`REDUNDANT_LU` on more than one rank:
#: up to ~10^5 dofs in 2D it costs what MUMPS does on 2 ranks (docs/results.md, section 2.2).
REDUNDANT_MAX_DOFS = 100_000


def direct_solver(ranks: int, dofs: int) -> dict[str, str]:
    """Default solver parameters of a coarse problem with ``dofs`` global dofs on ``ranks``
    ranks: the deterministic :data:`REDUNDANT_LU` for a small problem on several ranks (the
    paper's meshes have at most a few thousand dofs), :data:`MUMPS` otherwise."""
    return dict(REDUNDANT_LU if ranks > 1 and dofs <= REDUNDANT_MAX_DOFS else MUMPS)


def coarse_solver(V: fd.FunctionSpace) -> dict[str, str]:
    """:func:`direct_solver` for the coarse problem on ``V``."""
    return direct_solver(V.comm.size, V.dim())


def solver_words(parameters: dict[str, str]) -> str:
    """A direct solver's parameters in words, for a run's header."""
    return ("sequential LU on every rank" if parameters["pc_type"] == "redundant"
            else "MUMPS LU")


def describe_solver(V: fd.FunctionSpace) -> str:
    """The coarse problem's size and solver in words, for a run's header: :func:`coarse_solver`'s
    choice and the options under the prefix ``coarse_`` that override it."""
    default = solver_words(coarse_solver(V))
    overrides = sorted(k for k in fd.PETSc.Options().getAll() if k.startswith(OPTIONS_PREFIX))
    return (f"coarse problem {V.dim()} dofs, {default}"
            + (f" overridden by -{' -'.join(overrides)}" if overrides else ""))


class CoarseSpace:
    """P1 on the coarse mesh with homogeneous Dirichlet conditions, and the linear solver."""

    def __init__(self, mesh: fd.MeshGeometry) -> None:
        self.V = fd.FunctionSpace(mesh, "CG", 1)
        self.bc = fd.DirichletBC(self.V, 0, "on_boundary")
        n_owned = self.V.dof_dset.size
        self.boundary = np.zeros(n_owned, dtype=bool)
        self.boundary[self.bc.nodes[self.bc.nodes < n_owned]] = True

    def _factorise(self, operator: fd.MatrixBase) -> None:
        self.solver = fd.LinearSolver(operator, solver_parameters=coarse_solver(self.V),
                                      options_prefix=OPTIONS_PREFIX)

    def _rhs(self, values: np.ndarray) -> fd.Cofunction:
        """A right-hand side from owned dof values, boundary rows zeroed."""
        b = fd.Cofunction(self.V.dual())
        b.dat.data_wo[:] = np.where(self.boundary, 0.0, values)
        return b

    def _function(self, values: np.ndarray) -> fd.Function:
        f = fd.Function(self.V)
        f.dat.data_wo[:] = values
        return f


class CoarseProblem(CoarseSpace):
    def __init__(self, mesh: fd.MeshGeometry, problem: Problem,
                 k12: float | None = None, k22: float | None = None) -> None:
        super().__init__(mesh)
        u, phi = fd.TrialFunction(self.V), fd.TestFunction(self.V)
        self.isotropic = k12 is None and k22 is None
        self.F = fd.assemble(problem.q_ufl(mesh) * phi * fd.dx, bcs=[self.bc])
        if self.isotropic:
            self.D = assemble_matrix(fd.inner(fd.grad(u), fd.grad(phi)) * fd.dx, (self.bc,))
            self._factorise(self.D)
            self._base = fd.Function(self.V)
            self.solver.solve(self._base, self.F)     # A^{-1} F, once: y = base / K~_11
        else:
            if problem.dim != 2:
                raise ValueError("K~_12 and K~_22 exist in 2D only")
            self._k11 = fd.Constant(1.0)
            kt = fd.as_matrix([[self._k11, k12 or 0.0], [k12 or 0.0, k22 or 0.0]])
            self._form = fd.inner(kt * fd.grad(u), fd.grad(phi)) * fd.dx
            self.D = assemble_matrix(u.dx(0) * phi.dx(0) * fd.dx)
            self._factored_for: float | None = None

    def _solve(self, k11: float, b: fd.Cofunction) -> np.ndarray:
        """B(k11)^{-1} b at the owned dofs."""
        x = fd.Function(self.V)
        if self.isotropic:
            self.solver.solve(x, b)
            return x.dat.data_ro / k11
        if self._factored_for != k11:
            self._k11.assign(k11)
            self._factorise(assemble_matrix(self._form, (self.bc,)))
            self._factored_for = k11
        self.solver.solve(x, b)
        return x.dat.data_ro.copy()

    def state(self, k11: float) -> np.ndarray:
        """y at the owned coarse dofs for the coefficient with this K~_11."""
        if self.isotropic:
            return self._base.dat.data_ro / k11
        return self._solve(k11, self.F)

    def states(self, k11: float) -> list[np.ndarray]:
        """The coarse states, one per network output (here one)."""
        return [self.state(k11)]

    def adjoint(self, k11: float, rhs: np.ndarray) -> np.ndarray:
        """p with B(k11) p = rhs (rhs at the owned dofs; boundary rows are zeroed)."""
        return self._solve(k11, self._rhs(rhs))

    def _dB(self, y: np.ndarray) -> np.ndarray:
        """(dB/dK~_11) y at the owned dofs (y vanishes on the boundary)."""
        with self._function(y).dat.vec_ro as yv:
            out = yv.duplicate()
            self.D.petscmat.mult(yv, out)
            return out.getArray().copy()

    def energy(self, p: np.ndarray, y: np.ndarray) -> float:
        """p^T (dB/dK~_11) y (collective); p and y vanish on the boundary."""
        return self.V.mesh().comm.allreduce(float(p @ self._dB(y)))

    def tangents(self, k11: float, dk: float, ys: list[np.ndarray]) -> list[np.ndarray]:
        """dy_i = -B^{-1} (dB/dK~_11) y_i dK~_11 (F does not depend on K~), reusing the
        factorisation; isotropic: dy = -y dK~_11 / K~_11 without a solve."""
        if self.isotropic:
            return [-y * (dk / k11) for y in ys]
        return [self._solve(k11, self._rhs(-dk * self._dB(y))) for y in ys]

    def sensitivity(self, ps: list[np.ndarray], ys: list[np.ndarray]) -> float:
        """dJ^/dK~_11 = sum_i p_i^T (dB/dK~_11) y_i for adjoints B p_i = -dJ/dy_i ((4.28);
        F does not depend on a constant K~)."""
        return sum(self.energy(p, y) for p, y in zip(ps, ys))
