"""GMsFEM on the high-contrast non-periodic cases: per case and contrast, the coarse error of
GMsFEM against its basis count L beside the P1 coarse solutions with an upscaled coefficient,
with offline and online times (the study of ``python -m parallel_ms gmsfem``,
parallel_ms/multiscale/study.py).

    .venv/bin/python benchmarks/gmsfem.py [--cases channels-2d random-inclusions-2d]
        [--contrasts 1e4] [--cells 10] [--refinement 16] [--basis 1,2,4,8] [--json F]
    mpiexec -n 2 .venv/bin/python benchmarks/gmsfem.py

The last lines check the issue's target on each case: the error falls with L, and with L = 4
it is >= 5x below the P1-upscaled coarse error (both P1 variants are named).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mpi4py import MPI

from common import machine, write_json

from parallel_ms.config import CHOICES


def _targets(study) -> list[str]:
    """The issue's targets, measured (rel. L2; the energy error is the one Galerkin's optimality
    makes monotone)."""
    l2 = [row.rel_l2 for row in study.rows]
    energy = [row.rel_energy for row in study.rows]
    falls = all(b < a for a, b in zip(l2, l2[1:]))
    lines = [f"  rel. L2 falls with L: {'yes' if falls else 'no'} "
             f"({', '.join(f'{e:.3g}' for e in l2)}); rel. energy falls: "
             f"{'yes' if all(b < a for a, b in zip(energy, energy[1:])) else 'no'}"]
    four = next((row for row in study.rows if row.basis == 4), None)
    if four is not None:
        for label, l2, energy in (
                ("K~ per square", study.p1_upscaled_rel_l2, study.p1_upscaled_rel_energy),
                ("scalar K~_11", study.p1_scalar_rel_l2, study.p1_scalar_rel_energy)):
            lines.append(f"  L = 4 vs P1 with {label}: {l2 / four.rel_l2:.1f}x lower rel. L2, "
                         f"{energy / four.rel_energy:.1f}x lower rel. energy (target >= 5x)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["channels-2d", "random-inclusions-2d"])
    p.add_argument("--contrasts", type=float, nargs="+", default=[1e4])
    p.add_argument("--cells", type=int, default=10)
    p.add_argument("--refinement", type=int, default=16)
    p.add_argument("--basis", default="1,2,4,8")
    p.add_argument("--eigensolver", default="sparse", choices=CHOICES["gmsfem.eigensolver"])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    from parallel_ms import parallel
    from parallel_ms.commands.gmsfem import table
    from parallel_ms.config import GmsfemConfig
    from parallel_ms.multiscale.study import gmsfem_study
    from parallel_ms.problems import get_case
    comm = MPI.COMM_WORLD
    settings = GmsfemConfig(refinement=args.refinement, eigensolver=args.eigensolver)
    bases = [int(b) for b in args.basis.split(",")]
    studies = []
    for case in args.cases:
        for contrast in args.contrasts:
            study = gmsfem_study(get_case(case, contrast=contrast), args.cells, bases, settings)
            studies.append(study)
            if comm.rank == 0:
                print("\n".join(table(study) + _targets(study)) + "\n", flush=True)
    if comm.rank == 0:
        mach = machine()
        print(f"machine: {mach['cpu']}, {mach['cores']} cores, {comm.size} rank(s)")
        write_json(args.json, {"machine": mach, "ranks": comm.size,
                               "studies": [s.to_json() for s in studies]})
    parallel.finalize()


if __name__ == "__main__":
    main()
