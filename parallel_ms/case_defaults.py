"""Defaults per case and method: the settings that stand in for a ``--config`` file when a
command is given none (``run --case NAME --method METHOD``).

Two tables, each holding only the keys that differ from :class:`parallel_ms.config.Config`'s
defaults (which are the paper's first-order Adam settings):

* :data:`MEASURED`: the measured Gauss–Newton training per method of the paper's cases
  (docs/results.md §4.3; ``parallel_ms/configs/default.toml`` and ``jobs/paper-*.toml`` hold
  the same settings as files, and a test keeps them equal) and of the other cases where it
  differs from theirs (§4.5);
* :data:`PAPER`: the paper's first-order Adam settings per case (``--paper``;
  ``jobs/*-adam.toml``); a case not listed uses Config's defaults.

A user case (``FILE.py:NAME``) has no entry in either: the measured training of its dimension
(:data:`GENERIC`), or with ``--paper`` Config's defaults."""
from __future__ import annotations

from typing import Any, Callable

#: ``section.key`` -> value, as in a TOML file
Settings = dict[str, Any]

#: 1D Gauss–Newton (Levenberg–Marquardt, explicit J^T J, float64): 4,000 fixed points, 40 steps
_GN_1D: Settings = {"sampling.interior": 4000, "optimizer.kind": "gauss-newton",
                    "train.steps": 40, "train.eval_every": 5, "train.log_every": 1}
#: the hybrid method in 1D: tau_2 decays to 0 over the second half of the steps (without it the
#: consistency gap of the upscaled coarse problem stays: 5.3e-2 for eps = 0.01)
_HYBRID_1D: Settings = {"coupling.continuation": 0.5}
#: 2D Gauss–Newton: 2 x 48 tanh, 24 features per map (4,801 parameters), hard boundary
#: condition, 6,000 fresh interior points every step
_GN_2D: Settings = {"network.width": 48, "network.features": 24, "network.hard_bc": True,
                    "sampling.interior": 6000, "sampling.boundary": 800,
                    "sampling.resample_every": 1, "optimizer.kind": "gauss-newton",
                    "train.log_every": 1}
#: eps = 0.01: the two-scale network N_0(x) + eps N_1(x, x/eps) (2 x 32 tanh each, harmonics
#: 1-2: 2,434 parameters), soft boundary condition (jobs/paper-1d-eps0_01.toml)
_GN_1D_TWO_SCALE: Settings = {**_GN_1D, "network.kind": "two-scale", "network.width": 32,
                              "network.harmonics": 2}
#: eps = 1/15: Ms-FF 2 x 32 tanh, 16 features per map (2,177 parameters), hard boundary
#: condition (jobs/paper-1d-eps1_15.toml)
_GN_1D_MSFF: Settings = {**_GN_1D, "network.width": 32, "network.features": 16,
                         "network.hard_bc": True}

#: not periodic: the constant K~ of the coarse problem is inconsistent, so the coupling only
#: guides
_GUIDING: Settings = {"coupling.tau2": 1e-3}
_HYBRID_1D_NONPERIODIC: Settings = {**_GN_1D_MSFF, **_HYBRID_1D, **_GUIDING}

#: the run's answer the average of its last iterates, the best of them by the estimate at every
#: step (docs/usage.md); the iterate itself, estimated every 5 steps, where that was measured
_AVERAGED: Settings = {"train.ema_decay": 0.5, "estimate.every": 1}
_ITERATE: Settings = {"train.ema_decay": 0.0, "estimate.every": 5}
#: the dual-norm weak residual (parallel_ms/training/weak_residual.py)
_WEAK_DUAL: Settings = {"loss.tau_weak": 1e4, "loss.weak_norm": "dual"}
#: the embedded default run's training (paper-2d, hybrid) less its coupling: momentum, the
#: dual-norm weak residual, 60 steps, the average of the iterates
_DEFAULT_RUN_2D: Settings = {**_GN_2D, "optimizer.gn_momentum": 0.9, **_WEAK_DUAL,
                             "train.steps": 60, "train.eval_every": 20, **_AVERAGED}

