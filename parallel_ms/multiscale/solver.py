"""GMsFEM for the lifted problem (4.8) of a case: the offline part shared by every basis count
(the fine operator and load, the neighbourhoods, the local matrices) once, then per L the local
eigenproblems, R and R^T A R (offline) and the coarse solve (online).

With a subspace neural operator (:mod:`.operator`, ``gmsfem --basis-from MODEL``) the local
eigenproblems are not set up: the local spaces are the operator's predictions for the
coefficient patches of the neighbourhoods (:class:`~.patches.NeighbourhoodPatches`), L = the
model's basis count."""
from __future__ import annotations

from typing import TYPE_CHECKING

import firedrake as fd
from petsc4py import PETSc

from parallel_ms.config import GmsfemConfig
from parallel_ms.multiscale.nested import NestedMeshes
from parallel_ms.multiscale.neighbourhoods import Neighbourhoods
from parallel_ms.multiscale.space import CoarseSolver, MultiscaleSpace, solve_coarse
from parallel_ms.multiscale.spectral import LocalProblems
from parallel_ms.problems import Problem
from parallel_ms.reference.solver import lifted_forms

if TYPE_CHECKING:
    from parallel_ms.multiscale.operator import SubspaceUNet
    from parallel_ms.multiscale.patches import NeighbourhoodPatches


class GmsfemSolver:
    """u_ms in V_ms with a(u_ms, v) = L(v) for all v in V_ms, a and L of (4.8) for the
    temperature drop along e_1, on the fine mesh of ``meshes``; the local spaces from the
    local spectral problems, or with ``operator`` (a model trained on the patches of these
    cells and refinement) from its predictions."""

    def __init__(self, problem: Problem, meshes: NestedMeshes,
                 settings: GmsfemConfig | None = None,
                 operator: "SubspaceUNet | None" = None) -> None:
        self.meshes, self.settings = meshes, settings or GmsfemConfig()
        self.problem = problem
        a, load = lifted_forms(problem, meshes.Vf, fd.Constant((1.0, 0.0)))
        #: the fine stiffness matrix (no boundary rows: R vanishes there) and load
        self.A, self.b = fd.assemble(a).petscmat, fd.assemble(load)
        self.hoods = Neighbourhoods(meshes)
        self.operator = operator
        self.local: LocalProblems | None = None
        self.patches: NeighbourhoodPatches | None = None
        if operator is None:
            self.local = LocalProblems(problem, meshes, self.hoods)
        else:
            from parallel_ms.multiscale import patches
            self.patches = patches.NeighbourhoodPatches(
                patches.PatchProblem(meshes.cells, meshes.refinement), meshes, self.hoods)

    def space(self, basis: int | None = None) -> tuple[MultiscaleSpace, PETSc.Mat]:
        """V_ms with ``basis`` (default ``settings.basis``) eigenfunctions per neighbourhood
        (``settings.threshold`` and ``settings.eigensolver`` apply), or with an operator its
        predicted bases (``basis`` and the settings do not apply), and R^T A R."""
        if self.patches is not None:
            pairs = self.patches.operator_pairs(self.operator, self.problem)
        else:
            s = self.settings
            pairs = self.local.eigenpairs(basis or s.basis, s.threshold, s.eigensolver)
        space = MultiscaleSpace(self.meshes, self.hoods, pairs)
        return space, space.galerkin(self.A)

    def solve(self, space: MultiscaleSpace, coarse: PETSc.Mat | CoarseSolver) -> fd.Function:
        """u_ms = R (R^T A R)^{-1} R^T b on the fine P1 space (``coarse``: R^T A R, or its
        factorisation, :func:`~.space.solve_coarse`)."""
        return space.prolong(solve_coarse(coarse, space.restrict(self.b)))
