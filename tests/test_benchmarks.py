"""The reproduction driver (benchmarks/reproduce.py) end to end at its quick scale: runs, the
table in the paper's format, JSON, figure, and reuse of finished runs. (The benchmark scripts
measure time; none of that is asserted here.)"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import mpi_env

ROOT = Path(__file__).resolve().parent.parent


def _module(name: str = "reproduce"):
    """benchmarks/NAME.py imported as a module."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _reproduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/reproduce.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_reproduce_tabulates_runs_and_reuses_them(tmp_path):
    args = ("1d-eps1_15", "--scale", "quick", "--seeds", "0", "--jobs", "1",
            "--root", str(tmp_path), "--json", str(tmp_path / "r.json"))
    first = _reproduce(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("[start]") == 2
    assert "| hybrid |" in first.stdout and "| Ms-PINN |" in first.stdout
    rows = json.loads((tmp_path / "r.json").read_text())["tables"]["1d-eps1_15"]["rows"]
    for runs in rows.values():
        assert runs[0]["steps"] == 60 and math.isfinite(runs[0]["rel_l2"])
        assert Path(runs[0]["path"], "summary.json").is_file()
    assert rows["hybrid"][0]["method"] == "hybrid" and rows["Ms-PINN"][0]["method"] == "pinn"
    assert (tmp_path / "quick" / "1d-eps1_15.png").stat().st_size > 0
    again = _reproduce(*args)
    assert again.returncode == 0 and "[start]" not in again.stdout
    assert again.stdout.count("[cached]") == 2
    # one row of the table, two runs at a time: one torch thread each, still the same runs
    only = _reproduce(*args[:-2], "--rows", "^hyb", "--jobs", "2")
    assert only.returncode == 0 and only.stdout.count("[cached]") == 1
    assert "| hybrid |" in only.stdout and "| Ms-PINN |" not in only.stdout
    # time to accuracy of the same finished runs
    paths = {row: runs[0]["path"] for row, runs in rows.items()}
    tta = subprocess.run(
        [sys.executable, "benchmarks/time_to_accuracy.py",
         *[f"{row}={path}" for row, path in paths.items()], f"hybrid={paths['hybrid']}",
         "--targets", "1e9", "0",
         "--out", str(tmp_path / "tta.png"), "--json", str(tmp_path / "tta.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tta.returncode == 0, tta.stdout + tta.stderr
    out = json.loads((tmp_path / "tta.json").read_text())["runs"]
    assert [r["label"] for r in out] == [*paths, "hybrid"]   # a label may repeat (seeds)
    for r in out:      # every error is <= 1e9 (reached at the first evaluation), none is <= 0
        assert r["time_to"] == {"1000000000.0": r["train_time"][0], "0.0": None}
        assert r["steps"][-1] == 60 and r["ranks"] == 1
        assert r["best_after_smallest_target"] is None       # the best never reaches 0
    assert "| hybrid | 1 | 60 |" in tta.stdout and (tmp_path / "tta.png").stat().st_size > 0
    # what the run returns if stopped after reaching 1e9 (from the start): its worst value
    tta = subprocess.run(
        [sys.executable, "benchmarks/time_to_accuracy.py", f"hybrid={paths['hybrid']}",
         "--targets", "1e9", "--json", str(tmp_path / "tta.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tta.returncode == 0, tta.stdout + tta.stderr
    with open(Path(paths["hybrid"]) / "metrics.csv") as f:
        best = [float(r["best_rel_l2"]) for r in csv.DictReader(f) if r["best_rel_l2"]]
    assert len(best) > 1 and json.loads((tmp_path / "tta.json").read_text())["runs"][0][
        "best_after_smallest_target"] == max(best)


def test_reproduce_unknown_table_is_one_line():
    out = _reproduce("table-9")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        "unknown table 'table-9' (allowed: 1d-eps0_01, 1d-eps1_15, 2d, beyond-1d, beyond-2d, "
        "tta-1d-eps1_15, tta-1d-eps0_01, tta-2d)")


def test_reproduce_runs_on_ranks_in_their_own_directories(tmp_path):
    reproduce = _module()
    one = reproduce.plan(["tta-1d-eps1_15"], "quick", [0, 1], tmp_path, 1)
    two = reproduce.plan(["tta-1d-eps1_15"], "quick", [0, 1], tmp_path, 1, ranks=2,
                         rows="Gauss-Newton")
    assert len(one) == 2 * len(reproduce.TABLES["tta-1d-eps1_15"].rows)
    assert [r.row.name for r in two[::2]] == [
        "Ms-PINN, Gauss-Newton", "hybrid, Gauss-Newton",
        "hybrid, Gauss-Newton, tau_2 continuation from 50 %"]
    paths = {r.row.name: r.path for r in one}
    for run in two:
        assert run.path.parent.name == paths[run.row.name].parent.name + "-n2"
        assert run.command(2)[1:3] == ["-n", "2"]


def test_2d_gauss_newton_rows_train_as_the_job_file():
    """The Gauss-Newton rows of tta-2d are jobs/paper-2d.toml (220 steps; hybrid with tau_2
    continuation over 40), whatever the scale: the table and the job file measure one thing."""
    from parallel_ms import config
    reproduce = _module()
    table = reproduce.TABLES["tta-2d"]
    job = reproduce.JOBS / "paper-2d.toml"
    rows = {row.name: row for row in table.rows}
    before_average = ["train.ema_decay=0", "estimate.every=5"]   # the rows' runs, measured so
    expected = {"Ms-PINN, Gauss-Newton (jobs/paper-2d.toml)": ["train.steps=220",
                                                              *before_average],
                "hybrid, Gauss-Newton, tau_2 continuation from 50 % (the default run)":
                ["train.method=hybrid", "train.steps=40", "coupling.continuation=0.5",
                 "optimizer.gn_momentum=0", *before_average]}
    for name, sets in expected.items():
        for scale in ("reduced", "quick"):
            got = config.load(reproduce.JOBS / table.config,
                              [*table.scales[scale], *rows[name].overrides])
            assert config.to_toml(got) == config.to_toml(config.load(job, sets)), (name, scale)


def test_time_to_target_is_the_first_evaluation_reaching_it():
    reproduce = _module()
    times, errors = [1.0, 2.0, 3.0, 4.0], [0.5, 0.05, 0.2, 0.01]
    assert reproduce.first_reach(times, errors, 0.1) == 2.0
    assert reproduce.first_reach(times, errors, 0.01) == 4.0
    assert reproduce.first_reach(times, errors, 1e-3) is None


def test_history_reads_the_step_answer_or_the_best_so_far(tmp_path):
    """cases.py's time to target is that of the best answer so far (what the run returns),
    which an answer between evaluations can reach before any evaluated one does."""
    reproduce = _module()
    (tmp_path / "metrics.csv").write_text(
        "step,optimizer,train_time,rel_l2,best_rel_l2\n1,gauss-newton,1.0,,\n"
        "2,gauss-newton,2.0,0.2,0.2\n3,gauss-newton,3.0,,\n4,gauss-newton,4.0,0.3,0.04\n")
    steps, errors, _, times = reproduce.history(tmp_path)
    assert (steps, errors, times) == ([2, 4], [0.2, 0.3], [2.0, 4.0])
    _, best, _, _ = reproduce.history(tmp_path, "best_rel_l2")
    assert best == [0.2, 0.04]
    assert reproduce.first_reach(times, errors, 0.05) is None
    assert reproduce.first_reach(times, best, 0.05) == 4.0


def test_deepxde_peer_measures_saved_networks_as_run_does(tmp_path):
    """The project side of the DeepXDE peer (no DeepXDE needed): saved networks are measured
    against the reference by the run's metric (the zero network exactly at rel. L2 and H1 1)
    and written as a run directory that time_to_accuracy.py reads."""
    peer = _module("deepxde_peer")
    args = argparse.Namespace(case="paper-1d-eps1_15", width=8, features=4, seed=0)
    from parallel_ms.problems import get_case
    net = peer.network(get_case(args.case), args.width, args.features, args.seed)
    snaps = []
    for i, scale in enumerate((1.0, 0.0)):          # the initial network, then v = 0
        snaps.append(tmp_path / f"snap-{i}.pt")
        torch.save({"state": {k: scale * v for k, v in net.state_dict().items()},
                    "train_time": 10.0 * (i + 1), "iteration": 5 * i, "optimizer": "L-BFGS",
                    "loss": 1.0}, snaps[-1])
    errors = peer.evaluate(snaps, args)
    rows = [errors[s] for s in snaps]
    assert rows[1]["rel_l2"] == pytest.approx(1.0, abs=1e-12)
    assert rows[1]["rel_h1"] == pytest.approx(1.0, abs=1e-12)
    assert abs(rows[0]["rel_l2"] - 1.0) > 1e-3 and rows[0]["train_time"] == 10.0
    run = tmp_path / "lbfgs-seed0"
    run.mkdir()
    peer.write_run(run, rows, args, "DeepXDE L-BFGS")
    tta = subprocess.run([sys.executable, "benchmarks/time_to_accuracy.py", f"peer={run}",
                          "--targets", "1e9", "--json", str(tmp_path / "tta.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tta.returncode == 0, tta.stdout + tta.stderr
    out = json.loads((tmp_path / "tta.json").read_text())["runs"][0]
    assert out["steps"] == [0, 5] and out["time_to"] == {"1000000000.0": 10.0}
    assert out["rel_l2"] == [r["rel_l2"] for r in rows]


def test_error_scales_separates_coarse_from_oscillating_errors(tmp_path):
    import h5py
    import numpy as np
    t = (np.arange(200) + 0.5) / 200
    x = np.stack(np.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    bump = np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1])
    wiggle = np.sin(2 * np.pi * 10 * x[:, 0])           # one period per box of 10 x 10
    for name, error in (("coarse", 1e-2 * bump), ("fine", 1e-2 * wiggle)):
        (tmp_path / name).mkdir()
        with h5py.File(tmp_path / name / "fields.h5", "w") as f:
            u = bump + 0.1 * wiggle                         # fields.h5 as a run writes it
            f["fine/coordinates"], f["fine/u"], f["fine/v"] = x, u, u + error
            f["fine/error"] = np.abs(error)
            if name == "coarse":                            # a hybrid run's coarse fields
                f["coarse/qv"], f["coarse/y"] = np.full(9, 0.5), np.full(9, 0.47)
    out = subprocess.run([sys.executable, "benchmarks/error_scales.py", str(tmp_path / "coarse"),
                          str(tmp_path / "fine"), "--json", str(tmp_path / "s.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    coarse, fine = json.loads((tmp_path / "s.json").read_text())["runs"]
    assert coarse["error_share"] > 0.95 and fine["error_share"] < 1e-3
    assert coarse["u_share"] == fine["u_share"] and 0.9 < coarse["u_share"] < 1
    # rms of the bump 1e-2 sin sin is 5e-3: the mismatch 0.03 is 6 times it
    assert coarse["coupling_over_error"] == pytest.approx(6, rel=2e-3)
    assert math.isnan(fine["coupling_over_error"])                  # a Ms-PINN run
    missing = subprocess.run([sys.executable, "benchmarks/error_scales.py", str(tmp_path)],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "has no fields.h5" in missing.stderr.splitlines()[-1]


def _continue(tmp_path, steps, script, *args):
    """A small Gauss-Newton run of ``steps`` steps with fresh points every step (and a copy of
    it, "resumed"), then ``script`` continuing it: its output; the run is left as it was."""
    import shutil
    run = [sys.executable, "-m", "parallel_ms", "run", "--case", "paper-1d-eps1_15",
           "--optimizer", "gauss-newton", "--dtype", "float64", "--steps", str(steps),
           "--set", "network.width=8", "--set", "network.features=4",
           "--set", "network.hard_bc=false",
           "--set", "sampling.interior=300", "--set", "sampling.resample_every=1",
           "--set", "output.fields=false", "--set", "reference.degree=1",
           "--set", f"reference.cache_dir={tmp_path}/ref", "--set", f"output.root={tmp_path}",
           "--set", "output.name=r"]
    assert subprocess.run(run, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    shutil.copytree(tmp_path / "r", tmp_path / "resumed")
    before = {f.name: f.read_bytes() for f in (tmp_path / "r").iterdir()}
    out = subprocess.run([sys.executable, f"benchmarks/{script}", str(tmp_path / "r"), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert {f.name: f.read_bytes() for f in (tmp_path / "r").iterdir()} == before
    return out


def _resumed_metrics(tmp_path, steps, *sets):
    """metrics.csv of the copy resumed to ``steps`` with an evaluation every step."""
    import csv
    resumed = subprocess.run([sys.executable, "-m", "parallel_ms", "run", "--resume",
                              str(tmp_path / "resumed"), "--set", f"train.steps={steps}",
                              "--set", "train.eval_every=1", *sets],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    with open(tmp_path / "resumed" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_iterate_average_continues_a_run_as_resume_does_without_writing_to_it(tmp_path):
    """The continuation's iterates are the resumed run's (same errors at the same steps), the
    average of one iterate is the iterate, and the run directory is left as it was."""
    out = _continue(tmp_path, 4, "iterate_average.py", "--to", "6", "--every", "1",
                    "--json", str(tmp_path / "a.json"))
    rows = json.loads((tmp_path / "a.json").read_text())["rows"]
    assert [r["step"] for r in rows] == [5, 6] and "| 6 |" in out.stdout
    assert rows[0]["rel_l2_average"] == rows[0]["rel_l2"]
    assert rows[1]["rel_l2_average"] != rows[1]["rel_l2"]
    l2 = {int(r["step"]): float(r["rel_l2"]) for r in _resumed_metrics(tmp_path, 6)
          if r["rel_l2"]}
    assert [l2[5], l2[6]] == [r["rel_l2"] for r in rows]


def test_best_iterate_records_the_resumed_runs_losses_and_picks_each_rules_minimum(tmp_path):
    """best_iterate.py's continuation is the resumed run's: its own-points and validation
    losses and errors are those a run resumed with the same sampling.validation logs; each
    rule picks the step of its smallest loss; the run directory is left as it was."""
    _continue(tmp_path, 3, "best_iterate.py", "--to", "7", "--validation", "400",
              "--json", str(tmp_path / "b.json"))
    data = json.loads((tmp_path / "b.json").read_text())
    rows = data["rows"]
    assert [r["step"] for r in rows] == [4, 5, 6, 7]
    for rule in ("own", "validation", "weak"):
        assert data["picks"][rule]["step"] == min(rows, key=lambda r: r[rule])["step"]
        assert all(r[rule] > 0 for r in rows)
    logged = _resumed_metrics(tmp_path, 7, "--set", "sampling.validation=400")
    assert [r["validation"] for r in logged[:3]] == ["", "", ""]    # the column added on resume
    for r, mine in zip(logged[3:], rows, strict=True):
        assert float(r["validation"]) == pytest.approx(mine["validation"], rel=1e-12)
        assert float(r["residual"]) + float(r["boundary"]) == pytest.approx(mine["own"],
                                                                          rel=1e-12)
        assert float(r["rel_l2"]) == mine["rel_l2"]


def test_residual_tail_shares_and_the_noise_of_a_sample_mean(tmp_path):
    """The tail and zone shares against a residual whose answer is known, and the script on a
    finished run (read only): its shares ordered, the noise of an N-point mean as 1 / sqrt(N)."""
    import numpy as np
    tail = _module("residual_tail")
    r2 = np.ones(10000)
    r2[:10] = 1000.0                       # 0.1 % of the values, 10000 / 19990 of their sum
    shares = tail.tail_shares(r2)
    assert shares["0.001"] == pytest.approx(10000 / 19990)
    assert shares["0.0001"] == pytest.approx(1000 / 19990)
    assert shares["0.1"] == pytest.approx(10990 / 19990)
    x = np.array([[0.5, 0.5], [0.005, 0.5], [0.003, 0.996], [0.5, 0.999]])
    zones = tail.zone_shares(x, np.array([1.0, 2.0, 3.0, 4.0]), 0.01)
    assert zones["boundary"] == {"points": 0.75, "r2": 0.9}
    assert zones["corners"] == {"points": 0.25, "r2": 0.3}
    # a layer whose density follows r^2 exactly weighs it without noise (ideal importance
    # sampling), where the plain mean of the same values is noisy
    y = np.random.default_rng(0).random((20000, 2))
    follows = 1 + 3 * (np.minimum(y, 1 - y).min(1) < 0.1)
    points, noise = tail.layer_noise(y, follows.astype(float), 0.1, 4.0, 1000)
    assert noise < 1e-6 and points == pytest.approx(1000 * follows.mean())
    assert tail.layer_noise(y, follows.astype(float), 0.1, 1.0, 1000)[1] > 0.02
    _continue(tmp_path, 3, "residual_tail.py", "--points", "4000", "--sample", "100", "400",
              "--layer", "0.1", "4", "--json", str(tmp_path / "t.json"))
    out = json.loads((tmp_path / "t.json").read_text())
    assert out["step"] == 3 and out["points"] == 4000 and out["mean_r2"] > 0
    top = list(out["top"].values())
    assert top == sorted(top) and 0 < top[0] and top[-1] <= 1
    assert out["noise"]["100"] == pytest.approx(2 * out["noise"]["400"], rel=1e-12)
    points, noise = out["layers"]["0.1 x4"]["100"]
    assert 100 < points < 400 and noise > 0


def test_gn_scaling_times_every_part_of_a_solvers_step(tmp_path):
    """gn_scaling.py runs a solver's Gauss-Newton step under mpiexec and accounts for its
    parts: each part's time is positive and they add up to at most the step."""
    out = subprocess.run([sys.executable, "benchmarks/gn_scaling.py", "--ranks", "1",
                          "--solvers", "woodbury", "--points", "2000", "--steps", "1",
                          "--kinds", "strong", "--json", str(tmp_path / "g.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = json.loads((tmp_path / "g.json").read_text())["strong"]
    assert (row["solver"], row["ranks"], row["parameters"]) == ("woodbury", 1, 4801)
    parts = [row[k] for k in ("jacobian", "setup", "solve", "trials")]
    assert all(p > 0 for p in parts) and sum(parts) <= row["step_s"]
    assert "woodbury     1" in out.stdout


def test_gpu_check_runs_without_firedrake_and_its_error_falls(tmp_path):
    """gpu_check.py at its CPU size, Firedrake and PETSc blocked: every part of the table is
    timed, the solver is picked without the ScaLAPACK one, and the error against the
    manufactured solution is printed and falls every step."""
    from test_imports import SCRIPT, blocked
    out = blocked(SCRIPT, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--steps",
                  "3", "--json", str(tmp_path / "g.json"), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "scalapack not installed" in out.stdout
    data = json.loads((tmp_path / "g.json").read_text())
    for row in data["table"].values():
        assert row["residual_s"] > 0 and row["jacobian_s"] > 0
        assert all(row[s]["seconds"] > 0 for s in ("cholesky", "woodbury", "cg"))
    errors = [h["rel_l2"] for h in data["history"]]
    assert [h["step"] for h in data["history"]] == [0, 1, 2, 3]
    assert all(math.isfinite(e) for e in errors) and errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.5 * errors[0]
    lines = out.stdout.splitlines()
    header = next(k for k, line in enumerate(lines) if line.split()[:2] == ["step", "loss"])
    printed = [float(line.split()[2]) for line in lines[header + 1:header + 5]]
    assert printed == pytest.approx(errors, rel=1e-4)


def test_gpu_check_networks_and_manufactured_solution():
    """The table's networks are the paper's (33,281 parameters) and one of ~100,000; the
    manufactured u solves the lifted problem with the source in closed form (the residual
    (4.8) of u, by autograd, vanishes)."""
    from parallel_ms.fine.derivatives import derivatives_autograd
    from parallel_ms.fine.residual import residual
    g = _module("gpu_check")
    cpu = torch.device("cpu")
    sizes = {label: sum(p.numel() for p in g.network(w, f, cpu).parameters())
             for label, (w, f) in g.SCALES["full"].networks.items()}
    assert sizes["paper"] == 33_281 and abs(sizes["100k"] - 100_000) < 1_000
    x = g.points(500, 0, cpu)
    p = g.PROBLEM
    _, grad, lap = derivatives_autograd(g.exact, x)
    r = residual(p.k(x), p.grad_k(x), p.lifted_source(x), lap, grad).detach()
    assert float(r.abs().max()) < 1e-11 * float(p.lifted_source(x).abs().max())


@pytest.mark.parametrize("device", [
    "cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device")])])
@pytest.mark.parametrize("solver", ["cholesky", "woodbury", "cg"])
def test_gauss_newton_step_stays_on_the_device(solver, device, monkeypatch):
    """A Gauss-Newton step of gpu_check's PINN on the device: the parameters, the step, the
    gradient and the solver's matrix stay there, and no tensor is copied to the host; the
    previous step read from a checkpoint (on the host) returns to the device."""
    g = _module("gpu_check")
    dev = torch.device(device)
    rows = g.PINNRows(g.network(16, 8, dev), g.PROBLEM)
    rows.use(g.points(300, 1, dev))
    gn = g.optimizer(rows, solver)

    def to_host(self, *args, **kwargs):
        raise AssertionError("a tensor was copied to the host")

    monkeypatch.setattr(torch.Tensor, "cpu", to_host)
    monkeypatch.setattr(torch.Tensor, "numpy", to_host)
    record = gn.step(1)
    monkeypatch.undo()
    assert record.stats["accepted"]
    kept = {"cholesky": ("gram", "g"), "woodbury": ("kernel", "g", "jac"), "cg": ()}[solver]
    held = [gn.previous, *rows.params, *gn._lin.rows.values()]
    held += [getattr(gn.solver, name) for name in kept]
    assert all(t.device.type == dev.type and t.dtype == torch.float64 for t in held)
    state = gn.state_dict()
    gn.load_state_dict({**state, "previous": state["previous"].cpu()})
    assert gn.previous.device.type == dev.type and torch.equal(gn.previous, state["previous"])


def test_error_estimate_benchmark_tables_the_effectivity(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/error_estimate.py", "--cases",
                          "paper-1d-eps1_15", "--methods", "pinn", "--seeds", "0", "--ranks",
                          "2", "--eval-every", "2", "--cells-per-period", "4", "8",
                          "--set", "train.steps=4", "--set", "problem.eps=0.5",
                          "--set", "sampling.interior=400", "--set", "network.width=8",
                          "--set", f"reference.cache_dir={tmp_path}",
                          "--root", str(tmp_path / "runs"), "--json", str(tmp_path / "e.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads((tmp_path / "e.json").read_text())
    (run,) = data["runs"]
    assert [e["step"] for e in run["evaluations"]] == [2, 4]
    assert [r["cells_per_period"] for r in data["rows"]] == [4, 8]
    last = run["evaluations"][-1]
    for c in ("4", "8"):       # the estimate and the corrected answer at the last evaluation
        assert 0 < last["estimates"][c]["rel_l2"] and "corrected_rel_l2" in last["estimates"][c]
    assert "paper-1d-eps1_15   pinn   8" in out.stdout


def test_seeds_benchmark_tables_each_seed_and_reuses_completed_runs(tmp_path):
    cmd = [sys.executable, "benchmarks/seeds.py", "--config", "jobs/paper-1d-eps1_15.toml",
           "--seeds", "0", "1", "--ranks", "1", "--set", "train.steps=3",
           "--set", "problem.eps=0.5", "--set", "sampling.interior=400",
           "--set", "network.width=8", "--set", f"reference.cache_dir={tmp_path}/ref",
           "--root", str(tmp_path / "runs"), "--json", str(tmp_path / "s.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=mpi_env())
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert [r["seed"] for r in rows] == [0, 1] and rows[0]["rel_l2"] != rows[1]["rel_l2"]
    assert all(r["estimated_rel_l2"] > 0 for r in rows)
    stamp = (tmp_path / "runs" / "seed0" / "command.json").stat().st_mtime_ns
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env=mpi_env())
    assert again.returncode == 0 and json.loads((tmp_path / "s.json").read_text())["rows"] == rows
    assert (tmp_path / "runs" / "seed0" / "command.json").stat().st_mtime_ns == stamp


def test_a_failed_run_of_a_benchmark_is_one_line_after_the_runs_own(tmp_path):
    """A run the benchmark launches refuses its settings: the run's one-line error, then one
    line naming the seed, the command and its output file; no traceback."""
    out = subprocess.run([sys.executable, "benchmarks/seeds.py", "--config",
                          "jobs/paper-1d-eps1_15.toml", "--seeds", "0", "--ranks", "1",
                          "--set", "loss.form=bogus", "--root", str(tmp_path / "runs")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert "loss.form" in out.stderr and "bogus" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("seed 0: the run failed (exit ")
    assert str(tmp_path / "runs" / "seed0" / "output.txt") in out.stderr.splitlines()[-1]


_TINY_1D = ("--set", "train.steps=3", "--set", "problem.eps=0.5", "--set",
            "sampling.interior=400", "--set", "network.width=8")


def test_cases_benchmark_runs_each_case_with_its_defaults_and_tables_the_target(tmp_path):
    cmd = [sys.executable, "benchmarks/cases.py", "--cases", "paper-1d-eps1_15",
           "quasi-periodic-1d", "--methods", "pinn", "--seeds", "0", "--ranks", "1", *_TINY_1D,
           "--set", f"reference.cache_dir={tmp_path}/ref", "--root", str(tmp_path / "runs"),
           "--json", str(tmp_path / "c.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=mpi_env())
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert [(r["case"], r["method"], r["target"]) for r in rows] == [
        ("paper-1d-eps1_15", "pinn", 1e-3), ("quasi-periodic-1d", "pinn", 1e-3)]
    assert all(r["rel_l2"] > 0 and r["estimated_rel_l2"] > 0 for r in rows)
    # with no --config the case defaults apply: the measured Gauss-Newton training
    config = (tmp_path / "runs" / "quasi-periodic-1d" / "pinn" / "seed0" / "config.toml")
    assert 'kind = "gauss-newton"' in config.read_text()
    assert "| quasi-periodic-1d | pinn | 0.001 |" in out.stdout


def test_gmsfem_hybrid_benchmark_runs_each_coarse_space_and_tables_them(tmp_path):
    cmd = [sys.executable, "benchmarks/gmsfem_hybrid.py", "--cases", "channels-2d",
           "--variants", "hybrid-p1", "hybrid-gmsfem", "hybrid-gmsfem-galerkin", "--seeds", "0",
           "--ranks", "1",
           "--steps", "2", "--tau2", "1e3", "--root", str(tmp_path / "runs"),
           "--json", str(tmp_path / "g.json"),
           *[a for s in ("network.width=8", "network.features=4", "sampling.interior=1000",
                         "sampling.boundary=80", "coarse.cells=4", "gmsfem.refinement=4",
                         "reference.resolution=64", f"reference.cache_dir={tmp_path}/ref")
             for a in ("--set", s)]]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=mpi_env())
    assert out.returncode == 0, out.stdout + out.stderr
    rows = json.loads((tmp_path / "g.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["hybrid-p1", "hybrid-gmsfem", "hybrid-gmsfem-galerkin"]
    assert all(r["rel_l2"] > 0 and r["min_rel_l2"] <= r["rel_l2"] for r in rows)
    config = (tmp_path / "runs" / "channels-2d" / "hybrid-gmsfem" / "seed0" / "config.toml")
    text = config.read_text()
    assert 'space = "gmsfem"' in text and "tau2 = 1000.0" in text
    assert "| channels-2d | hybrid-gmsfem |" in out.stdout
    galerkin = (tmp_path / "runs" / "channels-2d" / "hybrid-gmsfem-galerkin" / "seed0"
                / "config.toml").read_text()
    assert 'form = "galerkin"' in galerkin and "tau2 = 1.0" in galerkin


def test_rank_history_compares_each_rank_counts_losses_with_the_first(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/rank_history.py", "--config", "jobs/paper-1d-eps1_15.toml",
         "--ranks", "1", "2", "--steps", "2", *_TINY_1D[2:],
         "--set", f"reference.cache_dir={tmp_path}/ref", "--root", str(tmp_path / "runs"),
         "--json", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=mpi_env())
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["step"] for r in data["rows"]] == [1, 2]
    assert all(0 <= r["rel_diff"]["2"] < 1 for r in data["rows"])

def _gn_scaling():
    """benchmarks/gn_scaling.py imported as a module."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gn_scaling
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return gn_scaling


def _gn_scaling_model(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/gn_scaling.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=mpi_env())


@pytest.mark.parametrize("machine", ["cpu-cluster", "gpu"])
def test_gn_scaling_projects_every_solver_to_every_rank_count(machine, tmp_path):
    """--project models the step (no training) for every network, scaling, solver and rank
    count, with finite times; the replicated Cholesky's factorisation does not shrink with
    the ranks, ScaLAPACK's does, and the strong scaling's Jacobian shrinks."""
    out = _gn_scaling_model("--project", "8", "64", "512", "--machine", machine,
                            "--json", str(tmp_path / "p.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    g = _gn_scaling()
    data = json.loads((tmp_path / "p.json").read_text())
    ranks = [1, 2, 8, 64, 512]
    assert data["machine"] == machine and data["ranks"] == ranks
    rows = data["projection"]
    blocks = {g.block_key(r) for r in rows}
    assert blocks == {(n, k, p) for n in g.NETWORKS for k, p in g.PROJECTED}
    assert out.stdout.count("fastest that fits: ") == len(blocks)
    parts = ("jacobian", "gram", "reduction", "factorisation", "solve", "trials")
    for key in blocks:
        block = [r for r in rows if g.block_key(r) == key]
        assert sorted((r["solver"], r["ranks"]) for r in block) == sorted(
            (s, n) for s in g.SOLVERS for n in ranks)
        for r in block:
            assert all(math.isfinite(r[p]) and r[p] >= 0 for p in parts)
            assert r["step_s"] == pytest.approx(sum(r[p] for p in parts)) and r["step_s"] > 0
            assert r["memory"] >= 0 and r["fits"] == (r["memory"] <= data["rates"]["memory"])
        if key[1] != "strong":
            continue
        by = {s: [r for r in sorted(block, key=lambda r: r["ranks"]) if r["solver"] == s]
              for s in g.SOLVERS}
        factor = {s: [r["factorisation"] for r in by[s]] for s in ("cholesky", "scalapack")}
        assert all(b >= a for a, b in zip(factor["cholesky"], factor["cholesky"][1:]))
        assert all(b < a for a, b in zip(factor["scalapack"], factor["scalapack"][1:]))
        for s in ("cholesky", "scalapack", "woodbury"):
            jac = [r["jacobian"] for r in by[s]]
            assert all(b < a for a, b in zip(jac, jac[1:]))
        assert [r["reduction"] for r in by["cholesky"]] == sorted(
            r["reduction"] for r in by["cholesky"])


def test_gn_scaling_checks_the_model_against_a_measurement(tmp_path):
    """--from-json sets the model (this machine, the run's counts per step) beside each run of
    a measurement: a measurement equal to the model reads 1.00 per part."""
    from parallel_ms.training.optimizers.cost_model import MACHINES, Counts, step
    g = _gn_scaling()
    p, rows = g.sizes("default", 6000, 2)
    parts = step("cholesky", p, rows, 2, MACHINES["this"], Counts(trials=3, products=0))
    measured = {part: sum(parts[k] for k in g.MEASURED_AS[part]) for part in g.PARTS}
    run = {"solver": "cholesky", "ranks": 2, "points": 6000, "parameters": p,
           "step_s": sum(parts.values()), **measured, "counts": {"trials": 3, "products": 0}}
    (tmp_path / "m.json").write_text(json.dumps({"network": "default", "strong": [run]}))
    out = _gn_scaling_model("--from-json", str(tmp_path / "m.json"),
                            "--json", str(tmp_path / "c.json"))
    assert out.returncode == 0, out.stdout + out.stderr
    (row,) = json.loads((tmp_path / "c.json").read_text())["check"]
    assert row["counted"] and row["counts"] == {"trials": 3, "products": 0}
    assert row["model"] == pytest.approx(row["measured"], rel=1e-12)
    assert "cholesky     2      3" in out.stdout and "1.00" in out.stdout


def test_collective_fit_recovers_latency_and_bandwidth():
    """Link.fit on synthetic all-reduce times (2 ranks, alpha + beta bytes, +-5 % noise)
    recovers alpha and beta; the model's collectives cost nothing on one rank, and a
    replicated sum (reduce and broadcast) twice an all-reduce."""
    import dataclasses

    import numpy as np
    from parallel_ms.training.optimizers.cost_model import MACHINES, Link
    sizes = np.array([2.0 ** k for k in range(3, 27)])
    noise = 1 + 0.05 * np.random.default_rng(0).uniform(-1, 1, len(sizes))
    fit = Link.fit(list(sizes), list((2e-6 + sizes / 12e9) * noise))
    assert fit.alpha == pytest.approx(2e-6, rel=0.1) and fit.beta == pytest.approx(1 / 12e9,
                                                                                 rel=0.05)
    m = dataclasses.replace(MACHINES["cpu-cluster"], intra=fit, inter=fit)
    assert m.allreduce(1e6, 2) == pytest.approx(fit.alpha + fit.beta * 1e6)
    assert m.replicated_sum(1e6, 8) == 2 * m.allreduce(1e6, 8)
    assert m.allreduce(1e6, 1) == m.alltoall(1e6, 1) == m.panels(10, 1e6, 1) == 0


def test_subspace_operator_spectral_gap_is_the_ratio_after_the_last_kept_eigenvalue():
    """lambda_{L+1} / lambda_L over the neighbourhoods (the operator's target spans' gap), and
    none for L = 1, whose lambda_1 is 0."""
    import numpy as np
    from mpi4py import MPI
    bench = _module("subspace_operator")
    pairs = [(np.array([0.0, 1.0, 3.0]), None), (np.array([0.0, 2.0, 2.2]), None)]
    gaps = bench._spectral_gaps(pairs, 2, MPI.COMM_SELF)
    assert gaps["median"] == pytest.approx(2.05) and gaps["p10"] == pytest.approx(1.29)
    assert bench._spectral_gaps(pairs, 1, MPI.COMM_SELF) is None


def test_subspace_operator_benchmark_refuses_a_missing_model_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "benchmarks/subspace_operator.py", "--load",
                          str(tmp_path / "none.pt")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip() == (f"--load {tmp_path / 'none.pt'}: no such file "
                                  f"(a model saved by --model)")
