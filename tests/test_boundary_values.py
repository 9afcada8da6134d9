"""Boundary values of every setting and every command-line option: zero, negative, NaN,
infinity, huge, overflowing, empty and wrong-typed values. Each either runs correctly (a short
real run, in-process, on every rank of the session) or is refused with one collective line
that names the key (or the memory estimate) and what is allowed: no traceback, no rank left
waiting. The tables are built from the typed configuration and from the argument parser, so
a new key or option is covered (or the coverage test fails)."""
from __future__ import annotations

import argparse
import dataclasses
import signal
import typing
from pathlib import Path

import pytest
from mpi4py import MPI

from parallel_ms import config
from parallel_ms.__main__ import build_parser
from parallel_ms.commands import run as run_command
from parallel_ms.commands.options import SHORTCUTS, resolve
from parallel_ms.errors import UserError
from parallel_ms.io.rundir import read_summary
from parallel_ms.resources import check_run

COMM = MPI.COMM_WORLD
VALUES = {"zero": "0", "negative": "-1", "nan": "nan", "inf": "inf",
          "huge": "1000000000000", "overflow": "1e30", "empty": "", "wrong type": "abc"}
#: a tiny 1D run (every key's base), and what some keys need to be exercised at all
BASE = ["problem.case=paper-1d-eps1_15", "network.width=8", "network.features=4",
        "sampling.interior=256", "coarse.cells=16", "train.steps=2", "train.eval_every=1",
        "reference.degree=1", "reference.resolution=512", "output.fields=false",
        "output.progress=log", "balancing.every=1"]
BASE_2D = ["problem.case=paper-2d", "train.method=hybrid", "coarse.cells=4",
           "sampling.interior=2000", "sampling.boundary=40", "reference.resolution=32"]
NEEDS = {
    "coupling.": ["train.method=hybrid"],
    "coupling.upscaling": BASE_2D, "coupling.k22": BASE_2D,
    "coupling.k12": BASE_2D + ["coupling.k22=3.0"],
    "coupling.blocks": BASE_2D + ["coupling.upscaling=block-tensor"],
    "sampling.boundary": ["problem.case=paper-2d", "coarse.cells=4", "sampling.interior=400",
                          "reference.resolution=32"],
    "optimizer.gn_": ["optimizer.kind=gauss-newton"],
    "optimizer.gn_warmup": ["optimizer.kind=adam-gauss-newton"],
    "optimizer.cg_": ["optimizer.kind=gauss-newton", "optimizer.gn_solver=cg"],
    "optimizer.line_search": ["optimizer.kind=gauss-newton"],
    "optimizer.lbfgs_": ["optimizer.kind=lbfgs"],
    "optimizer.switch_": ["optimizer.kind=adam-lbfgs", "optimizer.switch_window=1"],
    "sampling.adaptive_": ["sampling.adaptive_every=1"],
}


def _keys() -> list[str]:
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(config.Config)
            for f in dataclasses.fields(s.type if isinstance(s.type, type)
                                        else typing.get_type_hints(config.Config)[s.name])]


def _base(key: str, tmp_path) -> list[str]:
    extra = [x for prefix, needs in NEEDS.items() if key.startswith(prefix) for x in needs]
    return [*BASE, *extra, f"reference.cache_dir={tmp_path}/ref", f"output.root={tmp_path}"]


def _one_line(err: UserError, *names: str) -> None:
    text = str(err)
    assert err.collective and "\n" not in text and text.strip(), repr(text)
    assert any(n in text for n in names), (names, text)


def _short_run(args: argparse.Namespace, monkeypatch) -> dict:
    """The run command in-process, stopped after two steps as a preemption would stop it."""
    from parallel_ms.training import preemption
    calls = []

    def requested(self: preemption.Preemption) -> bool:
        calls.append(1)
        self.signum = signal.SIGUSR1 if len(calls) >= 2 else 0
        return bool(self.signum)

    monkeypatch.setattr(preemption.Preemption, "requested", requested)
    assert run_command.main(args) == 0
    return read_summary(_run_dir(args)) or {}


def _run_dir(args: argparse.Namespace) -> Path:
    """The run directory the run made (its root and name come from the settings)."""
    cfg = resolve(args)
    root = Path(cfg.output.root).expanduser()
    return root / cfg.output.name if cfg.output.name else max(
        (p for p in root.iterdir() if (p / "config.toml").exists()),
        key=lambda p: p.stat().st_mtime)


def _same_everywhere(outcome: str) -> str:
    outcomes = COMM.allgather(outcome)
    assert len(set(outcomes)) == 1, outcomes
    return outcome


def _attempt(key: str, text: str, tmp_path, monkeypatch) -> str:
    root = tmp_path / "runs"
    overrides = [*_base(key, tmp_path), f"output.root={root}", f"{key}={text}"]
    try:
        cfg = config.load(None, overrides)
        check_run(cfg, COMM)
    except UserError as err:
        _one_line(err, key, "estimated memory")
        return "refused"
    empty = tmp_path / "empty.toml"       # a file: Config's defaults, no case defaults
    empty.write_text("")
    args = build_parser().parse_args(["run", "--config", str(empty),
                                      *[a for o in overrides for a in ("--set", o)]])
    try:
        summary = _short_run(args, monkeypatch)
    except UserError as err:       # refused later (a divergence, a mesh too coarse, ...)
        _one_line(err, key, "diverged", "delta", "point", "cell")
        status = read_summary(_run_dir(args)) if COMM.rank == 0 else {"status": "-"}
        assert (status or {}).get("status") in ("failed", "diverged", "-"), status
        return "refused at run"
    if COMM.rank == 0:
        assert summary["status"] == "preempted", summary
    return "ran"


