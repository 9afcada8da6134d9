"""One typed configuration for a run: dataclasses, TOML files, ``--set key=value`` overrides,
validation with one-line errors naming the key, the value and what is allowed."""
from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parallel_ms.errors import UserError


@dataclass
class ProblemConfig:
    case: str = "paper-2d"          #: built-in case name or FILE.py:NAME
    eps: float | None = None        #: override the case's eps


@dataclass
class NetworkConfig:
    kind: str = "msff"              #: msff (multiscale Fourier features) | mlp | two-scale
                                    #: (N_0(x) + eps N_1(x, x/eps), periodic cases)
    width: int = 128                #: neurons per hidden layer
    depth: int = 2                  #: hidden layers (per Fourier-feature branch for msff)
    features: int = 64              #: Fourier features m per map (Ms-FF)
    sigmas: list[float] | None = None  #: Ms-FF scales; default [1, 1/eps] (paper §4.4)
    harmonics: int = 1              #: harmonics of the fast variable per axis (two-scale)
    hard_bc: bool = False           #: v = l(x) N(x), l = prod 4 x_i (1 - x_i)
    dtype: str = "auto"             #: auto (float64 for Gauss-Newton, else float32) | float32
                                    #: | float64
    seed: int = 0                   #: initialisation seed (same on every rank)


@dataclass
class SamplingConfig:
    interior: int = 25000           #: M_Omega, global
    boundary: int = 2500            #: M_dOmega, global (2D; 1D uses the two end points)
    method: str = "uniform"         #: uniform | sobol
    seed: int = 0                   #: seed of the collocation points (same on every rank)
    adaptive_every: int = 0         #: residual-based resampling every T steps (0: off)
    adaptive_beta: float = 1.0      #: density ~ |r|^beta / mean + c
    adaptive_c: float = 1.0         #: ... the constant c of that density
    resample_every: int = 0         #: fresh uniform/Sobol interior points every T steps (0: off)
    validation: int = 0             #: interior points of a fixed set on which the best iterate
                                    #: is chosen (0: each step's own points, the paper's rule)


@dataclass
class LossConfig:
    tau1: float = 1.0               #: boundary weight tau_1 in (3.24)
    tau_weak: float = 0.0           #: weight of the weak residual (r tested against coarse
                                    #: hat functions; 0: off; docs/gauss-newton.md)
    weak_cells: int = 10            #: ... its hat functions' cells per direction
    derivatives: str = "jet"        #: jet (fast forward path) | jet-compiled | autograd


@dataclass
class BalancingConfig:
    enabled: bool = True            #: gradient-norm global weights (paper's ref. [63])
    every: int = 100                #: steps between updates of the weights
    alpha: float = 0.9              #: moving average of the weights


@dataclass
class OptimizerConfig:
    kind: str = "adam"              #: adam | lbfgs | adam-lbfgs | gauss-newton
                                    #: | adam-gauss-newton (gn_warmup Adam steps first)
    lr: float = 5e-4                #: Adam learning rate
    decay: float = 0.75             #: lr x decay every decay_every steps (Adam)
    decay_every: int = 1000         #: steps between learning-rate decays (Adam)
    lbfgs_lr: float = 1.0           #: L-BFGS step length (with its strong Wolfe line search)
    lbfgs_history: int = 50         #: L-BFGS curvature pairs kept
    lbfgs_max_iter: int = 20        #: iterations per step (<= 25 line-search evaluations each)
    switch_window: int = 500        #: adam-lbfgs: compare mean gradient norms of two windows
    switch_tol: float = 0.05        #: ... and switch when they fall by less than this fraction
    gn_solver: str = "cholesky"     #: Gauss-Newton step: cholesky (explicit J^T J, summed over
                                    #: ranks, P x P) | cg (matrix-free conjugate gradients)
    gn_damping: float = 1e-3        #: Gauss-Newton: initial Levenberg-Marquardt damping lambda
    gn_momentum: float = 0.0        #: Gauss-Newton momentum mu (SPRING): the step is drawn
                                    #: towards mu x the previous one (0: off; docs/gauss-newton.md)
    gn_warmup: int = 1000           #: adam-gauss-newton: Adam steps before Gauss-Newton
    cg_max_iter: int = 100          #: CG iterations per Gauss-Newton step (cap)
    cg_tol: float = 1e-4            #: ... until ||CG residual|| <= cg_tol ||J^T r||
    line_search: int = 10           #: Armijo backtracking halvings before a step is rejected


