"""``run`` and ``gradcheck`` commands under mpiexec."""
import csv
import json
import re
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

SMALL = ["--set", "sampling.interior=800", "--set", "sampling.boundary=160",
         "--set", "network.width=16", "--set", "network.features=8", "--set", "coarse.cells=8"]


def test_gradcheck_passes_in_float64_and_fails_in_float32(mpiexec):
    out = mpiexec(2, ["-m", "parallel_ms", "gradcheck", "--case", "paper-2d", *SMALL],
                  timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS" in out.stdout and out.stdout.count("Taylor test") == 1
    rates = [float(x) for x in re.findall(r"e[+-]\d\d\s+(\d\.\d{3})$", out.stdout, re.M)]
    assert len(rates) == 4 and min(rates) > 1.9
    # float32 rounding swamps the t^2 remainder for small t: the rule must catch it
    bad = mpiexec(2, ["-m", "parallel_ms", "gradcheck", "--case", "paper-2d", "--dtype",
                      "float32", *SMALL], timeout=300)
    assert bad.returncode == 1 and "FAIL" in bad.stdout


def test_run_command_reports_errors_of_the_best_iterate(mpiexec, tmp_path):
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--case", "paper-1d-eps1_15", "--eps", "0.5",
                      "--steps", "30", "--set", "network.hard_bc=true",
                      "--set", "train.eval_every=10", "--set", "train.log_every=10",
                      "--set", f"reference.cache_dir={tmp_path}", "--set", "reference.degree=2",
                      "--set", f"output.root={tmp_path}", "--set", "output.name=r1",
                      *SMALL], timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("done: 30 steps") == 1
    assert re.search(r"; \d+ interior points \(hard boundary condition\) on 2 rank", out.stdout)
    m = re.search(r"rel\. L2 error (\S+), rel\. H1 error (\S+)", out.stdout)
    assert m and 0 < float(m.group(1)) < 10 and 0 < float(m.group(2)) < 10
    assert len(re.findall(r"^step +\d+ ", out.stdout, re.M)) == 3
    run = tmp_path / "r1"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["ranks"] == 2 and summary["method"] == "pinn"
    assert summary["rel_l2"] == pytest.approx(float(m.group(1)), rel=1e-4)
    # the error estimate (no reference used) and the corrected answer v + e_h
    assert 0.5 < summary["estimated_rel_l2"] / summary["rel_l2"] < 2, summary
    assert summary["corrected_rel_l2"] < summary["rel_l2"], summary
    assert out.stdout.count("error estimate (no reference used)") == 1
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    assert rows[9]["rel_l2"] and not rows[8]["rel_l2"]
    assert float(rows[9]["estimated_rel_l2"]) > 0 and not rows[8]["estimated_rel_l2"]
    assert "steps = 30" in (run / "config.toml").read_text()


def test_run_header_counts_the_points_whose_rows_are_used():
    from parallel_ms.commands.run import _points
    from parallel_ms.config import Config
    cfg, shard = Config(), SimpleNamespace(n_interior=798, n_boundary=160)
    cfg.network.hard_bc = False
    assert _points(cfg, shard) == "798 interior points + 160 boundary points"
    cfg.network.hard_bc = True
    assert _points(cfg, shard) == "798 interior points (hard boundary condition)"
    cfg.sampling.interior, cfg.sampling.resample_every = 6000, 2
    assert _points(cfg, shard) == ("6000 fresh interior points every 2 step(s) "
                                   "(hard boundary condition)")


def test_diverging_run_stops_with_one_line(mpiexec, tmp_path):
    # three good steps, then the learning rate jumps to 1e27 (decay 1e30 every 3 steps)
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--paper", "--case", "paper-2d", "--steps", "50",
                      "--set", "optimizer.decay=1e30", "--set", "optimizer.decay_every=3",
                      "--set", "optimizer.lr=1e-3", "--set", "balancing.enabled=false",
                      "--set", f"output.root={tmp_path}", "--set", "output.name=d",
                      "--set", "output.checkpoint_every=1", *SMALL], timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    first = out.stderr.splitlines()[0]
    m = re.match(r"parallel_ms: error: (the loss term '\w+' is (?:nan|inf)|the network "
                 r"parameters are not finite) at step (\d+): the run diverged .*; the last "
                 r"checkpoint is kept$", first)
    assert m, first
    assert "Traceback" not in out.stderr
    bad_step = int(m.group(2))
    assert bad_step > 3
    with h5py.File(tmp_path / "d" / "checkpoint.h5") as f:    # the last good step's state
        assert int(f.attrs["step"]) == bad_step - 1
        assert all(np.all(np.isfinite(f["replicated/network"][k][()]))
                   for k in f["replicated/network"])


def test_run_config_error_is_one_line_on_two_ranks(mpiexec):
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--set", "optimizer.lr=-1"], timeout=120)
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == "parallel_ms: error: optimizer.lr = -1.0 (allowed: > 0)"
    assert "Traceback" not in out.stderr


def test_hybrid_run_and_gradcheck_commands(mpiexec, tmp_path):
    hybrid = ["--method", "hybrid", "--case", "paper-1d-eps1_15", "--set", "coarse.cells=40",
              "--set", "network.hard_bc=true", *SMALL[:-2]]
    out = mpiexec(2, ["-m", "parallel_ms", "run", *hybrid, "--steps", "20",
                      "--set", f"output.root={tmp_path}",
                      "--set", "train.eval_every=20", "--set", "train.log_every=10",
                      "--set", f"reference.cache_dir={tmp_path}", "--set", "reference.degree=1"],
                  timeout=300)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^step +20 .* R \S+  K~ \d\.\d{4}", out.stdout, re.M), out.stdout
    check = mpiexec(2, ["-m", "parallel_ms", "gradcheck", *hybrid], timeout=300)
    assert check.returncode == 0 and "PASS" in check.stdout, check.stdout + check.stderr


def test_too_coarse_sampling_for_delta_is_one_line(mpiexec, tmp_path):
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--method", "hybrid", "--case", "paper-2d",
                      "--points", "300", "--set", "coupling.delta=0.02",
                      "--set", f"output.root={tmp_path}"], timeout=120)
    assert out.returncode == 2, out.stderr
    first = out.stderr.splitlines()[0]
    assert first.startswith("parallel_ms: error: ") and "no collocation point within" in first
    assert "Traceback" not in out.stderr


def test_more_ranks_than_coarse_cells_is_a_one_line_error(mpiexec):
    out = mpiexec(3, ["-m", "parallel_ms", "run", "--case", "paper-1d-eps1_15",
                      "--set", "coarse.cells=2", "--set", "sampling.interior=100"], timeout=120)
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == ("parallel_ms: error: coarse.cells = 2 gives 2 coarse "
                                          "cells for 3 MPI ranks (allowed: at least one coarse "
                                          "cell per rank; the coarse cells shard the points)")


def test_unwritable_output_root_is_one_line_on_two_ranks(mpiexec, tmp_path):
    (tmp_path / "file").write_text("")
    root = tmp_path / "file" / "runs"        # below a file: cannot be created, even by root
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--set", f"output.root={root}",
                      "--set", "train.steps=1"], timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[0] == (f"parallel_ms: error: output.root = '{root}' cannot "
                                          f"be created: Not a directory (allowed: a directory "
                                          f"you can create and write)")
    assert "Traceback" not in out.stderr and out.stdout == ""
