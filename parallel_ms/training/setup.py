"""Everything a run or a gradient check needs, built once from the configuration."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from parallel_ms.coarse.mesh import unit_mesh
from parallel_ms.config import DEFAULT_COARSE_CELLS, Config
from parallel_ms.coupling.coupling import Coupling
from parallel_ms.errors import UserError
from parallel_ms.fine.model import DTYPES, PINNForward, build_network
from parallel_ms.fine.sampling import BoundaryLayer, sample, validation_sample
from parallel_ms.parallel import ParallelContext
from parallel_ms.problems import Problem
from parallel_ms.training.objective import PINNObjective
from parallel_ms.training.schedules import CoarseRefresh, Tau2Continuation


@dataclass
class Setup:
    problem: Problem
    coarse_mesh: object
    net: nn.Module
    forward: PINNForward
    objective: PINNObjective
    #: the fine problem's terms on the fixed validation points (``sampling.validation``)
    validation: PINNObjective | None = None
    #: importance sampling near the boundary (``sampling.layer_width``; inactive: off)
    layer: BoundaryLayer = BoundaryLayer()


def build(cfg: Config, ctx: ParallelContext) -> Setup:
    problem = cfg.problem.build()
    cells = cfg.coarse.cells or DEFAULT_COARSE_CELLS[problem.dim]
    if ctx.size > cells ** problem.dim:
        raise UserError(f"coarse.cells = {cells} gives {cells ** problem.dim} coarse cells for "
                        f"{ctx.size} MPI ranks (allowed: at least one coarse cell per rank; the "
                        f"coarse cells shard the points)", collective=True)
    mesh = unit_mesh(problem.dim, cells, ctx.comm, partitioner=cfg.coarse.partitioner)
    layer = BoundaryLayer.of(cfg.sampling)
    shard = sample(mesh, cfg.sampling.interior, cfg.sampling.boundary, cfg.sampling.method,
                   cfg.sampling.seed, ctx.comm, layer)
    c = cfg.coupling
    outputs = cfg.outputs
    net = build_network(cfg.network, problem, outputs).to(ctx.device)
    forward = PINNForward(net, cfg.loss.derivatives)
    fine = lambda points, refresh=None: PINNObjective(  # noqa: E731
        problem, points, DTYPES[cfg.network.dtype], ctx.device, cfg.loss.tau1,
        cfg.network.hard_bc, outputs, refresh, cfg.loss.form)
    objective = fine(shard, CoarseRefresh.from_config(c))
    validation = None
    if cfg.sampling.validation:
        points = validation_sample(mesh, cfg.sampling.validation, cfg.sampling.method,
                                   cfg.sampling.seed)
        validation = fine(shard.with_interior(points, ctx.comm))
    if cfg.loss.tau_weak > 0:
        objective.attach_weak(cfg.loss.weak_cells, cfg.loss.tau_weak, ctx.comm,
                              cfg.loss.weak_norm)
    if cfg.train.method == "hybrid":
        objective.attach_coupling(Coupling(
            problem, mesh, cells=cells, points=shard.interior, k_points=objective.k,
            n_global=shard.n_interior, delta=c.delta or problem.eps, tau2=c.tau2,
            weights=c.weights, k12=c.k12, k22=c.k22, upscaling=c.upscaling, blocks=c.blocks,
            space=cfg.coarse.space, gmsfem=cfg.gmsfem, partitioner=cfg.coarse.partitioner,
            form=c.form, residual_form=cfg.loss.form),
            Tau2Continuation.from_config(c, cfg.train.steps))
    return Setup(problem, mesh, net, forward, objective, validation, layer)
