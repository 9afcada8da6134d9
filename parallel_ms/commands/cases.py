"""``python -m parallel_ms cases``: the built-in problems, one line each."""
from __future__ import annotations

import argparse

from parallel_ms.problems import CASES, get_case


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("cases", help="list the built-in cases (problems)")


def main(args: argparse.Namespace) -> int:
    width = max(map(len, CASES))
    for name in CASES:
        print(f"{name:<{width}}  {get_case(name).summary()}")
    print("User cases: --case path/to/file.py:NAME (see examples/user_case.py).")
    return 0
