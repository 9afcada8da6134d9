"""Built-in problems (paper 000 §4.4; paper 001 §2 and §5; paper 004) and user cases.

Every case is a factory ``f(eps=..., **params) -> Problem``; ``get_case("NAME")`` uses the
defaults, ``get_case("NAME", eps=0.05)`` changes the scale. A user case lives in the user's own
file and is named ``path/to/file.py:NAME`` (see ``examples/user_case.py``).
"""
from __future__ import annotations

import importlib.util
import math
import sys
import traceback
from pathlib import Path
from typing import Callable, TypeVar

from parallel_ms.errors import DEBUG_HINT, UserError, debug, describe
from parallel_ms.problems.problem import Problem

Factory = Callable[..., Problem]
T = TypeVar("T")
CASES: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        CASES[name] = factory
        return factory
    return deco


def _paper_1d(name: str, eps: float) -> Problem:
    return Problem(
        name=name, dim=1, eps=eps,
        conductivity=lambda x, m: 2 + m.sin(2 * m.pi * x[0] / eps),
        source=lambda x, m: -3 * (2 * x[0] - 1),
        description="K = 2 + sin(2 pi x/eps), q = -3(2x-1) (paper 000 §4.4, Fig. 1-2)",
        bounds=(1.0, 3.0), period=(1.0,))


@register("paper-1d-eps1_15")
def paper_1d_eps1_15(eps: float = 1 / 15) -> Problem:
    return _paper_1d("paper-1d-eps1_15", eps)


@register("paper-1d-eps0_01")
def paper_1d_eps0_01(eps: float = 0.01) -> Problem:
    return _paper_1d("paper-1d-eps0_01", eps)


@register("paper-2d")
def paper_2d(eps: float = 0.1) -> Problem:
    return Problem(
        name="paper-2d", dim=2, eps=eps,
        conductivity=lambda x, m: 3 + m.sin(m.pi * x[0] / eps) + m.sin(2 * m.pi * x[1] / eps),
        source=lambda x, m: 10 * m.exp(-100 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2)),
        description="K = 3 + sin(pi x1/eps) + sin(2 pi x2/eps), q = 10 exp(-100|x-0.5|^2) "
                    "(paper 000 §4.4, Table 1)",
        bounds=(1.0, 5.0), period=(2.0, 1.0))


@register("locally-periodic-1d")
def locally_periodic_1d(eps: float = 0.05) -> Problem:
    return Problem(
        name="locally-periodic-1d", dim=1, eps=eps,
        conductivity=lambda x, m: (1 + x[0]) * (2 + m.sin(2 * m.pi * x[0] / eps)),
        source=lambda x, m: 1.0,
        description="K = a(x, x/eps) = (1+x)(2 + sin(2 pi x/eps)), q = 1 (paper 001 §2)",
        bounds=(1.0, 6.0))


@register("locally-periodic-2d")
def locally_periodic_2d(eps: float = 0.1) -> Problem:
    return Problem(
        name="locally-periodic-2d", dim=2, eps=eps,
        conductivity=lambda x, m: (1.5 + x[0]) * (2 + m.sin(2 * m.pi * x[0] / eps)
                                                  * m.cos(2 * m.pi * x[1] / eps)
                                                  * (0.5 + 0.5 * x[1])),
        source=lambda x, m: 10 * m.exp(-100 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2)),
        description="K = a(x, x/eps) = (1.5+x1)(2 + (1+x2)/2 sin(2 pi x1/eps) cos(2 pi x2/eps)), "
                    "q = 10 exp(-100|x-0.5|^2) (paper 001 §2)",
        bounds=(1.5, 7.5))


_SQRT2 = math.sqrt(2.0)


@register("quasi-periodic-1d")
def quasi_periodic_1d(eps: float = 0.05) -> Problem:
    return Problem(
        name="quasi-periodic-1d", dim=1, eps=eps,
        conductivity=lambda x, m: 3 + m.sin(2 * m.pi * x[0] / eps)
        + m.sin(2 * _SQRT2 * m.pi * x[0] / eps),
        source=lambda x, m: -3 * (2 * x[0] - 1),
        description="K = 3 + sin(2 pi x/eps) + sin(2 sqrt(2) pi x/eps): two incommensurate "
                    "frequencies (paper 001 §5)",
        bounds=(1.0, 5.0), min_period=1 / _SQRT2)


@register("quasi-periodic-2d")
def quasi_periodic_2d(eps: float = 0.1) -> Problem:
    return Problem(
        name="quasi-periodic-2d", dim=2, eps=eps,
        conductivity=lambda x, m: 3 + m.sin(2 * m.pi * x[0] / eps)
        + m.sin(2 * _SQRT2 * m.pi * x[0] / eps) * m.cos(2 * m.pi * x[1] / eps),
        source=lambda x, m: 10 * m.exp(-100 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2)),
        description="K = 3 + sin(2 pi x1/eps) + sin(2 sqrt(2) pi x1/eps) cos(2 pi x2/eps): "
                    "quasi-periodic in x1 (paper 001 §5)",
        bounds=(1.0, 5.0), min_period=1 / _SQRT2)


