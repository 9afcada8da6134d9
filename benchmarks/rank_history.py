"""Does the loss history depend on the number of ranks? One configuration, trained on each
rank count, compared step by step with the first.

    .venv/bin/python benchmarks/rank_history.py [--config parallel_ms/configs/default.toml]
        [--ranks 1 2 8] [--steps 10] [--set KEY=VALUE ...] [--root DIR] [--json F]

The point sets do not depend on the rank count (they are drawn globally and sharded), so the
runs differ only by the order of the reductions' sums. Each run is
``mpiexec -n R python -m parallel_ms run --config FILE --set train.steps=STEPS`` (error estimate
off, best iterate by the loss: only the training is compared); a completed run under --root
with the same command is reused (:func:`seeds.run_seed`). Prints per step the loss of the
first rank count and the relative difference of every other one.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from common import machine, write_json
from seeds import ROOT, run_seed


def losses(run: Path) -> dict[int, float]:
    """Step -> loss from a run's metrics.csv."""
    with open(run / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=ROOT / "parallel_ms/configs/default.toml")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 8])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "rank-history")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    sets = [f"train.steps={args.steps}", "estimate.enabled=false", "train.best_by=loss",
            *args.set]
    history = {}
    for ranks in args.ranks:
        root = args.root.resolve() / f"ranks{ranks}"
        run_seed(args.config.resolve(), args.seed, ranks, sets, root)
        history[ranks] = losses(root / f"seed{args.seed}")
    first, others = args.ranks[0], args.ranks[1:]
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores; {args.config.name} "
          f"seed {args.seed} {' '.join(args.set)}")
    print(f"{'step':>5}{f'loss ({first} rank)':>20}"
          + "".join(f"{f'rel. diff {r} ranks':>20}" for r in others))
    rows = []
    for step, loss in sorted(history[first].items()):
        diffs = {r: abs(history[r][step] - loss) / abs(loss) for r in others}
        rows.append({"step": step, "loss": loss, "rel_diff": diffs})
        print(f"{step:>5}{loss:>20.10e}" + "".join(f"{d:>20.2e}" for d in diffs.values()))
    worst = max((d for r in rows for d in r["rel_diff"].values()), default=0.0)
    print(f"largest relative difference over the steps: {worst:.2e}")
    write_json(args.json, {"machine": mach, "config": str(args.config), "ranks": args.ranks,
                           "set": sets, "rows": rows, "max_rel_diff": worst})


if __name__ == "__main__":
    main()