@dataclass
class CoarseConfig:
    cells: int | None = None        #: coarse cells per direction (default 1D: 250, 2D: 25)
    partitioner: str = "simple"     #: PETSc partitioner of the coarse DMPlex: simple (cells
                                    #: in numbering order: the same shards in every run) |
                                    #: ptscotch | parmetis (may differ from run to run)


@dataclass
class CouplingConfig:
    tau2: float = 1.0               #: coupling weight tau_2 (3.1), times the balancing weight
    delta: float | None = None      #: compression radius delta (default eps, paper)
    weights: str = "uniform"        #: uniform (paper) | lumped (lumped coarse mass)
    k12: float | None = None        #: given K~_12 = K~_21 (2D; none: K~ = K~_11 I)
    k22: float | None = None        #: given K~_22 (2D; none: K~ = K~_11 I)
    refresh: str = "lazy"           #: lazy (paper) | every-step
    refresh_every: int = 100        #: T_K: recheck K~ every T_K steps (lazy)
    refresh_tol: float = 1e-2       #: ... and re-solve the state when K~ moved more than this
    continuation: float = 0.0       #: from this fraction of the steps on, tau_2 decays
                                    #: linearly to 0 at the end (0: off)
    upscaling: str = "isotropic"    #: isotropic (paper (4.10): K~_11 I, or with k12/k22)
                                    #: | block-tensor (Algorithm 4.1 per block, 2D, two-output
                                    #: network for the temperature drops w_1, w_2)
    blocks: list[int] = field(default_factory=lambda: [1, 1])  #: block-tensor: blocks per
                                    #: direction (each must divide coarse.cells)


@dataclass
class TrainConfig:
    method: str = "pinn"            #: pinn | hybrid (Algorithm 3.1)
    steps: int = 1000               #: training steps (a resumed run continues to this step)
    eval_every: int = 100           #: relative L2/H1 against the reference every N steps
    log_every: int = 100            #: steps between progress lines


@dataclass
class ReferenceConfig:
    degree: int = 2                 #: P2: its gradient error stays below the networks' H1 error
    resolution: int | None = None   #: cells per direction (default: the resolution rule)
    cache_dir: str = "~/.cache/parallel_ms/references"  #: where computed references are kept


@dataclass
class ParallelConfig:
    device: str = "auto"            #: auto | cpu | cuda
    threads: int = 0                #: torch threads per rank (0: the node's cores divided
                                    #: by the ranks on the node)
    memory_per_rank: float = 0.0    #: GiB a rank may use (0: the node's available memory,
                                    #: cgroup or SLURM limit, shared by its ranks); the run
                                    #: refuses to start when its estimate exceeds it


@dataclass
class OutputConfig:
    root: str = "runs"              #: run directories go to <root>/<name>/
    name: str | None = None         #: default: <method>-<case>-<date>-<time>
    checkpoint_every: int = 500     #: HDF5 checkpoint every N steps (0: only at the end and
                                    #: on preemption)
    progress: str = "auto"          #: auto (bar on a terminal) | bar | log (lines only)
    fields: bool = True             #: write fields (ParaView, fields.h5) and plots at the end


