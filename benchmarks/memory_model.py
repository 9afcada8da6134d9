"""Measure the constants of the resource guard (parallel_ms/resources.py): peak memory of
one process at two sizes, the slope per dof (reference solves) or per collocation point (a
short hybrid run), next to the constant the guard uses.

    .venv/bin/python benchmarks/memory_model.py [--json FILE]

Peak memory is the child's maximum resident set size (getrusage), one fresh process per
measurement. Takes about three minutes on 2 cores (the 2D P2 reference must be cached or is
solved once).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("FIREDRAKE_DISABLE_OPTIONS_LEFT", "1")  # our options are not PETSc's
from parallel_ms import resources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")


def peak(args: list[str]) -> int:
    """Peak resident bytes of ``python -m parallel_ms ARGS`` in a fresh process."""
    out = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "parallel_ms",
                          *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.strip())


def reference_slope(case: str, degree: int, sizes: tuple[int, int], dim: int) -> dict:
    dofs = [(degree * n + 1) ** dim for n in sizes]
    peaks = [peak(["reference", "--case", case, "--degree", str(degree), "--resolution",
                   str(n), "--no-cache"]) for n in sizes]
    return {"what": f"reference {dim}D P{degree}, bytes per dof", "sizes": list(sizes),
            "peaks": peaks, "measured": (peaks[1] - peaks[0]) / (dofs[1] - dofs[0]),
            "guard": resources.REFERENCE_PER_DOF[dim, degree]}


def point_slope(sizes: tuple[int, int], root: str) -> dict:
    """Bytes per collocation point of a 2D hybrid run with the default Ms-FF network; the
    guard's value is its per-point estimate for the same settings."""
    from parallel_ms import config
    from parallel_ms.problems import get_case
    peaks = [peak(["run", "--method", "hybrid", "--points", str(m), "--steps", "3",
                   "--set", "output.fields=false", "--set", "train.eval_every=1000",
                   "--set", "output.progress=log", "--set", f"output.root={root}"])
             for m in sizes]
    cfg = config.load(None, ["train.method=hybrid", f"sampling.interior={sizes[0]}"])
    est = {e.setting: e.nbytes for e in resources.run_estimates(cfg, get_case("paper-2d"), 1)}
    per_point = est["sampling.interior / sampling.boundary"] / (sizes[0] + cfg.sampling.boundary)
    return {"what": "2D hybrid run, default Ms-FF, bytes per point", "sizes": list(sizes),
            "peaks": peaks, "measured": (peaks[1] - peaks[0]) / (sizes[1] - sizes[0]),
            "guard": per_point}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    p.add_argument("--runs", default="/tmp/parallel_ms-memory-model",
                   help="output.root of the measured runs")
    args = p.parse_args()
    base = peak(["info"])
    rows = [{"what": "process base (info: torch, PETSc, Firedrake loaded), bytes",
             "sizes": [], "peaks": [base], "measured": base, "guard": resources.BASE},
            reference_slope("paper-2d", 2, (150, 300), 2),
            reference_slope("paper-2d", 1, (300, 600), 2),
            reference_slope("paper-1d-eps0_01", 2, (100_000, 1_000_000), 1),
            point_slope((5000, 40000), args.runs)]
    print(f"{'what':<62} {'measured':>10} {'guard':>10}")
    for r in rows:
        print(f"{r['what']:<62} {r['measured']:>10.0f} {r['guard']:>10.0f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