#: case -> method -> the measured Gauss–Newton training
MEASURED: dict[str, dict[str, Settings]] = {
    "paper-2d": {   # pinn: jobs/paper-2d.toml; hybrid: the embedded default run
        "pinn": {**_GN_2D, "optimizer.gn_momentum": 0.9, "train.steps": 250,
                 "train.eval_every": 10, "output.checkpoint_every": 10, **_AVERAGED},
        "hybrid": {**_DEFAULT_RUN_2D, "coupling.continuation": 0.5}},
    "paper-1d-eps0_01": {"pinn": _GN_1D_TWO_SCALE, "hybrid": {**_GN_1D_TWO_SCALE, **_HYBRID_1D}},
    "paper-1d-eps1_15": {"pinn": _GN_1D_MSFF, "hybrid": {**_GN_1D_MSFF, **_HYBRID_1D}},
    # not periodic: the constant K~ of the coarse problem is inconsistent, so the coupling
    # only guides (tau_2 = 1e-3; with the paper's tau_2 = 1 the error stays at 1.1e-2 and
    # 6.4e-3 until tau_2 has decayed: docs/results.md §4.5)
    "locally-periodic-1d": {"pinn": _GN_1D_MSFF, "hybrid": _HYBRID_1D_NONPERIODIC},
    "quasi-periodic-1d": {"pinn": _GN_1D_MSFF, "hybrid": _HYBRID_1D_NONPERIODIC},
}
#: channels crossing the coarse cells: the hybrid on the GMsFEM coarse space, its coupling
#: strong enough to be felt beside a strong-form residual of ~1e11 and not decayed (its coarse
#: state is consistent): rel. L2 0.62-0.69 where the P1-upscaled hybrid gives 5.3-6.2
#: (docs/results-high-contrast.md, benchmarks/gmsfem_hybrid.py)
MEASURED["channels-2d"] = {
    "pinn": {**MEASURED["paper-2d"]["pinn"], **_ITERATE},
    "hybrid": {**MEASURED["paper-2d"]["hybrid"], "coarse.space": "gmsfem",
               "coupling.tau2": 1e9, "coupling.continuation": 0.0,
               "optimizer.gn_momentum": 0.0, "train.steps": 40, **_ITERATE}}

#: random inclusions (contrast 1e4) also cross the coarse cells: the hybrid on the GMsFEM space,
#: the embedded default run's training with tau_2 = 1e9 not decayed, 30 steps: rel. L2
#: 0.69-0.93 where the P1-upscaled hybrid gives 1.14-1.42 (seeds 0-2,
#: docs/results-high-contrast.md, benchmarks/gmsfem_hybrid.py)
MEASURED["random-inclusions-2d"] = {
    "pinn": MEASURED["paper-2d"]["pinn"],
    "hybrid": {**MEASURED["paper-2d"]["hybrid"], "coarse.space": "gmsfem",
               "coupling.tau2": 1e9, "coupling.continuation": 0.0, "train.steps": 30}}

#: locally periodic a(x, x/eps): the two-scale network on the case's fast waves (the axes) and
#: the dual-norm weak residual for both methods (docs/results.md §4.5, seed 0, PINN, 40 steps:
#: 1.5e-2; with the Ms-FF network the fine loss stalls near 1.5e3, best 0.16; without the weak
#: residual 0.42)
_TWO_SCALE_2D: Settings = {"network.kind": "two-scale", "network.harmonics": 2}
MEASURED["locally-periodic-2d"] = {
    "pinn": {**_DEFAULT_RUN_2D, **_TWO_SCALE_2D},
    "hybrid": {**MEASURED["paper-2d"]["hybrid"], **_TWO_SCALE_2D}}

#: quasi-periodic a(x/eps): the two-scale network on the case's fast waves, the dual-norm weak
#: residual on 20 cells, Sobol points, 12,000 points a step (quieter steps than on 6,000), 60
#: steps (docs/results.md §4.5)
_QUASI_PERIODIC_2D: Settings = {**_TWO_SCALE_2D, **_WEAK_DUAL, "loss.weak_cells": 20,
                                "sampling.method": "sobol", "sampling.interior": 12000}
MEASURED["quasi-periodic-2d"] = {
    "pinn": {**MEASURED["paper-2d"]["pinn"], **_QUASI_PERIODIC_2D, "train.steps": 60},
    "hybrid": {**MEASURED["paper-2d"]["hybrid"], **_QUASI_PERIODIC_2D}}

