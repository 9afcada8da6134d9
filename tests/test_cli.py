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
