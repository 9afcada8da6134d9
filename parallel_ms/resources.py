"""The resource guard: before a run or a reference solve allocates anything large, estimate
its memory per rank from the settings and compare it with what a rank of this node may use
(the smallest of the available physical memory, the cgroup limit and SLURM's memory limit,
shared between the ranks on the node; ``parallel.memory_per_rank`` overrides it on purpose).
Above it, one line names the estimate, the limit and the setting to change.

The estimates are linear models of measured peak memory (``benchmarks/memory_model.py``
measures them again): a process base, the fine reference per dof, the coarse mesh per vertex,
the training per collocation point (jet activations of the network), the compression
operator per nonzero, and the parameter-sized optimizer state (Adam, L-BFGS history, the
Gauss-Newton normal equations)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mpi4py import MPI

from parallel_ms.errors import UserError
from parallel_ms.training.optimizers.registry import (choose_curvature_solver,
                                                     curvature_memory, picks_solver, spec)

if TYPE_CHECKING:
    from parallel_ms.config import Config
    from parallel_ms.problems.problem import Problem

GIB = 2 ** 30
#: peak memory of a parallel_ms process before any problem is set up (torch, PETSc,
#: Firedrake loaded; benchmarks/memory_model.py measures it with ``info``)
BASE = 0.5 * GIB
#: bytes per dof of a reference solve (mesh, P_k space, matrix, CG/GAMG), by (dim, degree):
#: slopes of peak memory between two resolutions (benchmarks/memory_model.py)
REFERENCE_PER_DOF = {(1, 1): 800, (1, 2): 600, (2, 1): 1500, (2, 2): 1100}
#: bytes per coarse-mesh vertex (mesh, P1 space, matrix, factorisation)
COARSE_PER_VERTEX = 1500
#: bytes per nonzero of the compression operator Q (AIJ entries, its construction lists,
#: the product P C)
COMPRESSION_PER_NONZERO = 64
#: saved values per hidden unit and jet channel (pre-activation, tanh, its derivatives):
#: measured 2.2 (2D hybrid, Ms-FF 33,281 parameters, 5,000 and 40,000 points: 27,490 bytes
#: per point, benchmarks/memory_model.py)
ACTIVATIONS_PER_UNIT = 3


def _meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2 ** 60:
            return int(text)
    return None


def _slurm_limit() -> int | None:
    """SLURM_MEM_PER_NODE (MiB) where the job set one."""
    value = os.environ.get("SLURM_MEM_PER_NODE")
    return int(value) * 2 ** 20 if value and value.isdigit() else None


def available_memory() -> int:
    """Bytes the ranks on this node may still allocate together."""
    limits = [_meminfo_available(), _cgroup_limit(), _slurm_limit()]
    return min(x for x in limits if x is not None)


@dataclass
class Estimate:
    """Peak memory per rank of one part of a run, and the setting that sizes it."""
    what: str
    nbytes: float
    setting: str


def size_text(nbytes: float) -> str:
    if nbytes >= 2 ** 40:
        return f"{nbytes / 2 ** 40:.3g} TiB"
    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB else f"{nbytes / 2 ** 20:.1f} MiB"


def rank_share(comm: MPI.Comm, per_rank_gib: float = 0.0) -> float:
    """Bytes one rank may use: ``per_rank_gib`` when set, else the node's available memory
    divided by the ranks on this node (the smallest over the nodes)."""
    if per_rank_gib:
        return per_rank_gib * GIB
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    share = available_memory() / local.Get_size()
    local.Free()
    return comm.allreduce(share, op=MPI.MIN)


def check(estimates: list[Estimate], comm: MPI.Comm, per_rank_gib: float,
          limit_setting: str) -> None:
    """One collective line when the estimates add up to more than a rank's share."""
    total = BASE + sum(e.nbytes for e in estimates)
    share = rank_share(comm, per_rank_gib)
    if total > share:
        big = max(estimates, key=lambda e: e.nbytes)
        raise UserError(
            f"estimated memory ~{size_text(total)} per rank on {comm.size} rank(s) exceeds "
            f"the ~{size_text(share)} a rank may use; the largest part is {big.what} "
            f"(~{size_text(big.nbytes)}, set by {big.setting}): reduce it or use more ranks "
            f"or nodes ({limit_setting} raises the limit on purpose)", collective=True)


