"""Reading and writing the run configuration of :mod:`parallel_ms.config`: TOML files,
``--set key=value`` overrides converted to the annotated types, the layers they form over the
defaults (with the defaults per case and method of :mod:`parallel_ms.case_defaults` under
them) and where each value comes from, validation with one-line errors naming the key, the
value and what is allowed, and the resolved configuration as TOML.

Import these through :mod:`parallel_ms.config` (``config.load``, ``config.set_value``,
``config.validate``, ``config.to_toml``), which re-exports them; the commands take the layers
(``layers``, ``build``, ``origins``) from here. The schema (the dataclasses and
the tables of allowed values) is imported inside the functions that need it, so that either module
may be imported first."""
from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parallel_ms.errors import UserError

if TYPE_CHECKING:
    from parallel_ms.config import Config
    from parallel_ms.problems import Problem


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
    """Set ``section.key`` of ``cfg`` from TOML or ``--set`` text, converted to the
    annotated type."""
    obj, f = _section_and_field(cfg, key)
    hints = typing.get_type_hints(type(obj))
    setattr(obj, f.name, _convert(key, value, hints[f.name]))


#: the defaults per case and method under a configuration: the measured training, the paper's
#: settings, or none
CaseLayer = typing.Literal["measured", "paper", None]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One source of settings: where they come from (``config --explain`` prints it) and
    ``section.key`` -> value (a TOML value or ``--set`` text)."""
    origin: str
    values: dict[str, Any]


def _file_layer(path: Path) -> Layer:
    """The settings of a TOML file, one line for a missing, unreadable or invalid one."""
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
    values = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise UserError(f"config key '{section}' is unknown (expected [section] tables)",
                            collective=True)
        values.update({f"{section}.{name}": value for name, value in table.items()})
    return Layer(f"file ({path})", values)


def _override_layer(overrides: typing.Iterable[str]) -> Layer:
    """The ``key=value`` overrides of the command line (``--set`` and its shortcuts)."""
    values = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set '{item}' (allowed: section.key=value)", collective=True)
        values[key.strip()] = value.strip()
    return Layer("command line", values)


def _apply(cfg: Config, sources: typing.Iterable[Layer]) -> Config:
    for layer in sources:
        for key, value in layer.values.items():
            set_value(cfg, key, value)
    return cfg


def layers(path: Path | None = None, overrides: typing.Iterable[str] = (),
           case_layer: CaseLayer = None) -> list[Layer]:
    """The sources of a configuration, later ones winning: the defaults per case and method
    (:mod:`parallel_ms.case_defaults`: ``case_layer = "measured"`` or ``"paper"``; None: none)
    for the case and method that the file and the overrides resolve to, a TOML file, the
    overrides. Config's defaults lie under them all."""
    from parallel_ms.case_defaults import case_defaults
    from parallel_ms.config import Config
    given = ([_file_layer(path)] if path is not None else []) + [_override_layer(overrides)]
    if case_layer is None:
        return given
    probe = _apply(Config(), given)
    origin, values = case_defaults(probe.problem.case, probe.train.method,
                                   paper=case_layer == "paper",
                                   dim=lambda: build_problem(probe).dim)
    return [Layer(origin, values), *given]


def build(sources: typing.Iterable[Layer]) -> Config:
    """Config's defaults, then the layers ``sources`` in order; validated,
    ``network.dtype = "auto"`` resolved."""
    from parallel_ms.config import Config
    from parallel_ms.training.optimizers.registry import spec
    cfg = _apply(Config(), sources)
    validate(cfg)
    if cfg.network.dtype == "auto":
        cfg.network.dtype = "float64" if spec(cfg.optimizer.kind).second_order else "float32"
    return cfg


def origins(sources: typing.Iterable[Layer]) -> dict[str, str]:
    """``section.key`` -> where its value comes from: the last of the layers ``sources`` that
    sets it (the others: ``default``)."""
    from parallel_ms.config import Config
    found = {f"{section}.{name}": "default"
             for section, values in Config().to_dict().items() for name in values}
    for layer in sources:
        found.update(dict.fromkeys(layer.values, layer.origin))
    return found


def load(path: Path | None = None, overrides: typing.Iterable[str] = (),
         case_layer: CaseLayer = None) -> Config:
    """Defaults, then the defaults per case and method (``case_layer``, see :func:`layers`),
    then a TOML file, then ``key=value`` overrides; validated."""
    return build(layers(path, overrides, case_layer))


def build_problem(cfg: Config) -> Problem:
    """The case of ``cfg.problem``; a case that fails or a bad parameter of it is one
    collective line naming the setting."""
    from parallel_ms.problems.cases import ParameterError
    try:
        return cfg.problem.build()
    except ParameterError as err:
        raise UserError(f"problem.{err.parameter}: {err}", collective=True) from None
    except UserError as err:
        raise UserError(f"problem.case: {err}", collective=True) from None   # names the case


