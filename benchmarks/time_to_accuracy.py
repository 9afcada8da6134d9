"""Time to accuracy of finished runs: relative L2 error against training time, one curve per
run (runs with the same LABEL, e.g. the seeds of one method, share a colour), and the
training time at which each run first reached each target error; for runs that log the best
iterate so far (``best_rel_l2``), the largest error of that answer after it first reached the
smallest target (at or below it: the run's answer stays there from then on).

    .venv/bin/python benchmarks/time_to_accuracy.py LABEL=RUN_DIR [LABEL=RUN_DIR ...]
        [--targets 0.1 0.05 0.0128] [--title T] [--out FIG.png] [--json F]

RUN_DIR is a run directory of ``python -m parallel_ms run`` (its metrics.csv: the errors at
the evaluation steps, ``train_time`` = wall time less validation). Runs made by any command,
on any number of ranks, can be compared; the table is printed as Markdown.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import plot_errors, write_json
from reproduce import first_reach, history


def best_after(path: Path, target: float) -> float | None:
    """The largest rel. L2 error of the best iterate so far (metrics.csv's ``best_rel_l2``)
    from its first evaluation at or below ``target`` to the end: what the run returns when
    stopped anywhere after that (None: never at the target, or no such column)."""
    _, best, _, _ = history(path, "best_rel_l2")
    first = next((i for i, e in enumerate(best) if e <= target), None)
    return None if first is None else max(best[first:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR")
    p.add_argument("--targets", type=float, nargs="+", default=[0.1, 0.05, 0.0128])
    p.add_argument("--title", default="time to accuracy")
    p.add_argument("--out", type=Path, default=None, help="figure (PNG)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    runs: list[tuple[str, Path]] = []
    for item in args.runs:
        label, sep, path = item.rpartition("=")
        if not sep or not label or not (Path(path) / "metrics.csv").is_file():
            p.error(f"'{item}' is not LABEL=RUN_DIR with RUN_DIR/metrics.csv")
        runs.append((label, Path(path)))
    rows = []
    last = min(args.targets)
    print("| run | ranks | steps | training time (s) | last rel. L2 | smallest rel. L2 | "
          + " | ".join(f"time to {t:g} (s)" for t in args.targets)
          + f" | best iterate after {last:g}: largest rel. L2 |")
    print("|---" * (7 + len(args.targets)) + "|")
    for label, path in runs:
        steps, errors, _, times = history(path)
        summary = json.loads((path / "summary.json").read_text())
        reach = [first_reach(times, errors, t) for t in args.targets]
        after = best_after(path, last)
        rows.append({"label": label, "path": str(path), "steps": steps, "rel_l2": errors,
                     "train_time": times, "ranks": summary.get("ranks"),
                     "time_to": dict(zip(map(str, args.targets), reach)),
                     "best_after_smallest_target": after})
        print(f"| {label} | {summary.get('ranks')} | {steps[-1]} | {times[-1]:.0f} "
              f"| {errors[-1]:.3g} | "
              f"{min(errors):.3g} | "
              + " | ".join("—" if r is None else f"{r:.0f}" for r in reach)
              + f" | {'—' if after is None else f'{after:.3g}'} |")
    if args.out:
        curves: dict[str, list[tuple[list[float], list[float]]]] = {}
        for r in rows:
            curves.setdefault(r["label"], []).append((r["train_time"], r["rel_l2"]))
        plot_errors(curves, args.title,
                    "training time (s), validation excluded", args.out, loglog=True)
    write_json(args.json, {"targets": args.targets, "runs": rows})


if __name__ == "__main__":
    main()