def reference_estimate(problem: "Problem", degree: int, resolution: int | None, ranks: int,
                       setting: str, what: str = "the fine reference") -> Estimate:
    from parallel_ms.reference.solver import cells_for
    n = min(float(resolution or cells_for(problem)), 1e100)
    dofs = (degree * n + 1) ** problem.dim
    return Estimate(f"{what} (P{degree}, {n:.3g} cells per direction, "
                    f"{dofs:.3g} dofs)", dofs * REFERENCE_PER_DOF[problem.dim, degree] / ranks,
                    setting)


def parameter_count(cfg: "Config", problem: "Problem", outputs: int) -> int:
    """Parameters of the network that :func:`parallel_ms.fine.model.build_network` makes."""
    n, dim = cfg.network, problem.dim
    hidden = (n.depth - 1) * (n.width ** 2 + n.width)

    def mlp(inputs: int) -> int:
        return inputs * n.width + n.width + hidden + (n.width + 1) * outputs

    if n.kind == "mlp":
        return mlp(dim)
    if n.kind == "two-scale":
        return mlp(dim) + mlp(dim + 2 * len(problem.waves or ()) * n.harmonics)
    branches = len(n.sigmas) if n.sigmas else 2
    return 2 * n.features * n.width + n.width + hidden + (n.width * branches + 1) * outputs


def run_estimates(cfg: "Config", problem: "Problem", ranks: int) -> list[Estimate]:
    """The parts of a training run, per rank (points and meshes are sharded over the ranks;
    the network and the optimizer state are replicated)."""
    from parallel_ms.config import DEFAULT_COARSE_CELLS
    from parallel_ms.fine.sampling import BoundaryLayer
    from parallel_ms.reference.solver import cells_for
    dim, itemsize = problem.dim, 8 if cfg.network.dtype == "float64" else 4
    hybrid = cfg.train.method == "hybrid"
    outputs = cfg.outputs
    cells = cfg.coarse.cells or DEFAULT_COARSE_CELLS[dim]
    points = (BoundaryLayer.of(cfg.sampling).points(cfg.sampling.most_interior, dim)
              + (cfg.sampling.boundary if dim == 2 else 2)) / ranks
    n = cfg.network
    hidden = n.depth * n.width
    units = {"mlp": hidden,                                     # per point, all branches
             "msff": len(n.sigmas or (1, 1)) * (hidden + 2 * n.features),
             "two-scale": 2 * hidden + dim * (2 + 2 * n.harmonics)}[n.kind]
    channels = (2 + dim) * outputs          # value, gradient, Laplacian per output
    per_point = itemsize * channels * units * ACTIVATIONS_PER_UNIT
    out = [reference_estimate(problem, cfg.reference.degree, cfg.reference.resolution, ranks,
                              "reference.resolution (or problem.eps)"),
           *([reference_estimate(problem, cfg.estimate.degree,
                                 cells_for(problem, cfg.estimate.cells_per_period), ranks,
                                 "estimate.cells_per_period", "the error estimate's mesh")]
             if cfg.estimate.enabled else []),
           Estimate(f"the coarse mesh ({cells:.3g} cells per direction)",
                    float(cells + 1) ** dim * COARSE_PER_VERTEX / ranks, "coarse.cells"),
           Estimate(f"the collocation points ({points:.3g} per rank)", points * per_point,
                    "sampling.interior / sampling.boundary")]
    if cfg.sampling.validation:
        share = cfg.sampling.validation / ranks
        out.append(Estimate(f"the validation points ({share:.3g} per rank)", share * per_point,
                            "sampling.validation"))
    if hybrid:
        delta = cfg.coupling.delta or problem.eps
        ball = (delta * cells + 1) if dim == 1 else math.pi * (delta * cells / 2) ** 2 + 1
        ball = min(ball, (cells + 1) ** dim)       # nodes within delta/2 of a point
        out.append(Estimate("the compression operator Q_delta",
                            cfg.sampling.most_interior / ranks * ball * COMPRESSION_PER_NONZERO,
                            "coupling.delta / coarse.cells / sampling.interior"))
        if cfg.coarse.space == "gmsfem":        # the nested fine mesh: as a P1 reference
            fine = float(cells * cfg.gmsfem.refinement + 1) ** dim
            out.append(Estimate(f"the GMsFEM fine mesh ({fine:.3g} P1 dofs)",
                                fine * REFERENCE_PER_DOF[dim, 1] / ranks,
                                "gmsfem.refinement / coarse.cells"))
    p = float(parameter_count(cfg, problem, outputs))
    history = spec(cfg.optimizer.kind).history
    vectors = 4 + (2 * cfg.optimizer.lbfgs_history if history else 0)
    out.append(Estimate(f"the network and optimizer state ({p:.3g} parameters)",
                        p * itemsize * vectors, "network.width / network.depth / "
                        "network.features" + (" / optimizer.lbfgs_history" if history else "")))
    rows = curvature_rows(cfg, dim, ranks)
    curvature = curvature_memory(cfg.optimizer, p, rows, itemsize, ranks)
    if curvature:
        out.append(Estimate(f"the Gauss-Newton curvature solver {cfg.optimizer.gn_solver} "
                            f"({p:.3g} parameters, {rows:.3g} rows per rank)", curvature,
                            "optimizer.gn_solver (cg needs no P x P matrix) or the network "
                            "size"))
    return out


