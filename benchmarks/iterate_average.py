"""Is a run's error noise of the point sets or a bias? Continue a finished run from its
checkpoint (read only: the run directory is not written) and report, every K steps, the rel.
L2/H1 errors of the iterate beside those of the Polyak-Ruppert average of the iterates since
the checkpoint. Averaging removes what changes from step to step (the fit to each new point
set); an error that the average keeps is the iterates' common bias.

    mpiexec -n R .venv/bin/python benchmarks/iterate_average.py RUN_DIR --to STEP
        [--every K] [--set key=value ...] [--json F]

R is the rank count of the run (its checkpoint is per rank); ``--set`` overrides the run's
config.toml for the continuation (e.g. sampling.interior=18000: more points per step).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from common import continued, write_json


def average(mean: dict[str, torch.Tensor] | None, state: dict[str, torch.Tensor],
            n: int) -> dict[str, torch.Tensor]:
    """The running mean of n state_dicts from that of the first n - 1 and the n-th."""
    now = {k: v.detach().clone() for k, v in state.items()}
    return now if mean is None else {k: mean[k] + (now[k] - mean[k]) / n for k in mean}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("--to", type=int, required=True, help="last step of the continuation")
    p.add_argument("--every", type=int, default=5, help="evaluate every K steps (default 5)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    from parallel_ms import parallel
    from parallel_ms.training.loop import Callback

    class Averages(Callback):
        """The running average of the iterates, evaluated with the iterate every K steps."""

        def __init__(self, start: int) -> None:
            self.start, self.mean, self.rows = start, None, []

        def on_step_end(self, trainer: Any, row: dict[str, Any]) -> None:
            n = row["step"] - self.start
            self.mean = average(self.mean, trainer.s.net.state_dict(), n)
            if n % args.every:
                return
            l2, h1 = trainer.errors()
            l2_avg, h1_avg = trainer.errors(trainer.network_holding(self.mean))
            self.rows.append({"step": row["step"], "residual": row["residual"],
                              "rel_l2": l2, "rel_h1": h1,
                              "rel_l2_average": l2_avg, "rel_h1_average": h1_avg})
            parallel.print0("| " + " | ".join(f"{v:.3g}" for v in self.rows[-1].values())
                            + " |")

    trainer = continued(args.run, [*args.set, f"train.steps={args.to}"])
    start = trainer.current_step
    parallel.print0(f"{args.run} from step {start} to {args.to}, "
                    f"{' '.join(args.set) or 'its own config'}\n\n"
                    "| step | residual loss | rel. L2 | rel. H1 | rel. L2, average "
                    "| rel. H1, average |\n|---|---|---|---|---|---|")
    averages = Averages(start)
    trainer.run(callbacks=[averages])
    rows = averages.rows
    if trainer.ctx.is_root:
        write_json(args.json, {"run": str(args.run), "from": start, "overrides": args.set,
                               "rows": rows})
    return 0


if __name__ == "__main__":
    from parallel_ms.parallel import run_main
    raise SystemExit(run_main(main))
