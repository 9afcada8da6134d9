"""Built-in problems (paper 000 §4.4; paper 001 §2 and §5; paper 004) and user cases.

Every case is a factory ``f(eps=..., **params) -> Problem``; ``get_case("NAME")`` uses the
defaults, ``get_case("NAME", eps=0.05)`` changes the scale. A user case lives in the user's own
file and is named ``path/to/file.py:NAME`` (see ``examples/user_case.py``).
"""
from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import traceback
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

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
        bounds=(1.0, 6.0), fast_waves=((1.0,),))


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
        bounds=(1.5, 7.5), fast_waves=((1.0, 0.0), (0.0, 1.0)))


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
        bounds=(1.0, 5.0), min_period=1 / _SQRT2, fast_waves=((1.0,), (_SQRT2,)))


@register("quasi-periodic-2d")
def quasi_periodic_2d(eps: float = 0.1) -> Problem:
    return Problem(
        name="quasi-periodic-2d", dim=2, eps=eps,
        conductivity=lambda x, m: 3 + m.sin(2 * m.pi * x[0] / eps)
        + m.sin(2 * _SQRT2 * m.pi * x[0] / eps) * m.cos(2 * m.pi * x[1] / eps),
        source=lambda x, m: 10 * m.exp(-100 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2)),
        description="K = 3 + sin(2 pi x1/eps) + sin(2 sqrt(2) pi x1/eps) cos(2 pi x2/eps): "
                    "quasi-periodic in x1 (paper 001 §5)",
        bounds=(1.0, 5.0), min_period=1 / _SQRT2,
        fast_waves=((1.0, 0.0), (_SQRT2, 0.0), (0.0, 1.0)))


def _inclusions(x: list, m: object, eps: float, contrast: float, width: float) -> object:
    """1 + (contrast-1) * smooth indicator of a disc (interval) of radius eps/4 at each cell
    centre. rho = sum cos^2(pi x_i/eps) vanishes at the centres and ~ (pi r/eps)^2 near them."""
    rho = sum(m.cos(m.pi * xi / eps) ** 2 for xi in x)
    rho0 = (math.pi / 4) ** 2
    return 1 + (contrast - 1) * 0.5 * (1 + m.tanh((rho0 - rho) / width))


def _high_contrast(dim: int, eps: float, contrast: float, width: float) -> Problem:
    _check(f"high-contrast-{dim}d", contrast, width)
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


#: channels cross: K = 1 + (contrast - 1) (1 - exp(-UNION s)) with s >= 0 the sum of the
#: channels' smoothed indicators stays below the contrast where two overlap (a union by products
#: of (1 - indicator) would too, but its polynomial degree, from which UFL chooses the
#: quadrature, grows with every factor)
_UNION = 4.0
#: the channels of ``channels-2d``: a point (x_1, x_2) on each centre line and its slope; none
#: lies along the lines or diagonals of a 10 x 10 coarse grid
_CHANNELS = ((0.0, 0.27, 0.0), (0.0, 0.64, 0.0), (0.0, 0.12, 0.7), (0.0, 0.88, -0.45))
#: random inclusions: radii uniform in this range (units of eps), centres uniform in the domain,
#: as many as cover this fraction of it on average, drawn until that many do not overlap
_RADII = (0.25, 0.5)
_FRACTION = 0.2


#: the indicators' logistic argument is clamped smoothly to [-CLAMP, CLAMP] (far from a
#: feature exp would overflow and torch's gradient of it turn NaN)
_CLAMP = 40.0


def _indicator(d2: object, half: float, smooth: float, m: object) -> object:
    """Smoothed indicator of {d < half} from the squared distance d2 = d^2: the logistic
    1 / (1 + exp(-2 s)) = (1 + tanh(s)) / 2 of s = (half^2 - d^2) / (2 half smooth), which
    falls from ~1 to ~0 over about ``smooth`` around d = half (smooth in x: d^2, not |d|).
    Written with exp, not tanh, so that its small tails keep their relative accuracy (1 + tanh
    loses it: torch and UFL then disagree by ~1e-16 x contrast), with s clamped smoothly to
    CLAMP tanh(s / CLAMP) (an indicator >= 1e-35)."""
    s = (half ** 2 - d2) / (2 * half * smooth)
    return 1 / (1 + m.exp(-2 * _CLAMP * m.tanh(s / _CLAMP)))


def _check(name: str, contrast: float, width: float) -> None:
    if not (math.isfinite(contrast) and contrast >= 1):
        raise ParameterError(f"case '{name}': contrast = {contrast} (allowed: a finite number "
                             f">= 1)", "contrast")
    if not (math.isfinite(width) and width > 0):
        raise ParameterError(f"case '{name}': width = {width} (allowed: a finite number > 0)",
                             "width")


def _channels(x: list, m: object, eps: float, contrast: float, width: float) -> object:
    """1 + (contrast-1) (1 - exp(-UNION s)), s the sum of the smoothed indicators of the
    straight channels :data:`_CHANNELS` of width eps/4 across the domain; d = n . (x - p) is
    the signed distance to a channel's centre line (unit normal n)."""
    bands = []
    for px, py, slope in _CHANNELS:
        d = (-slope * (x[0] - px) + (x[1] - py)) / math.hypot(1.0, slope)
        bands.append(_indicator(d * d, eps / 8, width * eps, m))
    return 1 + (contrast - 1) * (1 - m.exp(-_UNION * sum(bands)))


