"""``python -m parallel_ms config``: print the resolved configuration as TOML (every setting,
its value after the file and the overrides) — a starting point for a ``--config`` file."""
from __future__ import annotations

import argparse

from parallel_ms import config
from parallel_ms.commands.options import add_config_options, resolve


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved run configuration as TOML")
    add_config_options(p)
    p.add_argument("--reference", action="store_true",
                   help="print the configuration reference (every key, its type, default, "
                        "what is allowed and its meaning) as Markdown: docs/configuration.md")


def main(args: argparse.Namespace) -> int:
    if args.reference:
        from parallel_ms.config_reference import markdown
        print(markdown())
        return 0
    print(config.to_toml(resolve(args)), end="")
    return 0