#: sharp high-contrast interfaces in 1D: the energy form of the residual on a composite Gauss
#: rule that resolves them (4,000 points: 2 per 2.5e-4), the Ms-FF network, the best iterate by
#: the loss (here the energy error plus a constant), the estimate on a mesh that resolves the
#: interfaces too (64 cells per period; with 4 it stays at 22-41x the error); docs/results.md
#: §4.5: the strong form lands at rel. L2 0.35-3.8 there, the energy form on Sobol points at
#: 2.8e-2. Random inclusions are not periodic: their hybrid's coupling only guides, as for the
#: other non-periodic cases.
_ENERGY_1D: Settings = {**_GN_1D_MSFF, "loss.form": "energy", "sampling.method": "gauss",
                        "train.best_by": "loss", "estimate.cells_per_period": 64}
MEASURED["high-contrast-1d"] = {"pinn": _ENERGY_1D, "hybrid": {**_ENERGY_1D, **_HYBRID_1D}}
MEASURED["random-inclusions-1d"] = {"pinn": _ENERGY_1D,
                                    "hybrid": {**_ENERGY_1D, **_HYBRID_1D_NONPERIODIC}}

#: sharp high-contrast interfaces in 2D (periodic inclusions): the coefficient-enriched
#: network v = N_0 + g N_1 with the energy form, 24,000 fresh points a step, 120 steps: rel. L2
#: 0.27-0.76 on seeds 0-2, losses still falling, where the strong form ends at 1.14-1.35 and
#: 6,000 points at 0.34-1.58; the estimate on a mesh that resolves the inclusions (16 cells per
#: period: 0.97-0.99 of the error; 4: 0.47-0.59), every 5th step (P2 on that mesh: a step with it
#: 20.7 s against 16.0 s without). The hybrid keeps the paper case's training
#: (docs/results.md §4.5)
MEASURED["high-contrast-2d"] = {
    "pinn": {**MEASURED["paper-2d"]["pinn"], "network.enrich": "coefficient",
             "loss.form": "energy", "sampling.interior": 24000, "train.steps": 120,
             "estimate.cells_per_period": 16, "estimate.every": 5},
    "hybrid": MEASURED["paper-2d"]["hybrid"]}

#: case -> the paper's first-order Adam settings (paper 000 §4.4; jobs/*-adam.toml)
PAPER: dict[str, Settings] = {
    "paper-1d-eps0_01": {"network.hard_bc": True, "sampling.interior": 5000,
                         "train.steps": 8000, "train.eval_every": 1000, "train.log_every": 500},
    "paper-1d-eps1_15": {"network.hard_bc": True, "sampling.interior": 2000,
                         "train.steps": 20000, "train.eval_every": 1000,
                         "train.log_every": 500},
    "paper-2d": {"train.steps": 80000, "train.eval_every": 5000, "train.log_every": 1000,
                 "output.checkpoint_every": 1000},
}


#: dimension -> method -> the training of a case with none measured (a user case,
#: ``FILE.py:NAME``): the Gauss–Newton training measured on most cases and seeds, not Config's
#: first-order defaults. 2D: the embedded default run's (momentum, the dual-norm weak residual,
#: 60 steps, the average of the iterates: seeds 0-9 of paper-2d, and the PINN of the locally
#: periodic case); 1D: the Ms-FF network of eps = 1/15. The hybrid's coupling as for the
#: non-periodic cases, tau_2 = 1e-3 decaying over the second half: a user's K_eps need not be
#: periodic, and then the constant K~ only guides (on the laminated example, with its drift,
#: seeds 0-2: 3.4e-2, 6.4e-3, 1.2e-2, where the default run's tau_2 = 1 gave 0.30, 9.4e-3,
#: 4.4e-3). Measured on examples/user_case.py: docs/results.md §4.5.
GENERIC: dict[int, dict[str, Settings]] = {
    1: {"pinn": _GN_1D_MSFF, "hybrid": _HYBRID_1D_NONPERIODIC},
    2: {"pinn": _DEFAULT_RUN_2D,
        "hybrid": {**MEASURED["paper-2d"]["hybrid"], **_GUIDING}}}


def case_defaults(case: str, method: str, paper: bool = False,
                  dim: Callable[[], int] | None = None) -> tuple[str, Settings]:
    """Where the settings come from (as ``config --explain`` names it) and the settings for
    ``case`` and ``method``: the paper's Adam settings with ``paper``, else the measured
    training, for a case without one (a user case) :data:`GENERIC`'s for its dimension
    (``dim``: builds the case; without it Config's defaults)."""
    if paper:
        return "paper (--paper)", PAPER.get(case, {})
    if case in MEASURED or dim is None:
        return f"case default ({case}, {method})", MEASURED.get(case, {}).get(method, {})
    d = dim()
    return f"{d}D default ({method}; none measured for this case)", GENERIC[d].get(method, {})
