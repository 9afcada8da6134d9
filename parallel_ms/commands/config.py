"""``python -m parallel_ms config``: print the resolved configuration as TOML (every setting,
its value after the defaults per case and method, the file and the overrides) — a starting
point for a ``--config`` file; ``--explain`` adds where each value comes from."""
from __future__ import annotations

import argparse

from parallel_ms import config_io
from parallel_ms.commands.options import add_config_options, layers


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="print the resolved run configuration as TOML")
    add_config_options(p)
    p.add_argument("--reference", action="store_true",
                   help="print the configuration reference (every key, its type, default, "
                        "what is allowed and its meaning) as Markdown: docs/configuration.md")
    p.add_argument("--explain", action="store_true",
                   help="end each line with where its value comes from: default, case default "
                        "(CASE, METHOD), paper (--paper), file (PATH) or command line")


def main(args: argparse.Namespace) -> int:
    if args.reference:
        from parallel_ms.config_reference import markdown
        print(markdown())
        return 0
    sources = layers(args)
    cfg = config_io.build(sources)
    print(config_io.to_toml(cfg, config_io.origins(sources) if args.explain else None), end="")
    return 0
