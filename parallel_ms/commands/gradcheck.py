"""``python -m parallel_ms gradcheck``: Taylor test of the training objective's gradient."""
from __future__ import annotations

import argparse

from parallel_ms import parallel
from parallel_ms.commands.options import add_config_options, resolve

MIN_RATE = 1.9


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gradcheck", help="Taylor test of the training objective (exit 1 when "
                                         f"the convergence rate is below {MIN_RATE})")
    add_config_options(p)
    p.set_defaults(dtype="float64")


def main(args: argparse.Namespace) -> int:
    cfg = resolve(args)
    ctx = parallel.init(cfg.parallel.device)
    from parallel_ms.training.gradcheck import taylor_test
    from parallel_ms.training.setup import build
    s = build(cfg, ctx)
    result = taylor_test(list(s.net.parameters()),
                         lambda: sum(s.objective.terms(s.forward).values()))
    say = parallel.print0
    say(f"Taylor test of J = sum of the {cfg.train.method} terms on {s.problem.name}, "
        f"{cfg.network.dtype}, {ctx.size} rank(s)")
    say(f"{'t':>8}  {'|J(θ+td) − J(θ) − t∇J·d|':>28}  rate")
    for i, (t, r) in enumerate(zip(result.t, result.remainders)):
        rate = "" if not i else ("(round-off)" if result.rates[i - 1] != result.rates[i - 1]
                                 else f"{result.rates[i - 1]:.3f}")
        say(f"{t:>8.0e}  {r:>28.6e}  {rate}")
    say(f"∇J·d = {result.directional:.12e}; central difference (t = {result.t[2]:.0e}) "
        f"= {result.central_fd:.12e}; relative difference {result.fd_rel_diff:.2e}")
    ok = result.min_rate >= MIN_RATE
    say(f"minimum rate {result.min_rate:.3f}: {'PASS' if ok else 'FAIL'} (needs >= {MIN_RATE})")
    return 0 if ok else 1
