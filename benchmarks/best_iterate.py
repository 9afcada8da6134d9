"""Which rule picks the best iterate of a run with fresh points every step? Continue a finished
run from its checkpoint (read only: the run directory is not written) and record at every step
the rel. L2/H1 errors beside the candidate selection losses:

- ``own``: the fine-problem loss (3.24) at the step's own points (after a Gauss-Newton step,
  the points it was just fitted to; the rule without ``sampling.validation``),
- ``validation``: the same loss at a fixed validation set (``sampling.validation``),
- ``weak``: the weak residual ||Phi r||^2 at that set (hat functions of ``loss.weak_cells``
  cells per direction, weight 1: the coarse-scale part of the residual).

Prints every step, then per rule the step it picks, the error there against the smallest
error of the continuation, and the rank correlation (Spearman) of the loss with the errors.

    mpiexec -n R .venv/bin/python benchmarks/best_iterate.py RUN_DIR --to STEP
        [--validation N] [--set key=value ...] [--json F]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from common import continued, write_json

RULES = ("own", "validation", "weak")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("--to", type=int, required=True, help="last step of the continuation")
    p.add_argument("--validation", type=int, default=20000,
                   help="validation points (default 20000)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    from parallel_ms import parallel
    from parallel_ms.training.loop import Callback

    class Selection(Callback):
        """Each step's candidate selection losses beside its errors (evaluated every step)."""

        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []

        def on_step_end(self, trainer: Any, row: dict[str, Any]) -> None:
            at = trainer.validation_terms()
            self.rows.append({"step": row["step"], "own": row["residual"] + row.get("boundary", 0.0),
                              "validation": row["validation"], "weak": at["weak"],
                              "rel_l2": row["rel_l2"], "rel_h1": row["rel_h1"]})
            parallel.print0("| " + " | ".join(f"{v:.4g}" for v in self.rows[-1].values()) + " |")

    trainer = continued(args.run, [f"sampling.validation={args.validation}", *args.set,
                                   f"train.steps={args.to}", "train.eval_every=1"])
    trainer.s.validation.attach_weak(trainer.cfg.loss.weak_cells, 1.0, trainer.ctx.comm)
    start = trainer.current_step
    parallel.print0(f"{args.run} from step {start} to {args.to}, {args.validation} validation "
                    f"points, {' '.join(args.set) or 'its own config'}\n\n"
                    "| step | own | validation | weak | rel. L2 | rel. H1 |\n"
                    "|---|---|---|---|---|---|")
    selection = Selection()
    trainer.run(callbacks=[selection])
    rows = selection.rows
    l2s = [r["rel_l2"] for r in rows]
    picks = {}
    parallel.print0(f"\nsmallest rel. L2 of the continuation: {min(l2s):.4g} (step "
                    f"{rows[int(np.argmin(l2s))]['step']}); last: {l2s[-1]:.4g}\n\n"
                    "| rule | picks step | its rel. L2 | its rel. H1 | Spearman with rel. L2 "
                    "| Spearman with rel. H1 |\n|---|---|---|---|---|---|")
    for rule in RULES:
        losses = [r[rule] for r in rows]
        pick = rows[int(np.argmin(losses))]
        picks[rule] = {"step": pick["step"], "rel_l2": pick["rel_l2"], "rel_h1": pick["rel_h1"],
                       "spearman_l2": float(spearmanr(losses, l2s)[0]),
                       "spearman_h1": float(spearmanr(losses, [r["rel_h1"] for r in rows])[0])}
        q = picks[rule]
        parallel.print0(f"| {rule} | {q['step']} | {q['rel_l2']:.4g} | {q['rel_h1']:.4g} "
                        f"| {q['spearman_l2']:.2f} | {q['spearman_h1']:.2f} |")
    if trainer.ctx.is_root:
        write_json(args.json, {"run": str(args.run), "from": start, "overrides": args.set,
                               "validation": args.validation, "rows": rows, "picks": picks})
    return 0


if __name__ == "__main__":
    from parallel_ms.parallel import run_main
    raise SystemExit(run_main(main))