@dataclass
class Config:
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    balancing: BalancingConfig = field(default_factory=BalancingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    coupling: CouplingConfig = field(default_factory=CouplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "network.kind": ("msff", "mlp", "two-scale"),
    "network.dtype": ("auto", "float32", "float64"),
    "sampling.method": ("uniform", "sobol"),
    "loss.derivatives": ("jet", "jet-compiled", "autograd"),
    "optimizer.kind": ("adam", "lbfgs", "adam-lbfgs", "gauss-newton", "adam-gauss-newton"),
    "optimizer.gn_solver": ("cholesky", "cg"),
    "train.method": ("pinn", "hybrid"),
    "coarse.partitioner": ("simple", "ptscotch", "parmetis"),
    "coupling.weights": ("uniform", "lumped"),
    "coupling.refresh": ("lazy", "every-step"),
    "coupling.upscaling": ("isotropic", "block-tensor"),
    "parallel.device": ("auto", "cpu", "cuda"),
    "output.progress": ("auto", "bar", "log"),
}
GAUSS_NEWTON = ("gauss-newton", "adam-gauss-newton")
POSITIVE = ("network.width", "network.depth", "network.features", "network.harmonics",
            "sampling.interior", "optimizer.lr", "optimizer.decay", "optimizer.decay_every",
            "optimizer.lbfgs_lr", "optimizer.lbfgs_history", "optimizer.lbfgs_max_iter",
            "optimizer.switch_window", "optimizer.gn_damping", "optimizer.cg_max_iter",
            "optimizer.cg_tol", "balancing.every", "train.steps", "train.eval_every",
            "train.log_every", "reference.degree", "problem.eps", "coarse.cells",
            "loss.weak_cells", "reference.resolution", "coupling.delta",
            "coupling.refresh_every")
NON_NEGATIVE = ("sampling.boundary", "sampling.adaptive_every", "sampling.adaptive_beta",
                "sampling.adaptive_c", "sampling.resample_every", "sampling.validation",
                "optimizer.gn_warmup", "optimizer.line_search", "loss.tau1", "loss.tau_weak",
                "optimizer.switch_tol",
                "network.seed", "sampling.seed", "coupling.tau2", "coupling.refresh_tol",
                "output.checkpoint_every", "parallel.threads", "parallel.memory_per_rank")

#: fractions in [0, 1)
UNIT_INTERVAL = ("balancing.alpha", "coupling.continuation", "optimizer.gn_momentum")

#: upper limits (callables: a limit may depend on the machine)
UPPER: dict[str, Any] = {
    "optimizer.line_search": lambda: 60,        # 2^-60: a step below round-off
    "network.harmonics": lambda: 1000,
    "optimizer.lbfgs_max_iter": lambda: 10_000,
    "optimizer.cg_max_iter": lambda: 1_000_000,
    "sampling.adaptive_beta": lambda: 10.0,     # |r|^beta must stay finite
    "parallel.threads": lambda: os.cpu_count() or 1,
}


def _error(key: str, value: object, allowed: str) -> UserError:
    return UserError(f"{key} = {value!r} (allowed: {allowed})", collective=True)


INT_LIMIT = 2 ** 63          #: integers must fit a signed 64-bit integer (seeds, counts)


def _to_int(text: Any) -> int:
    """An integer from an int, an integral float (TOML ``1e6``) or text such as ``25000`` or
    ``1e10``; not from booleans or fractional values."""
    if isinstance(text, bool):
        raise ValueError
    value = text if isinstance(text, int) else float(text)
    if isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise ValueError
        value = int(value)
    if not -INT_LIMIT < value < INT_LIMIT:
        raise ValueError
    return value


def _to_float(text: Any) -> float:
    if isinstance(text, bool):
        raise ValueError
    value = float(text)
    if not math.isfinite(value):
        raise ValueError
    return value


def _to_str(text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError
    return text


_SCALARS: dict[type, tuple[Any, str]] = {
    int: (_to_int, "an integer, |n| < 2^63"), float: (_to_float, "a finite number"),
    str: (_to_str, "a non-empty string")}


def _to_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    if str(text).lower() in ("true", "1", "yes", "on"):
        return True
    if str(text).lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError


def _convert(key: str, text: Any, hint: Any) -> Any:
    """A value of the annotated type from TOML or from ``--set`` text."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional and text in (None, "none", "None"):
        return None
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    base = args[0] if union else hint
    origin = typing.get_origin(base)
    try:
        if base is bool:
            return _to_bool(text)
        if origin is list:
            items = text if isinstance(text, list) \
                else [t for t in str(text).strip("[]").split(",") if t.strip()]
            return [_SCALARS[typing.get_args(base)[0]][0](t) for t in items]
        return _SCALARS[base][0](text)
    except (TypeError, ValueError, OverflowError):
        if origin is list:
            item = typing.get_args(base)[0]
            what = f"a list of {'integers' if item is int else 'finite numbers'}"
        else:
            what = "true or false" if base is bool else _SCALARS[base][1]
        raise _error(key, text, what + (" or none" if optional else "")) from None


def _section_and_field(cfg: Config, key: str) -> tuple[Any, dataclasses.Field]:
    sections = {f.name: f for f in dataclasses.fields(cfg)}
    section, _, name = key.partition(".")
    if section not in sections or not name:
        raise UserError(f"config key '{key}' is unknown (sections: {', '.join(sections)})",
                        collective=True)
    obj = getattr(cfg, section)
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise UserError(f"config key '{key}' is unknown (allowed in [{section}]: "
                        f"{', '.join(fields)})", collective=True)
    return obj, fields[name]


def set_value(cfg: Config, key: str, value: Any) -> None:
    obj, f = _section_and_field(cfg, key)
    hints = typing.get_type_hints(type(obj))
    setattr(obj, f.name, _convert(key, value, hints[f.name]))


def load(path: Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then a TOML file, then ``key=value`` overrides; validated."""
    cfg = Config()
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UserError(f"config file '{path}' does not exist", collective=True) from None
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(f"config file '{path}' cannot be read "
                            f"({getattr(err, 'strerror', None) or err})", collective=True) from None
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"config file '{path}' is not valid TOML: {err}",
                            collective=True) from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise UserError(f"config key '{section}' is unknown (expected [section] tables)",
                                collective=True)
            for name, value in values.items():
                set_value(cfg, f"{section}.{name}", value)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set '{item}' (allowed: section.key=value)", collective=True)
        set_value(cfg, key.strip(), value.strip())
    validate(cfg)
    if cfg.network.dtype == "auto":
        cfg.network.dtype = "float64" if cfg.optimizer.kind in GAUSS_NEWTON else "float32"
    return cfg


def validate(cfg: Config) -> None:
    """Raise a one-line :class:`UserError` for the first invalid value."""
    def get(key: str) -> Any:
        section, _, name = key.partition(".")
        return getattr(getattr(cfg, section), name)

    for key, allowed in CHOICES.items():
        if get(key) not in allowed:
            raise _error(key, get(key), ", ".join(allowed))
    for key in POSITIVE:
        v = get(key)
        if v is not None and not v > 0:
            raise _error(key, v, "> 0")
    for key in NON_NEGATIVE:
        if get(key) < 0:
            raise _error(key, get(key), ">= 0")
    for key, most in UPPER.items():
        if get(key) > most():
            raise _error(key, get(key), f"<= {most()}")
    for key in UNIT_INTERVAL:
        if not 0 <= get(key) < 1:
            raise _error(key, get(key), "0 <= value < 1")
    if cfg.network.sigmas is not None and (not cfg.network.sigmas
                                            or min(cfg.network.sigmas) <= 0):
        raise _error("network.sigmas", cfg.network.sigmas, "a non-empty list of values > 0")
    if cfg.coupling.k22 is not None and cfg.coupling.k22 <= 0:
        raise _error("coupling.k22", cfg.coupling.k22, "> 0 or none")
    if cfg.coupling.k12 is not None and cfg.coupling.k22 is None:
        raise _error("coupling.k12", cfg.coupling.k12, "none unless coupling.k22 is given")
    if len(cfg.coupling.blocks) != 2 or min(cfg.coupling.blocks) < 1:
        raise _error("coupling.blocks", cfg.coupling.blocks, "two integers >= 1")
    if cfg.coupling.upscaling == "block-tensor" and cfg.coupling.k22 is not None:
        raise _error("coupling.k22", cfg.coupling.k22,
                     "none with coupling.upscaling = 'block-tensor' (it upscales all entries)")
    if cfg.sampling.resample_every and cfg.sampling.adaptive_every:
        raise _error("sampling.resample_every", cfg.sampling.resample_every,
                     "0 when sampling.adaptive_every is set (one resampling rule at a time)")
    if cfg.reference.degree not in (1, 2):
        raise _error("reference.degree", cfg.reference.degree, "1, 2")
    from parallel_ms.problems import get_case
    try:
        problem = get_case(cfg.problem.case, eps=cfg.problem.eps)
    except UserError as err:
        raise UserError(f"problem.case = {cfg.problem.case!r}: {err}", collective=True) from None
    if problem.dim != 2 and cfg.coupling.upscaling != "isotropic":
        raise _error("coupling.upscaling", cfg.coupling.upscaling,
                     f"'isotropic' for the {problem.dim}D case '{problem.name}'")


def to_toml(cfg: Config) -> str:
    """The resolved configuration as TOML (None values are written as comments)."""
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            if v is None:
                lines.append(f"# {k} = (default)")
            elif isinstance(v, bool):
                lines.append(f"{k} = {str(v).lower()}")
            elif isinstance(v, str):
                lines.append(f'{k} = "{v}"')
            else:
                lines.append(f"{k} = {v!r}")
        lines.append("")
    return "\n".join(lines)
