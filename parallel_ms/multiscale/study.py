"""GMsFEM against the fine-scale solution, beside the P1 coarse solution with an upscaled
coefficient (``python -m parallel_ms gmsfem``, ``benchmarks/gmsfem.py``).

On the nested meshes (:mod:`.nested`) the fine problem (4.8) is solved with the reference
machinery (:func:`~parallel_ms.reference.solver.solve_temperature_drops`, both temperature
drops); for each basis count L the GMsFEM solution u_ms of the same discrete problem in V_ms
(:mod:`.space`) is compared with it on the fine mesh: relative L2 error and relative H1-seminorm
error, as the paper's metrics (docs/cases.md, error metrics), and relative energy error
(int K |grad e|^2)^(1/2), in which a larger space is never worse (Galerkin). The P1 coarse
solutions on the same coarse mesh use

* ``block-tensor``: K~ per coarse square by Algorithm 4.1 (the block means of grad w_i and
  K grad w_i of the fine temperature drops, :func:`~parallel_ms.reference.solver.block_tensors`)
  in the coarse problem with a piecewise-constant tensor
  (:class:`~parallel_ms.coarse.block_problem.BlockCoarseProblem`);
* ``scalar``: K~_11 of (4.10) over the whole domain, K~ = K~_11 I
  (:class:`~parallel_ms.coarse.problem.CoarseProblem`).

Times: ``offline`` = the fine operator, neighbourhoods and local matrices (shared by all L,
counted in each row) + the local eigenproblems for L + R + PtAP; ``online`` = the coarse solve
(MUMPS factorisation and solve). With a subspace neural operator (``--basis-from``) one more row
(``bases`` "operator", L = the model's): its ``offline`` = the fine operator, neighbourhoods and
patches (the patch problem and grid maps, :class:`~.patches.NeighbourhoodPatches`) + the
images, forward and QR + R + PtAP, in place of the local matrices and eigenproblems. Each is
the slowest rank's wall time; form compilation is included where it happens (the first run on
a machine fills Firedrake's disk cache).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import firedrake as fd
from mpi4py import MPI

from parallel_ms import parallel
from parallel_ms.coarse.block_problem import BlockCoarseProblem
from parallel_ms.coarse.problem import CoarseProblem
from parallel_ms.config import GmsfemConfig
from parallel_ms.multiscale.nested import nested_meshes, require_2d
from parallel_ms.multiscale.solver import GmsfemSolver
from parallel_ms.problems import Problem
from parallel_ms.reference.metrics import fe_relative_errors
from parallel_ms.reference.solver import block_tensors, solve_temperature_drops, upscaled_k11

if TYPE_CHECKING:
    from parallel_ms.multiscale.operator import SubspaceUNet

#: what ``p1_upscaled_rel_l2`` of the JSON output is
P1_UPSCALING = "block-tensor: K~ per coarse square by Algorithm 4.1 from the fine temperature drops"


@dataclass
class BasisRow:
    """GMsFEM with ``basis`` eigenfunctions per neighbourhood (at most, with a threshold;
    ``bases`` "spectral") or with the ``basis`` vectors a subspace neural operator predicts
    (``bases`` "operator")."""

    basis: int
    rel_l2: float
    rel_h1: float
    rel_energy: float
    dofs: int               #: multiscale dofs (columns of R)
    offline_s: float
    online_s: float
    bases: str = "spectral"


@dataclass
class Study:
    """What ``gmsfem`` prints and writes (``--json``): the setting, a row per basis count, the
    P1 upscaled coarse solutions' errors (``p1_upscaled_*``: block-tensor; ``p1_scalar_*``:
    K~_11 I) on the (cells - 1)^2 interior coarse vertices."""

    case: str
    params: dict[str, float]
    eps: float
    cells: int
    refinement: int
    threshold: float
    eigensolver: str
    ranks: int
    fine_dofs: int
    fine_solve_s: float
    u_over_w: float = math.nan     #: ||u|| / ||w|| in L2: the share of the lifting x_1 in w
    rows: list[BasisRow] = field(default_factory=list)
    p1_upscaled_rel_l2: float = math.nan
    p1_upscaled_rel_h1: float = math.nan
    p1_upscaled_rel_energy: float = math.nan
    p1_scalar_rel_l2: float = math.nan
    p1_scalar_rel_h1: float = math.nan
    p1_scalar_rel_energy: float = math.nan
    p1_dofs: int = 0
    p1_upscaling: str = P1_UPSCALING
    basis_from: str = ""           #: the operator's model file of the "operator" row, if any

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gmsfem_study(problem: Problem, cells: int, bases: Sequence[int],
                 settings: GmsfemConfig | None = None, solver: str = "mumps",
                 comm: MPI.Comm = MPI.COMM_WORLD, operator: "SubspaceUNet | None" = None
                 ) -> Study:
    """The errors and times of GMsFEM for each L in ``bases`` (``settings.basis`` is not used)
    and of the P1 upscaled coarse solutions, on ``cells`` x ``cells`` coarse squares; the fine
    problem is solved with the reference solver preset ``solver``. With ``operator`` (trained
    on patches of these cells and ``settings.refinement``) also the row of its bases, and
    GMsFEM's row for its L (added to ``bases`` where missing)."""
    settings = settings or GmsfemConfig()
    if operator is not None:
        bases = sorted({*bases, operator.hyper["count"]})
    require_2d(problem)
    meshes = nested_meshes(cells, settings.refinement, comm)
    us, fine_s = parallel.slowest(comm, lambda: solve_temperature_drops(problem, meshes.Vf, 2, solver))
    study = Study(problem.name, dict(problem.params), problem.eps, cells, settings.refinement,
                  settings.threshold, settings.eigensolver, comm.size, meshes.Vf.dim(), fine_s)
    k = problem.k_ufl(meshes.fine)
    study.u_over_w = fd.norm(us[0]) / fd.norm(us[0] + fd.SpatialCoordinate(meshes.fine)[0])
    gmsfem, shared_s = parallel.slowest(comm, lambda: GmsfemSolver(problem, meshes, settings))
    for basis in bases:
        (space, coarse), offline_s = parallel.slowest(comm, lambda: gmsfem.space(basis))
        u_ms, online_s = parallel.slowest(comm, lambda: gmsfem.solve(space, coarse))
        study.rows.append(BasisRow(basis, *fe_relative_errors(u_ms, us[0], k), space.dofs,
                                   shared_s + offline_s, online_s))
        coarse.destroy()
    if operator is not None:
        learned, shared_s = parallel.slowest(comm, lambda: GmsfemSolver(problem, meshes, settings,
                                                              operator))
        (space, coarse), offline_s = parallel.slowest(comm, learned.space)
        u_ms, online_s = parallel.slowest(comm, lambda: learned.solve(space, coarse))
        study.rows.append(BasisRow(operator.hyper["count"], *fe_relative_errors(u_ms, us[0], k),
                                   space.dofs, shared_s + offline_s, online_s, "operator"))
        coarse.destroy()
    blocks = (cells, cells)
    tensor = BlockCoarseProblem(meshes.coarse, problem, blocks).states(
        block_tensors(problem, us, blocks).reshape(-1, 2, 2))[0]
    scalar = CoarseProblem(meshes.coarse, problem).state(upscaled_k11(problem, us[0]))
    (study.p1_upscaled_rel_l2, study.p1_upscaled_rel_h1,
     study.p1_upscaled_rel_energy) = fe_relative_errors(meshes.prolong(tensor), us[0], k)
    (study.p1_scalar_rel_l2, study.p1_scalar_rel_h1,
     study.p1_scalar_rel_energy) = fe_relative_errors(meshes.prolong(scalar), us[0], k)
    study.p1_dofs = (cells - 1) ** 2
    return study