@pytest.mark.mpi
@pytest.mark.parametrize("key", _keys())
def test_every_setting_at_its_boundary_values(key, tmp_path_factory, monkeypatch):
    """All eight values of one key, on every rank of the session (1 and 2 ranks in CI)."""
    outcomes = {}
    for label, text in VALUES.items():
        tmp = tmp_path_factory.mktemp("bv") if COMM.rank == 0 else None
        tmp = COMM.bcast(tmp, root=0)
        monkeypatch.chdir(tmp)           # a relative path value lands in the test's folder
        outcomes[label] = _same_everywhere(_attempt(key, text, tmp, monkeypatch))
    # a value that cannot be one (empty; for a number NaN; for an integer, beyond 64 bits)
    # is never taken
    never = {int: ("nan", "empty", "overflow"), float: ("nan", "empty")}.get(_kind(key),
                                                                          ("empty",))
    section, _, name = key.partition(".")
    if getattr(getattr(config.Config(), section), name) == []:
        never = ()                       # an empty list is this key's default: it is taken
    assert all(outcomes[v] != "ran" for v in never), outcomes


def _kind(key: str) -> type:
    """int, float, bool, str or list: the type of a key (None allowed or not)."""
    section, _, name = key.partition(".")
    hint = typing.get_type_hints(type(getattr(config.Config(), section)))[name]
    kinds = [a for a in (hint, *typing.get_args(hint)) if a in (int, float, bool, str)]
    return kinds[0] if kinds else list


def test_the_tables_cover_every_setting_and_option():
    keys = set(_keys())
    assert keys == {f"{s}.{k}" for s, v in config.Config().to_dict().items() for k in v}
    assert all(k in keys for ks in SHORTCUTS.values() for k in ks)
    options = {(cmd, o) for cmd, o in _options()}
    assert options == {(cmd, o) for cmd, o, _ in OPTION_CASES}, \
        options ^ {(cmd, o) for cmd, o, _ in OPTION_CASES}


def _options() -> list[tuple[str, str]]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, opt) for name, p in sub.choices.items() for a in p._actions
            for opt in a.option_strings[:1] if opt not in ("-h", "--help")]


#: every option of every command: (command, option, what else the command needs)
OPTION_CASES = [(cmd, opt, extra) for cmd, opt, extra in [
    *[(cmd, f"--{flag}", []) for cmd in ("run", "config", "gradcheck")
      for flag in ("config", "set", *SHORTCUTS)],
    *[(cmd, flag, []) for cmd in ("run", "config", "gradcheck")
      for flag in ("--paper", "--debug")],
    ("run", "--resume", []), ("info", "--device", []), ("config", "--reference", []),
    ("config", "--explain", []), ("reference", "--debug", ["--case", "paper-1d-eps1_15"]),
    *[("reference", opt, ["--case", "paper-1d-eps1_15"]) for opt in (
        "--eps", "--param", "--degree", "--resolution", "--solver", "--tensor", "--blocks",
        "--homogenized", "--out", "--cache-dir", "--no-cache", "--memory-per-rank")],
    ("reference", "--case", []), ("gmsfem", "--case", []),
    *[("gmsfem", opt, ["--case", "channels-2d"]) for opt in (
        "--debug", "--eps", "--param", "--basis", "--threshold", "--cells", "--refinement",
        "--eigensolver", "--solver", "--basis-from", "--json", "--plot",
        "--memory-per-rank")]]]


def _preflight(argv: list[str], capsys) -> str:
    """Parse, then everything a command checks before it allocates; 'accepted' or the line."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        err = capsys.readouterr().err.strip()
        assert stop.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return "refused"
    try:
        if args.command in ("run", "config", "gradcheck"):
            if getattr(args, "resume", None) is not None:
                run_command._resume_config(args)
            else:
                check_run(resolve(args), COMM)
        elif args.command == "reference":
            from parallel_ms.commands.reference import preflight
            preflight(args)
        elif args.command == "gmsfem":
            from parallel_ms.commands.gmsfem import preflight as gmsfem_preflight
            gmsfem_preflight(args)
    except UserError as err:
        _one_line(err, "")
        return "refused"
    return "accepted"


@pytest.mark.mpi
@pytest.mark.parametrize("cmd,opt,extra", OPTION_CASES, ids=lambda x: str(x))
def test_every_option_at_its_boundary_values(cmd, opt, extra, capsys, tmp_path_factory,
                                             monkeypatch):
    """Command-line options: a value that parses is checked like the setting it sets (the run
    itself is the settings' test above); the reference command's accepted values are run."""
    from parallel_ms.commands import reference
    tmp = COMM.bcast(tmp_path_factory.mktemp("opt") if COMM.rank == 0 else None, root=0)
    monkeypatch.chdir(tmp)
    for label, text in VALUES.items():
        flag_only = opt in ("--tensor", "--homogenized", "--no-cache", "--reference",
                            "--paper", "--debug", "--explain")
        where = ["--cache-dir", str(tmp / "ref")] if cmd == "reference" else []
        argv = [cmd, *where, *extra, opt] + ([] if flag_only else [text])
        if opt == "--set":
            argv[-1] = f"optimizer.lr={text}"
        outcome = _same_everywhere(_preflight(argv, capsys))
        if outcome == "accepted" and cmd == "reference":
            assert reference.main(build_parser().parse_args(argv)) == 0, argv
        if label in ("nan", "empty") and not flag_only and opt not in (
                "--case", "--set", "--config", "--resume", "--out", "--cache-dir", "--json",
                "--plot"):
            assert outcome == "refused", (argv, outcome)
        if flag_only:
            break
