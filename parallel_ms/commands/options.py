"""Command-line options shared by the commands that take a run configuration."""
from __future__ import annotations

import argparse
from pathlib import Path

from parallel_ms import config

#: shortcut flag -> the configuration keys it sets (``--seed`` seeds the network's
#: initialisation and the collocation points alike: one seed, one run)
SHORTCUTS = {"case": ("problem.case",), "eps": ("problem.eps",), "method": ("train.method",),
             "steps": ("train.steps",), "optimizer": ("optimizer.kind",),
             "network": ("network.kind",), "dtype": ("network.dtype",),
             "points": ("sampling.interior",), "seed": ("network.seed", "sampling.seed"),
             "device": ("parallel.device",)}


def add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="TOML file (sections as in "
                   "'python -m parallel_ms config')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set optimizer.lr=1e-3 (repeatable)")
    for flag, keys in SHORTCUTS.items():
        p.add_argument(f"--{flag}", default=None,
                       help="same as " + " ".join(f"--set {key}=..." for key in keys))


def resolve(args: argparse.Namespace) -> config.Config:
    overrides = list(args.set)
    overrides += [f"{key}={getattr(args, flag)}" for flag, keys in SHORTCUTS.items()
                  for key in keys if getattr(args, flag, None) is not None]
    return config.load(args.config, overrides)
