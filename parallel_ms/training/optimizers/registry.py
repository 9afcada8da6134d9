"""The optimizers and curvature solvers a configuration may name: the one place that reads
``optimizer.kind`` and ``optimizer.gn_solver``. Each entry says what the rest of the package
needs to know before the optimizer exists (the default precision, the memory it holds) and
how to build it; modules are imported when built, so that reading the configuration stays
light.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from parallel_ms.config import OptimizerConfig
    from parallel_ms.training.optimizers.base import Optimizer, Target
    from parallel_ms.training.optimizers.curvature import CurvatureSolver


def _adam(target: "Target", cfg: "OptimizerConfig") -> "Optimizer":
    from parallel_ms.training.optimizers.adam import Adam
    return Adam(target, cfg)


def _lbfgs(target: "Target", cfg: "OptimizerConfig") -> "Optimizer":
    from parallel_ms.training.optimizers.lbfgs import LBFGS
    return LBFGS(target, cfg)


def _gauss_newton(target: "Target", cfg: "OptimizerConfig") -> "Optimizer":
    from parallel_ms.training.optimizers.gauss_newton import GaussNewton
    return GaussNewton(target.residuals(), cfg, curvature_solver(cfg.gn_solver), target.comm)


def _adam_lbfgs(target: "Target", cfg: "OptimizerConfig") -> "Optimizer":
    from parallel_ms.training.optimizers.lbfgs import LBFGS
    from parallel_ms.training.optimizers.switching import Plateau, Switching
    return Switching(_adam(target, cfg), lambda: _lbfgs(target, cfg), LBFGS.name,
                     LBFGS.stat_names, Plateau(cfg.switch_window, cfg.switch_tol))


def _adam_gauss_newton(target: "Target", cfg: "OptimizerConfig") -> "Optimizer":
    from parallel_ms.training.optimizers.gauss_newton import GaussNewton
    from parallel_ms.training.optimizers.switching import Switching, WarmUp
    return Switching(_adam(target, cfg), lambda: _gauss_newton(target, cfg), GaussNewton.name,
                     GaussNewton.stat_names, WarmUp(cfg.gn_warmup))


@dataclass(frozen=True)
class OptimizerSpec:
    build: Callable[["Target", "OptimizerConfig"], "Optimizer"]
    #: takes Gauss-Newton steps: float64 by default (network.dtype = auto) and a curvature
    #: solver (optimizer.gn_solver)
    second_order: bool = False
    #: keeps L-BFGS curvature pairs (optimizer.lbfgs_history)
    history: bool = False


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adam": OptimizerSpec(_adam),
    "lbfgs": OptimizerSpec(_lbfgs, history=True),
    "adam-lbfgs": OptimizerSpec(_adam_lbfgs, history=True),
    "gauss-newton": OptimizerSpec(_gauss_newton, second_order=True),
    "adam-gauss-newton": OptimizerSpec(_adam_gauss_newton, second_order=True),
}

#: optimizer.gn_solver -> (module, class) of its :class:`~.curvature.CurvatureSolver`
CURVATURE_SOLVERS: dict[str, tuple[str, str]] = {
    "cholesky": ("parallel_ms.training.optimizers.curvature", "Cholesky"),
    "cg": ("parallel_ms.training.optimizers.curvature", "ConjugateGradients"),
    "scalapack": ("parallel_ms.training.optimizers.curvature_scalapack", "ScaLAPACK"),
    "woodbury": ("parallel_ms.training.optimizers.curvature_sample_space", "SampleSpace"),
}


#: optimizer.gn_solver's value that lets :func:`choose_curvature_solver` pick
AUTO = "auto"


def choose_curvature_solver(parameters: float, rows: float, ranks: int, itemsize: int,
                            available: float) -> tuple[str, str]:
    """``gn_solver = "auto"``: the exact solver with the smallest modeled time
    (:meth:`~.curvature.CurvatureSolver.seconds`) among those whose memory fits the
    ``available`` bytes per rank (``rows``: this rank's residual rows) and whose library is
    installed (ScaLAPACK: PETSc; a GPU node may have torch only), else matrix-free CG; (its
    name, one line saying why)."""
    fits, refused = {}, []
    for name in CURVATURE_SOLVERS:
        try:
            cls = curvature_solver(name)
        except ImportError as err:
            refused.append(f"{name} not installed ({err.name or err})")
            continue
        if not cls.exact:
            continue
        need = cls.memory(parameters, rows, itemsize, ranks)
        if need <= available:
            fits[name] = cls.seconds(parameters, rows, ranks)
        else:
            refused.append(f"{name} needs {need / 2 ** 30:.1f} GiB")
    left = f"{available / 2 ** 30:.1f} GiB per rank left"
    if not fits:
        return "cg", (f"cg: no exact solver fits ({', '.join(refused)}; {left})")
    best = min(fits, key=fits.__getitem__)
    others = [f"{n} {t:.2g} s" for n, t in fits.items() if n != best] + refused
    return best, (f"{best}: modeled {fits[best]:.2g} s per step for {parameters:.0f} parameters "
                  f"and {rows:.0f} rows per rank on {ranks} rank(s) (" + "; ".join(others)
                  + f"; {left})")


def picks_solver(cfg: "OptimizerConfig") -> bool:
    """Does this run's curvature solver remain to be picked (Gauss-Newton, ``auto``)?"""
    return spec(cfg.kind).second_order and cfg.gn_solver == AUTO


def spec(kind: str) -> OptimizerSpec:
    return OPTIMIZERS[kind]


def curvature_solver(name: str) -> type["CurvatureSolver"]:
    import importlib
    module, cls = CURVATURE_SOLVERS[name]
    return getattr(importlib.import_module(module), cls)


def build_optimizer(target: "Target", cfg: "OptimizerConfig") -> "Optimizer":
    """The optimizer ``cfg.kind`` on ``target`` (names are validated with the configuration)."""
    return spec(cfg.kind).build(target, cfg)


def curvature_memory(cfg: "OptimizerConfig", parameters: float, rows: float, itemsize: int,
                     ranks: int) -> float:
    """Bytes per rank the run's curvature solver holds (0 without Gauss-Newton, or before
    ``auto`` picked one); ``rows``: this rank's residual rows."""
    if not spec(cfg.kind).second_order or picks_solver(cfg):
        return 0.0
    return curvature_solver(cfg.gn_solver).memory(parameters, rows, itemsize, ranks)