def _inclusions(x: list, m: object, eps: float, contrast: float, width: float) -> object:
    """1 + (contrast-1) * smooth indicator of a disc (interval) of radius eps/4 at each cell
    centre. rho = sum cos^2(pi x_i/eps) vanishes at the centres and ~ (pi r/eps)^2 near them."""
    rho = sum(m.cos(m.pi * xi / eps) ** 2 for xi in x)
    rho0 = (math.pi / 4) ** 2
    return 1 + (contrast - 1) * 0.5 * (1 + m.tanh((rho0 - rho) / width))


def _high_contrast(dim: int, eps: float, contrast: float, width: float) -> Problem:
    return Problem(
        name=f"high-contrast-{dim}d", dim=dim, eps=eps,
        conductivity=lambda x, m: _inclusions(list(x), m, eps, contrast, width),
        source=(lambda x, m: 1.0) if dim == 1 else
        (lambda x, m: 10 * m.exp(-100 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2))),
        description=f"periodic inclusions of radius eps/4, contrast {contrast:g} (smoothed "
                    f"interface), background 1 (paper 004's setting)",
        bounds=(1.0, contrast), period=(1.0,) * dim,
        params={"contrast": contrast, "width": width})


@register("high-contrast-1d")
def high_contrast_1d(eps: float = 0.05, contrast: float = 1e3, width: float = 0.05) -> Problem:
    return _high_contrast(1, eps, contrast, width)


@register("high-contrast-2d")
def high_contrast_2d(eps: float = 0.1, contrast: float = 1e3, width: float = 0.05) -> Problem:
    return _high_contrast(2, eps, contrast, width)


def _user_frames(err: Exception, path: Path) -> str:
    """The traceback of ``err`` cut down to the frames in the user's file ``path``."""
    mine = [frame for frame in traceback.extract_tb(err.__traceback__)
            if Path(frame.filename).resolve() == path.resolve()]
    return "".join(["Traceback (most recent call last; the frames of your case file):\n",
                    *traceback.format_list(mine),
                    *traceback.format_exception_only(type(err), err)])


def _call_user(spec: str, path: Path, call: Callable[[], T]) -> T:
    """``call()``, which runs code of the user's case ``spec`` (in ``path``): any exception
    becomes one line naming the case, the exception's type and message; in debug mode the
    user's own frames are printed (on rank 0) before it."""
    try:
        return call()
    except Exception as err:
        show = debug()
        if show:
            from parallel_ms import parallel
            parallel.print0(_user_frames(err, path), end="", file=sys.stderr)
        hint = "" if show else f" ({DEBUG_HINT} for the traceback of your case)"
        raise UserError(f"case '{spec}' failed: {describe(err)}{hint}",
                        collective=True) from None


def _load_user_case(spec: str) -> tuple[Path, Factory]:
    """The user's case file of ``spec`` (``FILE.py:NAME``) and its factory NAME."""
    path_str, _, attr = spec.rpartition(":")
    path = Path(path_str)
    if not path.is_file():
        raise UserError(f"case file '{path}' does not exist (case '{spec}': FILE.py:NAME)",
                        collective=True)
    module_spec = importlib.util.spec_from_file_location(f"parallel_ms_user_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    module, loader = importlib.util.module_from_spec(module_spec), module_spec.loader
    _call_user(spec, path, lambda: loader.exec_module(module))
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"case file '{path}' defines no function '{attr}' returning a Problem",
                        collective=True)
    return path, factory


def _build(name: str, overrides: dict[str, float]) -> object:
    """What the factory of case ``name`` returns for ``overrides`` (one line on a failure)."""
    if ".py:" in name:
        path, factory = _load_user_case(name)
        return _call_user(name, path, lambda: factory(**overrides))
    if name not in CASES:
        raise UserError(f"case '{name}' is unknown (allowed: {', '.join(CASES)}, "
                        "or FILE.py:NAME)", collective=True)
    try:
        return CASES[name](**overrides)
    except TypeError as err:
        raise UserError(f"case '{name}': {err}", collective=True) from None


def get_case(name: str, **overrides: float | None) -> Problem:
    """The problem called ``name`` (built-in, or ``FILE.py:NAME``), with optional parameter
    overrides (``eps=...`` and the case's own parameters; None keeps the case's value)."""
    problem = _build(name, {k: v for k, v in overrides.items() if v is not None})
    if not isinstance(problem, Problem):
        raise UserError(f"case '{name}' returned {type(problem).__name__}, not a parallel_ms "
                        f"Problem (see examples/user_case.py)", collective=True)
    if not problem.eps > 0:
        raise UserError(f"case '{name}': eps = {problem.eps} (allowed: eps > 0)",
                        collective=True)
    return problem
