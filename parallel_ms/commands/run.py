"""``python -m parallel_ms run``: train (plain PINN / Ms-PINN / hybrid), checkpoint, resume,
survive preemption, and leave a run directory with metrics, summary, plots and fields."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from parallel_ms import config, parallel
from parallel_ms.commands.options import add_config_options, path, resolve
from parallel_ms.errors import Diverged, UserError, describe
from parallel_ms.io.rundir import RunDirectory, check_root

if TYPE_CHECKING:
    from parallel_ms.fine.sampling import Shard

CHECKPOINT = "checkpoint.h5"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train on a case (method pinn or hybrid) and report rel. "
                                   "L2/H1 errors",
                       description="Train a (multiscale Fourier-feature) PINN, plain or hybrid "
                                   "(Algorithm 3.1), on a case, data parallel over the MPI "
                                   "ranks; the errors reported are those of the best iterate "
                                   "(train.best_by: the smallest estimated rel. L2 error, or "
                                   "fine-problem loss (3.24)). SIGTERM/SIGUSR1 checkpoint "
                                   "after the current step and exit 0.")
    add_config_options(p)
    p.add_argument("--resume", type=path, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its checkpoint (its config.toml, "
                        "then --set overrides, e.g. --set train.steps=20000 to extend it)")


def _resume_config(args: argparse.Namespace) -> config.Config:
    run_dir: Path = args.resume
    if args.config is not None:
        raise UserError("--config with --resume (allowed: one of them; a resumed run uses "
                        "its own config.toml)", collective=True)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"--resume '{run_dir}' is not a run directory (allowed: a directory "
                        f"written by 'run', holding config.toml and {CHECKPOINT})",
                        collective=True)
    args.config = run_dir / "config.toml"
    cfg = resolve(args)
    own = config.load(args.config).problem
    for key, value in dataclasses.asdict(cfg.problem).items():
        if value != (kept := getattr(own, key)):
            shown = "unset (the case's value)" if kept is None else repr(kept)
            raise UserError(f"problem.{key} = {value!r} with --resume (allowed: the run's own, "
                            f"{shown}: its checkpoint, best iterate and reference belong to "
                            f"that problem; start a new run for another)", collective=True)
    cfg.output.root, cfg.output.name = str(run_dir.parent), run_dir.name
    return cfg


def main(args: argparse.Namespace) -> int:
    cfg = _resume_config(args) if args.resume is not None else resolve(args)
    ctx = parallel.init(cfg.parallel.device)
    check_root(cfg.output.root, ctx.comm)
    from parallel_ms.resources import check_run
    # before anything large is allocated (and before the run dir, whose config.toml then names
    # the curvature solver that "auto" picked)
    picked = check_run(cfg, ctx.comm)
    if picked:
        parallel.print0(picked)
    run_dir = RunDirectory(Path(cfg.output.root), cfg.output.name, cfg, ctx.is_root, ctx.comm)
    try:
        return _train(args, cfg, ctx, run_dir)
    except Diverged as err:
        run_dir.update("diverged", reason=str(err))
        raise
    except UserError as err:
        run_dir.update("failed", reason=str(err))
        raise
    except (Exception, KeyboardInterrupt) as err:   # a bug or Ctrl-C: type and first line
        run_dir.update("failed", reason=describe(err))
        raise


def _points(cfg: config.Config, shard: "Shard", step: int = 1) -> str:
    """The run header's point count: the boundary points only where their rows are used (no
    hard boundary condition), the configured count of ``step`` (the next one) where fresh
    points replace the current ones (at a resume the checkpoint's set may have another size)."""
    c = cfg.sampling
    interior = (f"{c.interior_at(step)} fresh interior points every {c.resample_every} step(s)"
                if c.resample_every else f"{shard.n_interior} interior points")
    return interior + (" (hard boundary condition)" if cfg.network.hard_bc
                       else f" + {shard.n_boundary} boundary points")


def _train(args: argparse.Namespace, cfg: config.Config, ctx: parallel.ParallelContext,
           run_dir: RunDirectory) -> int:
    from parallel_ms.io import checkpoint
    from parallel_ms.io.progress import Progress
    from parallel_ms.training.loop import Trainer
    from parallel_ms.training.preemption import Preemption
    trainer = Trainer(cfg, ctx)
    ckpt = run_dir.path / CHECKPOINT
    if args.resume is not None:
        replicated, mine, attrs = checkpoint.read(ckpt, ctx.comm)
        trainer.load_state_dict(replicated, mine)
        run_dir.resume_metrics(trainer.current_step)
        parallel.print0(f"resuming {run_dir.path} at step {trainer.current_step}")
    parallel.print0(f"{cfg.train.method} on {trainer.s.problem.name} "
                    f"({trainer.s.problem.summary()}); {cfg.network.kind} network, "
                    f"{sum(p.numel() for p in trainer.params)} parameters, {cfg.network.dtype}; "
                    f"{_points(cfg, trainer.s.objective.shard, trainer.current_step + 1)} on "
                    f"{ctx.size} rank(s), device {ctx.device}; run directory {run_dir.path}")
    if trainer.s.objective.coupling is not None:
        parallel.print0(trainer.s.objective.coupling.describe())

    def save() -> None:
        replicated, mine = trainer.state_dict()
        checkpoint.write(ckpt, replicated, mine, {"step": trainer.current_step,
                                                  "method": cfg.train.method,
                                                  "case": trainer.s.problem.name}, ctx.comm)
        run_dir.update(checkpoint_step=trainer.current_step)

    progress = Progress(cfg.train.steps, cfg.train.log_every, cfg.output.progress, ctx.is_root)

    def log(row: dict) -> None:
        run_dir.log(row)
        progress(row)

    try:
        with Preemption(ctx.comm) as preemption:
            result = trainer.run(log, save, preemption.requested)
    finally:
        progress.close()
        run_dir.close()
    last = result.history[-1] if result.history else {}
    run_dir.update(
        method=cfg.train.method, case=trainer.s.problem.name, device=str(ctx.device),
        steps=result.steps, wall_time_s=result.wall_time, best_step=result.best_step,
        best_by=cfg.train.best_by, best_criterion=result.best_criterion,
        rel_l2=result.rel_l2, rel_h1=result.rel_h1,
        k11_best=result.k11_best, k11_end=last.get("k11"), **result.estimate)
    if result.preempted:
        run_dir.update("preempted", reason=f"{preemption.name} received")
        parallel.print0(f"{preemption.name} received: stopped after step {result.steps}, "
                        f"checkpoint {ckpt}; continue with: python -m parallel_ms run --resume "
                        f"{run_dir.path}")
        return 0
    if not result.history:
        run_dir.update("completed")
        parallel.print0(f"nothing to do: the run is at step {result.steps} and train.steps = "
                        f"{cfg.train.steps} (extend it with --set train.steps=N)")
        return 0
    criterion = "estimated rel. L2" if cfg.train.best_by == "estimate" else "fine loss"
    parallel.print0(f"done: {result.steps} steps in {result.wall_time:.1f} s; best iterate "
                    f"(smallest {criterion} {result.best_criterion:.4e}) at step "
                    f"{result.best_step}: rel. L2 error {result.rel_l2:.4e}, "
                    f"rel. H1 error {result.rel_h1:.4e}")
    if result.estimate:
        e = result.estimate
        parallel.print0(f"error estimate (no reference used): rel. L2 "
                        f"{e['estimated_rel_l2']:.4e}, rel. H1 {e['estimated_rel_h1']:.4e}; "
                        f"the corrected answer v + e_h: rel. L2 error "
                        f"{e['corrected_rel_l2']:.4e}, rel. H1 error {e['corrected_rel_h1']:.4e}")
    outputs = "config.toml, metrics.csv, summary.json, checkpoint.h5"
    if cfg.output.fields:
        from parallel_ms.io.fields import write_fields
        from parallel_ms.io.plots import make_plots
        from parallel_ms.training.fields import field_arrays
        s = trainer.s
        with trainer.best_iterate():
            correction = trainer.estimate().correction if cfg.estimate.enabled else None
            groups = field_arrays(s.net, s.forward, s.objective, s.objective.coupling,
                                  trainer.reference(), correction)
            write_fields(run_dir.path, groups, {"dim": s.problem.dim, "case": s.problem.name})
        if ctx.is_root:
            make_plots(run_dir.path)
        outputs += ", history.png, fields.png, fields.h5, fields/*.pvd (ParaView)"
    run_dir.update("completed")
    parallel.print0(f"results: {run_dir.path}/ ({outputs})")
    return 0
