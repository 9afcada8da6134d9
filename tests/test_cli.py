"""The command line: help, version, the environment check, import order."""
import subprocess
import sys

import pytest

from parallel_ms import __version__
from conftest import mpi_env


def _py(args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=mpi_env(), timeout=300, **kw)


def test_help_and_version():
    out = _py(["-m", "parallel_ms", "--help"])
    assert out.returncode == 0 and "usage: parallel_ms" in out.stdout
    out = _py(["-m", "parallel_ms", "--version"])
    assert out.returncode == 0 and out.stdout.strip() == f"parallel_ms {__version__}"


def test_unknown_command_is_a_one_line_error():
    out = _py(["-m", "parallel_ms", "frobnicate"])
    assert out.returncode == 2 and "invalid choice: 'frobnicate'" in out.stderr
    assert "Traceback" not in out.stderr


def test_info_under_mpiexec_two_ranks(mpiexec):
    out = mpiexec(2, ["-m", "parallel_ms", "info"], timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torch.distributed all-reduce of 1..2 = 3 (MPI: 3)" in out.stdout
    rank_lines = [line for line in out.stdout.splitlines() if line.startswith("rank ")]
    assert [line.split()[1] for line in rank_lines] == ["0/2", "1/2"]
    cells = [int(line.split(", ")[-1].split()[0]) for line in rank_lines]
    assert sum(cells) == 512 and min(cells) > 0


@pytest.mark.parametrize("first,second", [("torch", "firedrake"), ("firedrake", "torch")])
def test_firedrake_and_torch_in_either_import_order(first, second):
    prog = f"""
import {first}, {second}
import firedrake as fd, torch
mesh = fd.UnitIntervalMesh(8)
V = fd.FunctionSpace(mesh, "CG", 1)
u = fd.Function(V).interpolate(fd.SpatialCoordinate(mesh)[0])
x = torch.linspace(0, 1, 5, dtype=torch.float64, requires_grad=True)
(x ** 2).sum().backward()
print(fd.assemble(u * fd.dx), float(x.grad.sum()))
"""
    out = _py(["-c", prog])
    assert out.returncode == 0, out.stderr
    integral, grad_sum = map(float, out.stdout.split())
    assert abs(integral - 0.5) < 1e-12 and abs(grad_sum - 5.0) < 1e-12


def test_config_command_prints_a_loadable_resolved_configuration(tmp_path):
    out = _py(["-m", "parallel_ms", "config", "--case", "paper-1d-eps0_01",
               "--set", "optimizer.lr=1e-3", "--seed", "7"])
    assert out.returncode == 0, out.stderr
    assert 'case = "paper-1d-eps0_01"' in out.stdout and "lr = 0.001" in out.stdout
    assert out.stdout.count("seed = 7") == 2        # --seed: network and sampling
    path = tmp_path / "c.toml"
    path.write_text(out.stdout)
    again = _py(["-m", "parallel_ms", "config", "--config", str(path)])
    assert again.returncode == 0 and again.stdout == out.stdout


def test_bare_command_runs_the_embedded_default(tmp_path):
    """The packaged default is the paper's 2D hybrid case; a bare ``python -m parallel_ms``
    runs it. Here the default is swapped for a tiny version of itself so that the test takes
    seconds (the real default's wall time is measured in the README)."""
    from parallel_ms import config
    from parallel_ms.__main__ import DEFAULT_RUN
    cfg = config.load(DEFAULT_RUN)
    assert (cfg.problem.case, cfg.train.method, cfg.network.kind) == ("paper-2d", "hybrid",
                                                                      "msff")
    tiny = config.load(DEFAULT_RUN, ["train.steps=3", "sampling.interior=400",
                                     "sampling.boundary=40", "network.width=8",
                                     "network.features=4", "coarse.cells=5",
                                     "coupling.delta=0.3", "reference.degree=1",
                                     "output.fields=false"])
    (tmp_path / "tiny.toml").write_text(config.to_toml(tiny))
    code = ("import sys, pathlib, parallel_ms.__main__ as m; "
            "m.DEFAULT_RUN = pathlib.Path('tiny.toml'); sys.exit(m.main([]))")
    out = _py(["-c", code], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no command given: the embedded default run")
    assert "done: 3 steps" in out.stdout and "rel. L2 error" in out.stdout
    assert "results: runs/hybrid-paper-2d-" in out.stdout


def test_unwritable_output_root_is_one_line_before_anything_is_computed():
    from parallel_ms.__main__ import DEFAULT_RUN
    out = _py(["-m", "parallel_ms", "run", "--config", str(DEFAULT_RUN),
               "--set", "output.root=/proc/forbidden", "--set", "train.steps=1"])
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[0].startswith(
        "parallel_ms: error: output.root = '/proc/forbidden' cannot be created")
    assert "Traceback" not in out.stderr and out.stdout == ""    # no training, no solve


BAD_CASE = """\
from parallel_ms.problems import Problem


def broken(eps: float = 0.1) -> Problem:
    return 1 / 0


def nothing(eps: float = 0.1):
    pass
"""


def _config_case(tmp_path, source: str, name: str, *flags: str, debug: str = ""):
    """``config --case FILE.py:NAME`` (which builds the case) for a case file ``source``."""
    case = tmp_path / "my_case.py"
    case.write_text(source)
    env = {**mpi_env(), "PARALLEL_MS_DEBUG": debug}
    out = subprocess.run([sys.executable, "-m", "parallel_ms", "config", "--case",
                          f"{case}:{name}", *flags], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 2 and out.stdout == "", out.stderr
    return case, out.stderr


def test_failing_user_case_is_one_line_and_debug_shows_only_its_frames(tmp_path):
    case, err = _config_case(tmp_path, BAD_CASE, "broken")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"parallel_ms: error: problem.case: case "
                          f"'{case}:broken' failed: ZeroDivisionError: division by zero "
                          f"(rerun with --debug or PARALLEL_MS_DEBUG=1 for the traceback")
    for flags, debug in ((["--debug"], ""), ([], "1")):
        _, err = _config_case(tmp_path, BAD_CASE, "broken", *flags, debug=debug)
        assert f'File "{case}", line 5, in broken\n    return 1 / 0' in err
        assert "parallel_ms/" not in err.replace(str(case), "")   # no frame of the project
        assert err.splitlines()[-1].endswith("failed: ZeroDivisionError: division by zero")


@pytest.mark.parametrize("source,name,message", [
    ("x = undefined_name\n", "f", "failed: NameError: name 'undefined_name' is not defined"),
    ("def f(:\n", "f", "failed: SyntaxError: "),
    (BAD_CASE, "nothing", "returned NoneType, not a parallel_ms Problem")])
def test_user_case_failing_at_import_or_returning_no_problem_is_one_line(tmp_path, source,
                                                                          name, message):
    case, err = _config_case(tmp_path, source, name)
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"case '{case}:{name}' {message}" in err


# Defaults per case and method (parallel_ms/case_defaults.py): without --config, the case's
# measured Gauss-Newton training for the method stands in for the file; --paper the paper's.

def _resolved(*argv: str):
    """The configuration that ``run ARGV`` resolves to, and its layers."""
    from parallel_ms.__main__ import build_parser
    from parallel_ms.commands import options
    from parallel_ms.config_io import build
    layers = options.layers(build_parser().parse_args(["run", *argv]))
    return build(layers), layers


def _in_effect(cfg):
    """``cfg`` as TOML, with ``coarse.cells`` as in effect (None means the dimension's default)."""
    from parallel_ms import config
    from parallel_ms.problems import get_case
    dim = get_case(cfg.problem.case).dim
    cfg.coarse.cells = cfg.coarse.cells or config.DEFAULT_COARSE_CELLS[dim]
    return config.to_toml(cfg)


def test_case_defaults_lie_under_the_file_and_the_overrides(tmp_path):
    from parallel_ms import config
    path = tmp_path / "partial.toml"
    path.write_text('[problem]\ncase = "paper-1d-eps0_01"\n[train]\nmethod = "hybrid"\n'
                    'steps = 7\n[network]\nwidth = 20\n')
    cfg = config.load(path, ["train.steps=9"], case_layer="measured")
    assert (cfg.network.kind, cfg.network.harmonics, cfg.coupling.continuation) == (
        "two-scale", 2, 0.5)                         # case default (the file's case, method)
    assert (cfg.network.width, cfg.train.steps) == (20, 9)   # file over case, --set over file
    cfg, _ = _resolved("--case", "paper-1d-eps0_01", "--method", "hybrid", "--steps", "9",
                       "--set", "network.width=20")
    assert (cfg.network.kind, cfg.network.width, cfg.train.steps) == ("two-scale", 20, 9)
    cfg, _ = _resolved("--config", str(path))        # the command line: none under a file
    assert (cfg.network.kind, cfg.optimizer.kind, cfg.network.width) == ("msff", "adam", 20)


def test_run_case_and_method_without_a_file_resolve_to_gauss_newton():
    cfg, _ = _resolved("--case", "paper-1d-eps0_01", "--method", "hybrid")
    assert (cfg.optimizer.kind, cfg.network.dtype, cfg.network.kind, cfg.train.method,
            cfg.coupling.continuation, cfg.sampling.interior, cfg.train.steps) == (
        "gauss-newton", "float64", "two-scale", "hybrid", 0.5, 4000, 40)


def test_paper_gives_the_papers_adam_settings():
    from parallel_ms import config
    from parallel_ms.errors import UserError
    cfg, _ = _resolved("--case", "paper-1d-eps0_01", "--paper")
    assert (cfg.optimizer.kind, cfg.network.dtype, cfg.network.kind, cfg.network.width,
            cfg.sampling.interior, cfg.train.steps) == ("adam", "float32", "msff", 128, 5000,
                                                        8000)
    cfg, _ = _resolved("--case", "locally-periodic-1d", "--paper")   # no adam file: Config()
    default = config.Config()
    assert (cfg.optimizer.kind, cfg.train.steps) == (default.optimizer.kind,
                                                     default.train.steps)
    with pytest.raises(UserError, match=r"^--paper with the config file 'x.toml' \(allowed"):
        _resolved("--config", "x.toml", "--paper")


@pytest.mark.parametrize("job,argv", [
    ("paper-2d.toml", ["--case", "paper-2d", "--method", "pinn"]),
    ("paper-1d-eps0_01.toml", ["--case", "paper-1d-eps0_01"]),
    ("paper-1d-eps1_15.toml", ["--case", "paper-1d-eps1_15"]),
    ("paper-2d-adam.toml", ["--case", "paper-2d", "--method", "hybrid", "--paper"]),
    ("paper-1d-eps0_01-adam.toml", ["--case", "paper-1d-eps0_01", "--paper"]),
    ("paper-1d-eps1_15-adam.toml", ["--case", "paper-1d-eps1_15", "--paper"])])
def test_the_table_holds_the_job_files_settings(job, argv):
    """The table and the job files measure one thing; the job files resolve as before."""
    from parallel_ms import config
    from conftest import ROOT
    cfg, _ = _resolved(*argv)
    assert _in_effect(cfg) == _in_effect(config.load(ROOT / "jobs" / job))
    as_file, _ = _resolved("--config", str(ROOT / "jobs" / job))
    assert config.to_toml(as_file) == config.to_toml(config.load(ROOT / "jobs" / job))


def test_every_built_in_case_has_defaults_for_both_methods():
    from parallel_ms.case_defaults import MEASURED
    from parallel_ms.problems import CASES
    assert set(CASES) == set(MEASURED)
    assert all(set(methods) == {"pinn", "hybrid"} for methods in MEASURED.values())


@pytest.mark.parametrize("method", ["pinn", "hybrid"])
def test_every_case_default_resolves_to_a_valid_configuration(method):
    """``run --case NAME --method M`` builds (values checked) for every built-in case."""
    from parallel_ms.problems import CASES
    for case in CASES:
        cfg, _ = _resolved("--case", case, "--method", method)
        assert (cfg.problem.case, cfg.train.method) == (case, method)
        assert cfg.optimizer.kind == "gauss-newton"


@pytest.mark.parametrize("case,dim", [("layered", 2), ("fading", 1)])
def test_a_user_case_gets_the_measured_training_of_its_dimension(case, dim):
    """A case with no measured training (``FILE.py:NAME``) is trained by Gauss-Newton as
    measured for its dimension (case_defaults.GENERIC), not by Config's Adam defaults, and
    ``config --explain`` says so; ``--paper`` still gives the paper's Adam settings."""
    from parallel_ms.case_defaults import GENERIC
    from conftest import ROOT
    name = f"{ROOT / 'examples' / 'user_case.py'}:{case}"
    for method in ("pinn", "hybrid"):
        cfg, layers = _resolved("--case", name, "--method", method)
        assert layers[0].values == GENERIC[dim][method] and layers[0].origin.startswith(
            f"{dim}D default ({method};")
        assert cfg.optimizer.kind == "gauss-newton" and cfg.train.method == method
    assert _resolved("--case", name, "--paper")[0].optimizer.kind == "adam"


def test_the_embedded_default_run_is_unchanged():
    """parallel_ms/configs/default.toml resolves as measured (docs/usage.md), with or without
    the case layer, and ``run --case paper-2d --method hybrid`` is the same run."""
    from parallel_ms import config
    from parallel_ms.__main__ import DEFAULT_RUN
    cfg, _ = _resolved("--config", str(DEFAULT_RUN))
    got = {k: getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) for k in (
        "problem.case", "train.method", "optimizer.kind", "optimizer.gn_momentum",
        "network.kind", "network.width", "network.depth", "network.features",
        "network.hard_bc", "network.dtype", "sampling.interior", "sampling.boundary",
        "sampling.resample_every", "coupling.continuation", "coarse.cells", "train.steps",
        "train.eval_every", "train.log_every", "loss.tau_weak", "loss.weak_norm",
        "train.best_by", "train.ema_decay", "estimate.every")}
    assert got == {"problem.case": "paper-2d", "train.method": "hybrid",
                   "optimizer.kind": "gauss-newton", "optimizer.gn_momentum": 0.9,
                   "network.kind": "msff", "network.width": 48, "network.depth": 2,
                   "network.features": 24, "network.hard_bc": True, "network.dtype": "float64",
                   "sampling.interior": 6000, "sampling.boundary": 800,
                   "sampling.resample_every": 1, "coupling.continuation": 0.5,
                   "coarse.cells": None, "train.steps": 60, "train.eval_every": 20,
                   "train.log_every": 1, "loss.tau_weak": 1e4, "loss.weak_norm": "dual",
                   "train.best_by": "estimate", "train.ema_decay": 0.5, "estimate.every": 1}
    assert config.to_toml(cfg) == config.to_toml(config.load(DEFAULT_RUN))
    by_case, _ = _resolved("--case", "paper-2d", "--method", "hybrid")
    assert config.to_toml(by_case) == config.to_toml(cfg)


def test_config_explain_names_where_each_value_comes_from(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text("[train]\nsteps = 7\n")
    out = _py(["-m", "parallel_ms", "config", "--explain", "--case", "paper-1d-eps0_01",
               "--method", "hybrid", "--set", "network.width=20"])
    assert out.returncode == 0, out.stderr
    origin = {line.split(" = ")[0]: line.rsplit("# ", 1)[1]
              for line in out.stdout.splitlines() if " = " in line and not line.startswith("#")}
    assert origin["width"] == "command line" and origin["depth"] == "default"
    assert origin["kind"] == "case default (paper-1d-eps0_01, hybrid)"    # network.kind
    assert origin["continuation"] == "case default (paper-1d-eps0_01, hybrid)"
    plain = _py(["-m", "parallel_ms", "config", "--case", "paper-1d-eps0_01", "--method",
                 "hybrid", "--set", "network.width=20"])
    assert [line.split("  # ")[0].rstrip() for line in out.stdout.splitlines()] == \
        plain.stdout.splitlines()                    # the same TOML, with the origins
    out = _py(["-m", "parallel_ms", "config", "--explain", "--config", str(path)])
    assert "steps = 7" in out.stdout and f"# file ({path})" in out.stdout
    assert "case default" not in out.stdout
    out = _py(["-m", "parallel_ms", "config", "--explain", "--case", "paper-2d", "--paper"])
    assert "steps = 80000" in out.stdout and "# paper (--paper)" in out.stdout


@pytest.mark.parametrize("argv", [["--case", "paper-1d-eps0_01", "--paper"],
                                  ["--case", "paper-1d-eps0_01", "--method", "hybrid"],
                                  ["--case", "high-contrast-2d", "--optimizer", "adam"]])
def test_resume_keeps_the_saved_configuration(tmp_path, argv):
    """A resumed run reads its complete config.toml: the case layer changes no value of it
    (here: Adam settings saved for a case whose defaults are Gauss-Newton, and the reverse)."""
    from parallel_ms import config
    from parallel_ms.__main__ import build_parser
    from parallel_ms.commands.run import _resume_config
    saved, _ = _resolved(*argv, "--set", f"output.root={tmp_path}", "--set", "output.name=r")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.toml").write_text(config.to_toml(saved))
    args = build_parser().parse_args(["run", "--resume", str(tmp_path / "r")])
    assert config.to_toml(_resume_config(args)) == config.to_toml(saved)


@pytest.mark.slow
def test_the_1d_hybrid_default_reaches_1e_3_on_two_ranks(mpiexec, tmp_path):
    """``run --case paper-1d-eps0_01 --method hybrid`` and nothing else: rel. L2 <= 1e-3 (the
    issue's target: also under 3 minutes wall on 2 cores, measured when the machine is not
    shared)."""
    import json
    import time
    start = time.monotonic()
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--case", "paper-1d-eps0_01", "--method",
                      "hybrid", "--set", f"output.root={tmp_path}", "--set", "output.name=r"],
                  timeout=900)
    wall = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    print(f"rel. L2 {summary['rel_l2']:.3e}, wall {wall:.0f} s")
    assert summary["rel_l2"] <= 1e-3, summary
