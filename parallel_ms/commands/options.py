"""Command-line options shared by the commands: a run configuration's, and a case's for the
commands that take a case without one (``reference``, ``gmsfem``)."""
from __future__ import annotations

import argparse
import math
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parallel_ms import config, config_io
from parallel_ms.errors import DEBUG_ENV, UserError, enable_debug

if TYPE_CHECKING:
    from parallel_ms.problems.problem import Problem

#: shortcut flag -> the configuration keys it sets (``--seed`` seeds the network's
#: initialisation and the collocation points alike: one seed, one run)
SHORTCUTS = {"case": ("problem.case",), "eps": ("problem.eps",), "method": ("train.method",),
             "steps": ("train.steps",), "optimizer": ("optimizer.kind",),
             "network": ("network.kind",), "dtype": ("network.dtype",),
             "points": ("sampling.interior",), "seed": ("network.seed", "sampling.seed"),
             "device": ("parallel.device",)}


def typed(convert: type, check: "typing.Callable[[Any], bool]", allowed: str
           ) -> "typing.Callable[[str], Any]":
    """An argparse type: ``convert(text)``, refused (one line: the value and what is allowed)
    unless ``check`` holds."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or not check(value):
            raise argparse.ArgumentTypeError(f"'{text}' (allowed: {allowed})")
        return value
    parse.__name__ = allowed
    return parse


#: argparse types of the commands' own options (the run settings are checked by config)
positive_float = typed(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
non_negative_float = typed(float, lambda v: math.isfinite(v) and v >= 0,
                            "a finite number >= 0")
positive_int = typed(int, lambda v: 0 < v < config.INT_LIMIT, "an integer >= 1")
path = typed(Path, lambda v: str(v) not in ("", "."), "a non-empty path")


class _Debug(argparse.Action):
    """``--debug``: turns debug output on as soon as it is parsed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        enable_debug()


def add_debug_option(p: argparse.ArgumentParser) -> None:
    """``--debug``, for the commands that take ``--case``."""
    p.add_argument("--debug", action=_Debug, nargs=0, default=argparse.SUPPRESS,
                   help=f"when a user case (--case FILE.py:NAME) fails, also print the "
                        f"traceback of its own frames (same as {DEBUG_ENV}=1)")


def _name_value(text: str) -> tuple[str, float]:
    """NAME=NUMBER as (NAME, NUMBER); ValueError otherwise."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(text)
    return name, float(value)


_param = typed(_name_value, lambda _: True,
               "NAME=NUMBER, a parameter of the case, e.g. contrast=1e5")


def add_case_options(p: argparse.ArgumentParser, case_help: str) -> None:
    """``--case``, ``--debug``, ``--eps`` and ``--param NAME=VALUE`` (the case's own
    parameters: contrast, width, seed; docs/cases.md), for the commands that take a case
    without a run configuration (``run`` and ``config`` set them as ``--set problem.*``)."""
    p.add_argument("--case", required=True, help=case_help)
    add_debug_option(p)
    p.add_argument("--eps", type=positive_float, default=None, help="override the case's eps")
    p.add_argument("--param", type=_param, action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter of the case, e.g. --param contrast=1e5 (repeatable)")


def case_of(args: argparse.Namespace) -> "Problem":
    """The :class:`~parallel_ms.problems.Problem` that :func:`add_case_options` name (an
    unknown case or parameter: one collective line)."""
    from parallel_ms.problems import get_case
    return get_case(args.case, eps=args.eps, **dict(args.param))


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=path, default=None, help="TOML file (sections as in "
                   "'python -m parallel_ms config'); without it the case's measured "
                   "Gauss-Newton training for the method stands in for it (docs/usage.md)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's first-order settings for the case (Adam, as in "
                        "jobs/*-adam.toml) instead of its measured Gauss-Newton training; "
                        "not with --config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set optimizer.lr=1e-3 (repeatable)")
    for flag, keys in SHORTCUTS.items():
        p.add_argument(f"--{flag}", default=None,
                       help="same as " + " ".join(f"--set {key}=..." for key in keys))
    add_debug_option(p)


def _case_layer(args: argparse.Namespace) -> config_io.CaseLayer:
    """The defaults per case and method that stand in for a missing ``--config`` file: the
    paper's with ``--paper``, else the measured training. Under a file there are none: a file
    (a job file, a run directory's config.toml) means what it says over Config's defaults."""
    if args.config is None:
        return "paper" if args.paper else "measured"
    if args.paper:
        raise UserError(f"--paper with the config file '{args.config}' (allowed: --paper "
                        f"without --config or --resume)", collective=True)
    return None


def layers(args: argparse.Namespace) -> list[config_io.Layer]:
    """The sources of the run configuration that ``args`` give, later ones winning."""
    overrides = list(args.set)
    overrides += [f"{key}={getattr(args, flag)}" for flag, keys in SHORTCUTS.items()
                  for key in keys if getattr(args, flag, None) is not None]
    return config_io.layers(args.config, overrides, _case_layer(args))


def resolve(args: argparse.Namespace) -> config.Config:
    return config_io.build(layers(args))