@register("channels-2d")
def channels_2d(eps: float = 0.1, contrast: float = 1e4, width: float = 0.05) -> Problem:
    _check("channels-2d", contrast, width)
    return Problem(
        name="channels-2d", dim=2, eps=eps,
        conductivity=lambda x, m: _channels(list(x), m, eps, contrast, width),
        source=lambda x, m: 10 * m.exp(-100 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2)),
        description=f"two horizontal and two oblique crossing channels of width eps/4 across "
                    f"the domain, contrast {contrast:g} (smoothed interface), background 1",
        bounds=(1.0, contrast), params={"contrast": contrast, "width": width})


def random_discs(dim: int, eps: float, seed: int, smooth: float
                 ) -> list[tuple[tuple[float, ...], float]]:
    """(centre, radius) of the inclusions of ``random-inclusions-{dim}d``: numpy's default
    generator seeded with ``seed`` draws radii uniform in :data:`_RADII` x eps and centres
    uniform in (0,1)^dim, and keeps a draw whose edge is at least r_max/2 + 3 smooth from every
    kept one, until round(_FRACTION / mean measure) are kept (or 100 times that many draws).
    With that gap the other inclusions' tails add less than the deficit 1 - indicator of the
    one a point is in: K stays below the contrast."""
    rng = np.random.default_rng(seed)
    lo, hi = _RADII[0] * eps, _RADII[1] * eps
    mean = lo + hi if dim == 1 else math.pi * (lo * lo + lo * hi + hi * hi) / 3
    target, gap = max(1, round(_FRACTION / mean)), hi / 2 + 3 * smooth
    kept: list[tuple[np.ndarray, float]] = []
    for _ in range(100 * target):
        centre, r = rng.random(dim), float(rng.uniform(lo, hi))
        if all(np.linalg.norm(centre - c) >= r + rc + gap for c, rc in kept):
            kept.append((centre, r))
            if len(kept) == target:
                break
    return [(tuple(float(c) for c in centre), r) for centre, r in kept]


def _random_inclusions(dim: int, eps: float, contrast: float, width: float,
                       seed: float) -> Problem:
    name = f"random-inclusions-{dim}d"
    _check(name, contrast, width)
    if not (math.isfinite(seed) and seed >= 0 and seed == int(seed)):
        raise UserError(f"case '{name}': seed = {seed} (allowed: an integer >= 0)",
                        collective=True)
    discs = random_discs(dim, eps, int(seed), width * eps)

    def conductivity(x: list, m: object) -> object:
        return 1 + (contrast - 1) * sum(
            _indicator(sum((xi - ci) ** 2 for xi, ci in zip(x, centre)), r, width * eps, m)
            for centre, r in discs)

    return Problem(
        name=name, dim=dim, eps=eps, conductivity=conductivity,
        source=(lambda x, m: 1.0) if dim == 1 else
        (lambda x, m: 10 * m.exp(-100 * ((x[0] - 0.5) ** 2 + (x[1] - 0.5) ** 2))),
        description=f"{len(discs)} random non-overlapping {'intervals' if dim == 1 else 'discs'}"
                    f" (seed {int(seed)}) of radius {_RADII[0]:g}-{_RADII[1]:g} eps, contrast "
                    f"{contrast:g} (smoothed interface), background 1",
        bounds=(1.0, contrast), params={"contrast": contrast, "width": width, "seed": seed})


@register("random-inclusions-1d")
def random_inclusions_1d(eps: float = 0.05, contrast: float = 1e4, width: float = 0.05,
                         seed: float = 0) -> Problem:
    return _random_inclusions(1, eps, contrast, width, seed)


@register("random-inclusions-2d")
def random_inclusions_2d(eps: float = 0.1, contrast: float = 1e4, width: float = 0.05,
                         seed: float = 0) -> Problem:
    return _random_inclusions(2, eps, contrast, width, seed)


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


class ParameterError(UserError):
    """A case parameter the case refuses; ``parameter`` names it (a run's configuration maps
    it to its setting ``problem.<parameter>``)."""

    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message, collective=True)
        self.parameter = parameter


class UnknownParameter(ParameterError):
    """A parameter override that the built-in case ``case`` does not take."""

    def __init__(self, case: str, parameter: str, accepted: list[str]) -> None:
        super().__init__(f"case '{case}' has no parameter '{parameter}' (its parameters: "
                         f"{', '.join(accepted)})", parameter)


def _build(name: str, overrides: dict[str, float]) -> object:
    """What the factory of case ``name`` returns for ``overrides`` (one line on a failure)."""
    if ".py:" in name:
        path, factory = _load_user_case(name)
        return _call_user(name, path, lambda: factory(**overrides))
    if name not in CASES:
        raise UserError(f"case '{name}' is unknown (allowed: {', '.join(CASES)}, "
                        "or FILE.py:NAME)", collective=True)
    accepted = inspect.signature(CASES[name]).parameters
    unknown = [k for k in overrides if k not in accepted]
    if unknown:
        raise UnknownParameter(name, unknown[0], list(accepted))
    return CASES[name](**overrides)


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