def curvature_rows(cfg: "Config", dim: int, ranks: int) -> float:
    """Residual rows per rank, as the curvature solvers' memory and cost are sized, per output:
    interior points (with a boundary layer's extra ones; times ``dim`` in the energy form,
    whose rows at a point are the d
    components of (K grad v - sigma_f) / sqrt(K)), boundary points (soft boundary condition),
    weak-residual test functions and coarse dofs (hybrid), or with the Galerkin
    coupling the multiscale dofs (at most ``gmsfem.basis`` per interior coarse vertex), each
    shared by the ranks."""
    from parallel_ms.config import DEFAULT_COARSE_CELLS
    from parallel_ms.fine.sampling import BoundaryLayer
    points = BoundaryLayer.of(cfg.sampling).points(cfg.sampling.most_interior, dim)
    rows = points * cfg.outputs * (dim if cfg.loss.form == "energy" else 1)
    if not cfg.network.hard_bc:
        rows += (cfg.sampling.boundary if dim == 2 else 2) * cfg.outputs
    if cfg.loss.tau_weak > 0:
        rows += (cfg.loss.weak_cells + 1) ** dim * cfg.outputs
    if cfg.train.method == "hybrid":
        cells = cfg.coarse.cells or DEFAULT_COARSE_CELLS[dim]
        rows += ((cells - 1) ** dim * cfg.gmsfem.basis if cfg.coupling.form == "galerkin"
                 else (cells + 1) ** dim * cfg.outputs)
    return rows / ranks


def resolve_curvature_solver(cfg: "Config", problem: "Problem", comm: MPI.Comm) -> str | None:
    """``optimizer.gn_solver = "auto"`` of a Gauss-Newton run replaced by the solver
    :func:`~parallel_ms.training.optimizers.registry.choose_curvature_solver` picks for the
    memory a rank has left after the rest of the run (collective); the line saying what and
    why, or None where there was nothing to pick."""
    o = cfg.optimizer
    if not picks_solver(o):
        return None
    rest = sum(e.nbytes for e in run_estimates(cfg, problem, comm.size))   # no curvature yet
    left = rank_share(comm, cfg.parallel.memory_per_rank) - BASE - rest
    o.gn_solver, why = choose_curvature_solver(
        float(parameter_count(cfg, problem, cfg.outputs)),
        curvature_rows(cfg, problem.dim, comm.size), comm.size,
        8 if cfg.network.dtype == "float64" else 4, left)
    return f"optimizer.gn_solver = auto: {why}"


def check_run(cfg: "Config", comm: MPI.Comm) -> str | None:
    """The guard of ``run``: resolve ``gn_solver = "auto"`` (its line returned), then refuse
    (one line, every rank) before anything large exists."""
    problem = cfg.problem.build()
    why = resolve_curvature_solver(cfg, problem, comm)
    check(run_estimates(cfg, problem, comm.size), comm, cfg.parallel.memory_per_rank,
          "parallel.memory_per_rank")
    return why
