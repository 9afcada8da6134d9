"""``python -m parallel_ms run``: train (plain PINN / Ms-PINN) and report the errors."""
from __future__ import annotations

import argparse
from pathlib import Path

from parallel_ms import parallel
from parallel_ms.commands.options import add_config_options, resolve
from parallel_ms.io.rundir import RunDirectory


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train on a case (method pinn or hybrid) and report rel. "
                                   "L2/H1 errors",
                       description="Train a (multiscale Fourier-feature) PINN, plain or hybrid "
                                   "(Algorithm 3.1), on a case, data parallel over the MPI "
                                   "ranks; the errors reported are those of the iterate with "
                                   "the smallest residual loss.")
    add_config_options(p)


def main(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    ctx = parallel.init(cfg.parallel.device)
    from parallel_ms.training.loop import Trainer
    trainer = Trainer(cfg, ctx)
    s = trainer.s.objective.shard
    parallel.print0(f"{cfg.train.method} on {trainer.s.problem.name} "
                    f"({trainer.s.problem.summary()}); {cfg.network.kind} network, "
                    f"{sum(p.numel() for p in trainer.params)} parameters, {cfg.network.dtype}; "
                    f"{s.n_interior} interior + {s.n_boundary} boundary points on "
                    f"{ctx.size} rank(s), device {ctx.device}")
    run_dir = RunDirectory(Path(cfg.output.root), cfg.output.name, cfg, ctx.is_root, ctx.comm)
    try:
        result = trainer.run(run_dir.log)
    finally:
        run_dir.close()
    last = result.history[-1] if result.history else {}
    run_dir.summary({
        "method": cfg.train.method, "case": trainer.s.problem.name, "ranks": ctx.size,
        "device": str(ctx.device), "steps": result.steps, "wall_time_s": result.wall_time,
        "best_step": result.best_step, "best_residual": result.best_residual,
        "rel_l2": result.rel_l2, "rel_h1": result.rel_h1,
        "k11_best": result.k11_best, "k11_end": last.get("k11")})
    parallel.print0(f"done: {result.steps} steps in {result.wall_time:.1f} s; best iterate "
                    f"(smallest residual loss {result.best_residual:.4e}) at step "
                    f"{result.best_step}: rel. L2 error {result.rel_l2:.4e}, "
                    f"rel. H1 error {result.rel_h1:.4e}")
    parallel.print0(f"results: {run_dir.path}/ (config.toml, metrics.csv, summary.json)")
    return 0
