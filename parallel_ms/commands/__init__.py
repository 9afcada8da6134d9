"""Subcommands of ``python -m parallel_ms``: each module has ``add_parser(subparsers)`` and
``main(args) -> int``."""
