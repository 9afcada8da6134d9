"""Which scale a run's error lives on: the part of the fine error v - u_h (and, beside it, of
the solution u_h) carried by its averages over n x n boxes of the unit square (n = 10 boxes
per side on paper-2d: one per period cell, eps = 0.1), i.e. the coarse-scale part. The error
is the signed v - u_h (fields.h5's ``fine/error`` is |v - u_h|, whose box averages would
count an oscillation about zero as coarse).

    .venv/bin/python benchmarks/error_scales.py RUN_DIR [RUN_DIR ...] [--boxes 10] [--json F]

RUN_DIR is a finished run of ``python -m parallel_ms run`` (its fields.h5: the best iterate on
the reference's nodes, a uniform lattice, so plain node averages are the quadrature). A share
near 1 says the error is smooth at the coarse scale — a mode the residual loss weighs little
(the residual of a smooth error is small next to that of an oscillating one of the same size)
— near 0 that it oscillates inside the cells. For a hybrid run, the last column compares the
coupling's own mismatch, the rms of Q v - y_h over the coarse nodes (fields.h5's
``coarse/qv`` and ``coarse/y``), with the rms of the error: above 1, the coupling cannot see
an error of that size (its consistency gap is larger).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from common import write_json


def rms(values: np.ndarray) -> float:
    return float(np.sqrt((values ** 2).mean()))


def coarse_share(values: np.ndarray, x: np.ndarray, boxes: int) -> float:
    """||P f||^2 / ||f||^2 where P f is the mean of f over the box of each node."""
    cell = np.minimum((x * boxes).astype(int), boxes - 1)
    index = np.ravel_multi_index(tuple(cell.T), (boxes,) * x.shape[1])
    sums = np.bincount(index, weights=values, minlength=boxes ** x.shape[1])
    counts = np.bincount(index, minlength=boxes ** x.shape[1])
    means = sums / np.maximum(counts, 1)
    return float((means[index] ** 2).sum() / (values ** 2).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--boxes", type=int, default=10, help="boxes per side (default 10)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rows = []
    print("| run | rel. L2 (nodes) | coarse share of the error | coarse share of u "
          "| mean error / rms error | rms (Q v - y) / rms error |\n|---|---|---|---|---|---|")
    for run in args.runs:
        if not (run / "fields.h5").is_file():
            p.error(f"'{run}' has no fields.h5 (a finished run directory is needed)")
        with h5py.File(run / "fields.h5") as f:
            x, u, v = (f[f"fine/{k}"][()] for k in ("coordinates", "u", "v"))
            gap = (rms(f["coarse/qv"][()] - f["coarse/y"][()]) if "coarse" in f
                   else float("nan"))
        e = v - u
        x = x.reshape(len(u), -1)
        row = {"run": str(run), "rel_l2_nodes": float(np.linalg.norm(e) / np.linalg.norm(u)),
               "error_share": coarse_share(e, x, args.boxes),
               "u_share": coarse_share(u, x, args.boxes),
               "mean_over_rms": float(e.mean()) / rms(e), "coupling_over_error": gap / rms(e)}
        rows.append(row)
        print(f"| {run} | {row['rel_l2_nodes']:.3g} | {row['error_share']:.3f} "
              f"| {row['u_share']:.3f} | {row['mean_over_rms']:.3f} "
              f"| {row['coupling_over_error']:.3g} |")
    write_json(args.json, {"boxes": args.boxes, "runs": rows})


if __name__ == "__main__":
    main()
