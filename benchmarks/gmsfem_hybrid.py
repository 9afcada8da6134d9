"""The hybrid method on the GMsFEM coarse space against the P1-upscaled hybrid and the PINN
alone, on high-contrast cases: error against training time over seeds, the same steps each.

    .venv/bin/python benchmarks/gmsfem_hybrid.py [--cases channels-2d high-contrast-2d]
        [--variants pinn hybrid-p1 hybrid-gmsfem hybrid-gmsfem-galerkin] [--seeds 0 1 2]
        [--steps 30] [--ranks 2] [--tau2 1e9] [--set KEY=VALUE ...] [--root DIR] [--json F]

Each run is ``mpiexec -n R python -m parallel_ms run --case NAME --method M --seed S`` with the
case defaults (``parallel_ms/case_defaults.py``) and ``train.steps``, evaluated every 5 steps;
``hybrid-p1`` is the P1-upscaled hybrid of the paper's 2D case (tau_2 = 1, continuation 0.5);
the GMsFEM variant adds ``coarse.space=gmsfem`` with ``coupling.tau2`` (the coupling must
outweigh a strong-form residual of size ~1e11 at contrast 1e4) and no tau_2 continuation (its
coarse state is consistent: nothing to decay); ``hybrid-p1-strong`` (not run by default) is
the P1-upscaled hybrid with the same tau_2, to tell the coarse space's effect from the
weight's; ``hybrid-gmsfem-galerkin`` couples by the error's Galerkin projection onto V_ms
(``coupling.form=galerkin``, zero at the solution; tau_2 = 1, not decayed). Runs that
completed before with the same command are not rerun (:func:`seeds.run_seed`). Per case and
variant: each seed's best-iterate rel. L2 (the reported answer), the training time to rel. L2
<= 1 and <= 0.5 (first evaluation at or below), and the wall time.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from common import machine, write_json
from reproduce import first_reach, history
from seeds import ROOT, run_seed

#: the variants: method, extra settings (over the case defaults, which for the hybrid on
#: channels-2d are the GMsFEM variant's); the strongly coupled ones also get coupling.tau2 =
#: --tau2 and no continuation
P1 = ["coarse.space=p1"]
VARIANTS = {"pinn": ("pinn", []),
            "hybrid-p1": ("hybrid", P1 + ["coupling.tau2=1", "coupling.continuation=0.5"]),
            "hybrid-p1-strong": ("hybrid", P1 + ["coupling.continuation=0"]),
            "hybrid-gmsfem": ("hybrid", ["coarse.space=gmsfem", "coupling.continuation=0"]),
            "hybrid-gmsfem-galerkin": ("hybrid", ["coarse.space=gmsfem", "coupling.form=galerkin",
                                                  "coupling.tau2=1", "coupling.continuation=0"])}
STRONG = ("hybrid-p1-strong", "hybrid-gmsfem")
DEFAULT_VARIANTS = ["pinn", "hybrid-p1", "hybrid-gmsfem", "hybrid-gmsfem-galerkin"]
THRESHOLDS = (1.0, 0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["channels-2d", "high-contrast-2d"])
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--tau2", type=float, default=1e9, help="coupling.tau2 of hybrid-gmsfem")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every run (after the variant's)")
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "gmsfem_hybrid")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rows = []
    for case in args.cases:
        for variant in args.variants:
            method, extra = VARIANTS[variant]
            sets = [f"train.steps={args.steps}", "train.eval_every=5", *extra]
            if variant in STRONG:
                sets.append(f"coupling.tau2={args.tau2:g}")
            sets += args.set
            root = args.root.resolve() / case / variant
            for seed in args.seeds:
                s = run_seed(None, seed, args.ranks, sets, root,
                             ("--case", case, "--method", method))
                _, errors, _, times = history(root / f"seed{seed}")
                rows.append({"case": case, "variant": variant, "seed": seed,
                             "rel_l2": s["rel_l2"], "min_rel_l2": min(errors),
                             **{f"time_to_{t:g}_s": first_reach(times, errors, t)
                                for t in THRESHOLDS},
                             "wall_s": s.get("command_wall_s")})
                print(f"  {case} {variant} seed {seed}: rel. L2 {s['rel_l2']:.3e}", flush=True)
    mach = machine()
    print(f"\n{args.steps} steps, {args.ranks} ranks, seeds {args.seeds}; {mach['cpu']}, "
          f"{mach['cores']} cores")
    print("| case | variant | rel. L2 (best iterate) per seed | median | time to <= 1 / <= 0.5 "
          "(s, per seed) | wall (s) |")
    print("|---|---|---|---|---|---|")
    cell = lambda v: "—" if v is None else f"{v:.0f}"  # noqa: E731
    for case in args.cases:
        for variant in args.variants:
            rs = [r for r in rows if r["case"] == case and r["variant"] == variant]
            errs = [r["rel_l2"] for r in rs]
            reach = " / ".join(", ".join(cell(r[f"time_to_{t:g}_s"]) for r in rs)
                               for t in THRESHOLDS)
            walls = ", ".join(cell(r["wall_s"]) for r in rs)
            print(f"| {case} | {variant} | {', '.join(f'{e:.3g}' for e in errs)} | "
                  f"{np.median(errs):.3g} | {reach} | {walls} |")
    if args.json:
        write_json(args.json, {"steps": args.steps, "ranks": args.ranks, "tau2": args.tau2,
                               "rows": rows, "machine": mach})


if __name__ == "__main__":
    main()