def validate(cfg: Config) -> None:
    """Raise a one-line :class:`UserError` for the first invalid value."""
    from parallel_ms.config import CHOICES, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, UPPER

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
        v = get(key)
        if v is not None and v < 0:
            raise _error(key, v, ">= 0")
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
    if cfg.coarse.space == "gmsfem" and (cfg.coupling.upscaling != "isotropic"
                                         or cfg.coupling.k22 is not None):
        raise _error("coarse.space", cfg.coarse.space,
                     "'p1' with coupling.upscaling = 'block-tensor' or coupling.k12/k22 (the "
                     "GMsFEM space takes K_eps itself, no K~)")
    if cfg.coupling.form == "galerkin" and cfg.coarse.space != "gmsfem":
        raise _error("coupling.form", cfg.coupling.form,
                     "'compression' with coarse.space = 'p1' (the Galerkin form tests with the "
                     "GMsFEM space's basis)")
    if cfg.loss.form == "energy" and cfg.loss.tau_weak:
        raise _error("loss.tau_weak", cfg.loss.tau_weak,
                     "0 with loss.form = 'energy' (the weak residual tests the strong one)")
    if cfg.loss.form == "energy" and cfg.outputs != 1:
        raise _error("loss.form", cfg.loss.form,
                     "'strong' with coupling.upscaling = 'block-tensor' (its two outputs carry "
                     "the temperature drops along e_1 and e_2; the energy form lifts along e_1)")
    if cfg.sampling.resample_every and cfg.sampling.adaptive_every:
        raise _error("sampling.resample_every", cfg.sampling.resample_every,
                     "0 when sampling.adaptive_every is set (one resampling rule at a time)")
    s = cfg.sampling
    if s.layer_density < 1:
        raise _error("sampling.layer_density", s.layer_density, ">= 1")
    for key, value, bad, allowed in (
            ("train.method", cfg.train.method, cfg.train.method == "hybrid", "'pinn'"),
            ("loss.tau_weak", cfg.loss.tau_weak, cfg.loss.tau_weak > 0, "0"),
            ("sampling.adaptive_every", s.adaptive_every, s.adaptive_every > 0, "0"),
            ("sampling.method", s.method, s.method == "gauss", "'uniform', 'sobol'")):
        if s.layer_width and bad:
            raise _error(key, value, f"{allowed} with sampling.layer_width > 0 (the coupling, "
                         "the weak residual, residual-based and Gauss points take equal weights)")
    if len(s.interior_counts) != len(s.interior_milestones):
        raise _error("sampling.interior_counts", s.interior_counts,
                     f"one count per milestone of sampling.interior_milestones = "
                     f"{s.interior_milestones}")
    if any(b <= a for a, b in zip([0, *s.interior_milestones], s.interior_milestones)):
        raise _error("sampling.interior_milestones", s.interior_milestones,
                     "increasing steps >= 1")
    if min(s.interior_counts, default=1) < 1:
        raise _error("sampling.interior_counts", s.interior_counts, "counts >= 1")
    if s.interior_milestones and not (s.resample_every or s.adaptive_every):
        raise _error("sampling.interior_milestones", s.interior_milestones,
                     "[] without sampling.resample_every or sampling.adaptive_every (the "
                     "count changes when new points are drawn)")
    if cfg.sampling.method == "gauss" and cfg.sampling.resample_every:
        raise _error("sampling.resample_every", cfg.sampling.resample_every,
                     "0 with sampling.method = 'gauss' (the Gauss rule is fixed: every round "
                     "would give the same points)")
    if cfg.train.best_by == "estimate" and not cfg.estimate.enabled:
        raise _error("train.best_by", cfg.train.best_by, "'loss' when estimate.enabled = false")
    if cfg.train.ema_decay and cfg.train.best_by == "loss":
        raise _error("train.ema_decay", cfg.train.ema_decay,
                     "0 when train.best_by = 'loss' (the loss is the iterate's, not the average's)")
    for key, degree in (("reference.degree", cfg.reference.degree),
                        ("estimate.degree", cfg.estimate.degree)):
        if degree not in (1, 2):
            raise _error(key, degree, "1, 2")
    problem = build_problem(cfg)
    if problem.dim != 2 and cfg.coarse.space != "p1":
        raise _error("coarse.space", cfg.coarse.space,
                     f"'p1' for the {problem.dim}D case '{problem.name}' (GMsFEM is 2D)")
    if problem.dim != 2 and cfg.coupling.upscaling != "isotropic":
        raise _error("coupling.upscaling", cfg.coupling.upscaling,
                     f"'isotropic' for the {problem.dim}D case '{problem.name}'")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else repr(value)


def to_toml(cfg: Config, origins: dict[str, str] | None = None) -> str:
    """The resolved configuration as TOML (None values are written as comments); with
    ``origins`` (:func:`origins`), each line ends with a comment naming where its value comes
    from."""
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            line = f"# {k} = (default)" if v is None else f"{k} = {_toml_value(v)}"
            lines.append(line if origins is None
                         else f"{line:<40}  # {origins[f'{section}.{k}']}")
        lines.append("")
    return "\n".join(lines)
