"""Command-line options shared by the commands that take a run configuration."""
from __future__ import annotations

import argparse
from pathlib import Path

from parallel_ms import config

#: shortcut flag -> configuration key
SHORTCUTS = {"case": "problem.case", "eps": "problem.eps", "method": "train.method",
             "steps": "train.steps", "optimizer": "optimizer.kind", "network": "network.kind",
             "dtype": "network.dtype", "points": "sampling.interior", "seed": "sampling.seed",
             "device": "parallel.device"}


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="TOML file (sections as in "
                   "'python -m parallel_ms config')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set optimizer.lr=1e-3 (repeatable)")
    for flag, key in SHORTCUTS.items():
        p.add_argument(f"--{flag}", default=None, help=f"same as --set {key}=...")


def resolve(args: argparse.Namespace) -> config.Config:
    overrides = list(args.set)
    overrides += [f"{key}={getattr(args, flag)}" for flag, key in SHORTCUTS.items()
                  if getattr(args, flag, None) is not None]
    return config.load(args.config, overrides)
