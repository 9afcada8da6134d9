"""Checkpoint/restart, preemption and the run directory's outputs, under ``mpiexec -n 2``."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import ROOT, mpi_env

TINY = ["--set", "sampling.interior=600", "--set", "sampling.boundary=80",
        "--set", "network.width=12", "--set", "network.features=6", "--set", "coarse.cells=6",
        "--set", "coupling.delta=0.3", "--dtype", "float64", "--set", "output.fields=false",
        "--set", "balancing.every=2", "--set", "optimizer.decay_every=3",
        "--set", "reference.degree=1", "--set", "train.eval_every=1000"]


def _run(mpiexec, tmp_path, name, extra, steps):
    out = mpiexec(2, ["-m", "parallel_ms", "run", *TINY, "--steps", str(steps),
                      "--set", f"output.root={tmp_path}", "--set", f"output.name={name}",
                      "--set", f"reference.cache_dir={tmp_path}/ref", *extra], timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def _network(path, group="network"):
    with h5py.File(path, "r") as f:
        g = f[f"replicated/{group}"]
        return {k: np.array(g[k]) for k in g}, int(f.attrs["step"])


@pytest.mark.parametrize("extra", [
    ["--paper", "--method", "hybrid", "--case", "paper-2d"],
    ["--paper", "--case", "paper-1d-eps1_15", "--eps", "0.5", "--optimizer", "lbfgs",
     "--set", "optimizer.lbfgs_max_iter=4"],
    ["--paper", "--method", "hybrid", "--case", "paper-2d", "--optimizer", "adam-gauss-newton",
     "--set", "optimizer.gn_warmup=2", "--set", "optimizer.gn_solver=cg",
     "--set", "sampling.resample_every=3", "--set", "optimizer.gn_momentum=0.5",
     "--set", "train.ema_decay=0.5", "--set", "estimate.every=2"],
], ids=["hybrid-adam", "pinn-lbfgs", "hybrid-adam-gauss-newton-average"])
def test_resume_is_bitwise_identical_to_an_uninterrupted_run(mpiexec, tmp_path, extra):
    _run(mpiexec, tmp_path, "full", extra, 8)
    _run(mpiexec, tmp_path, "split", extra, 4)
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--resume", str(tmp_path / "split"),
                      "--set", "train.steps=8"], timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resuming" in out.stdout and "at step 4" in out.stdout
    full, step_full = _network(tmp_path / "full" / "checkpoint.h5")
    split, step_split = _network(tmp_path / "split" / "checkpoint.h5")
    assert step_full == step_split == 8
    for k in full:
        assert np.array_equal(full[k], split[k]), k      # bitwise
    if "train.ema_decay=0.5" in extra:                   # the average of the iterates too
        full, _ = _network(tmp_path / "full" / "checkpoint.h5", "average")
        split, _ = _network(tmp_path / "split" / "checkpoint.h5", "average")
        assert full.keys() == split.keys() and "n_averaged" in full
        for k in full:
            assert np.array_equal(full[k], split[k]), k
    rows = list(csv.DictReader(open(tmp_path / "split" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    ref_rows = list(csv.DictReader(open(tmp_path / "full" / "metrics.csv")))
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]


def test_interior_milestones_draw_what_a_resume_with_more_points_draws(mpiexec, tmp_path):
    # sampling.interior_milestones: from step 4 on 900 fresh points a step instead of 600, as
    # a run resumed after step 3 with sampling.interior=900 (the same points, bitwise)
    extra = ["--case", "paper-2d", "--optimizer", "gauss-newton",
             "--set", "sampling.resample_every=1", "--set", "estimate.every=1000"]
    _run(mpiexec, tmp_path, "milestones", [*extra, "--set", "sampling.interior_milestones=[4]",
                                          "--set", "sampling.interior_counts=[900]"], 5)
    _run(mpiexec, tmp_path, "split", extra, 3)
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--resume", str(tmp_path / "split"),
                      "--set", "train.steps=5", "--set", "sampling.interior=900"], timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    full, _ = _network(tmp_path / "milestones" / "checkpoint.h5")
    split, _ = _network(tmp_path / "split" / "checkpoint.h5")
    for k in full:
        assert np.array_equal(full[k], split[k]), k
    with h5py.File(tmp_path / "milestones" / "checkpoint.h5", "r") as f:
        n = int(np.array(f["rank/0/points/n_interior"]))
    assert 800 < n < 1000, n
    losses = [[r["loss"] for r in csv.DictReader(open(tmp_path / name / "metrics.csv"))]
              for name in ("milestones", "split")]
    assert losses[0] == losses[1] and len(losses[0]) == 5


def test_missing_and_corrupt_checkpoints_are_one_line_errors(mpiexec, tmp_path):
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--resume", str(tmp_path / "nowhere")])
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == (f"parallel_ms: error: --resume '{tmp_path}/nowhere' "
                                          f"is not a run directory (allowed: a directory "
                                          f"written by 'run', holding config.toml and "
                                          f"checkpoint.h5)")
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.toml").write_text("[train]\nsteps = 3\n")
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--resume", str(run), *TINY])
    assert out.returncode == 2
    assert out.stderr.splitlines()[0] == (f"parallel_ms: error: checkpoint "
                                          f"'{run}/checkpoint.h5' does not exist")
    (run / "checkpoint.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--resume", str(run), *TINY])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    first = out.stderr.splitlines()[0]
    assert first.startswith(f"parallel_ms: error: checkpoint '{run}/checkpoint.h5' cannot be "
                            f"read (") and first.endswith("it is corrupt or truncated")


def test_resume_with_another_rank_count_or_problem_is_refused(mpiexec, tmp_path):
    _run(mpiexec, tmp_path, "r", ["--case", "paper-1d-eps1_15"], 2)
    out = mpiexec(1, ["-m", "parallel_ms", "run", "--resume", str(tmp_path / "r")])
    assert out.returncode == 2
    assert out.stderr.splitlines()[0].endswith(
        "was written by 2 rank(s), this job has 1 (allowed: resume with 2 rank(s))")
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--resume", str(tmp_path / "r"),
                      "--set", "problem.eps=0.05"])
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[0] == (
        "parallel_ms: error: problem.eps = 0.05 with --resume (allowed: the run's own, unset "
        "(the case's value): its checkpoint, best iterate and reference belong to that problem; "
        "start a new run for another)")


def _start(tmp_path, name, steps):
    cmd = ["mpiexec", "--oversubscribe", "-n", "2", sys.executable, "-m", "parallel_ms", "run",
           "--paper", "--method", "hybrid", "--case", "paper-2d", *TINY, "--steps", str(steps),
           "--set", "train.log_every=1", "--set", f"output.root={tmp_path}",
           "--set", f"output.name={name}", "--set", f"reference.cache_dir={tmp_path}/ref"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=mpi_env(), cwd=ROOT)


def _wait_for_steps(proc, metrics, n, timeout=120.0):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) > n:
            return
        time.sleep(0.2)
    raise AssertionError(f"the run did not reach step {n}: {proc.poll()}")


_CHILD_SURVIVES = """
import subprocess, time
from mpi4py import MPI
from parallel_ms.training.preemption import Preemption
with Preemption(MPI.COMM_WORLD) as pre:
    child = subprocess.Popen(["cat"], stdin=subprocess.PIPE)    # stands in for a compiler
    MPI.COMM_WORLD.barrier()
    if MPI.COMM_WORLD.rank == 0:
        print("ready", flush=True)
    t0 = time.time()
    while not pre.requested() and time.time() - t0 < 60:
        time.sleep(0.05)
    child.stdin.close()
    codes = MPI.COMM_WORLD.gather(child.wait())
    if MPI.COMM_WORLD.rank == 0:
        print("children", *codes, pre.name, flush=True)
"""


def test_a_rank_s_child_processes_survive_the_preemption_signal():
    """mpiexec forwards SIGUSR1 to each rank's process group: a child a rank is running then
    (PyOP2's compiler, building a kernel mid-run) must finish, not die of the signal."""
    proc = subprocess.Popen(["mpiexec", "--oversubscribe", "-n", "2", sys.executable, "-c",
                             _CHILD_SURVIVES], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=mpi_env(), cwd=ROOT)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert stdout.splitlines() == ["children 0 0 SIGUSR1"], stdout + stderr


@pytest.mark.parametrize("how", ["SIGUSR1 to mpiexec", "SIGTERM to every rank"])
def test_preemption_checkpoints_and_exits_0_then_resumes_bitwise(mpiexec, tmp_path, how):
    """mpiexec forwards SIGUSR1 to the ranks (batch scripts: --signal=B:USR1@120); SLURM sends
    SIGTERM to every task at the time limit or on preemption."""
    proc = _start(tmp_path, "pre", 400)
    _wait_for_steps(proc, tmp_path / "pre" / "metrics.csv", 3)
    if how.startswith("SIGUSR1"):
        proc.send_signal(signal.SIGUSR1)
    else:
        ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                               text=True).stdout.split()
        assert len(ranks) == 2
        for pid in ranks:
            os.kill(int(pid), signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stdout + stderr
    signame = "SIGUSR1" if how.startswith("SIGUSR1") else "SIGTERM"
    assert stdout.count(f"{signame} received: stopped after step") == 1, stdout
    _, stopped = _network(tmp_path / "pre" / "checkpoint.h5")
    assert 3 <= stopped < 400
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["checkpoint_step"] == stopped
    total = stopped + 3
    out = mpiexec(2, ["-m", "parallel_ms", "run", "--resume", str(tmp_path / "pre"),
                      "--set", f"train.steps={total}"], timeout=300)
    assert out.returncode == 0, out.stderr
    _run(mpiexec, tmp_path, "ref", ["--paper", "--method", "hybrid", "--case", "paper-2d",
                                    "--set", "train.log_every=1"], total)
    resumed, _ = _network(tmp_path / "pre" / "checkpoint.h5")
    reference, _ = _network(tmp_path / "ref" / "checkpoint.h5")
    assert all(np.array_equal(resumed[k], reference[k]) for k in reference)


def test_report_regenerates_plots_and_prints_the_summary(mpiexec, tmp_path):
    out = mpiexec(2, ["-m", "parallel_ms", "run", *TINY, "--method", "hybrid",
                      "--case", "paper-2d", "--steps", "4", "--set", "output.fields=true",
                      "--set", f"output.root={tmp_path}", "--set", "output.name=r",
                      "--set", f"reference.cache_dir={tmp_path}/ref"], timeout=300)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "r"
    for name in ("history.png", "fields.png", "fields.h5", "fields/fine.pvd",
                 "fields/coarse.pvd", "summary.json", "config.toml", "checkpoint.h5"):
        assert (run / name).exists(), name
    assert len(list((run / "fields").glob("fine/*.vtu"))) == 2      # one piece per rank
    with h5py.File(run / "fields.h5") as f:
        assert f["fine/u"].shape == f["fine/v"].shape and f["coarse/y"].shape[0] == 49
        assert np.allclose(f["fine/error"][()], np.abs(f["fine/v"][()] - f["fine/u"][()]))
        # the corrected answer v + e_h (error estimate) is nearer u_h than v is
        u, v, corrected = (f[f"fine/{k}"][()] for k in ("u", "v", "corrected"))
        assert np.allclose(corrected, v + f["fine/e_h"][()])
        assert np.linalg.norm(corrected - u) < 0.5 * np.linalg.norm(v - u)
    for png in ("history.png", "fields.png"):
        (run / png).unlink()
    rep = subprocess.run([sys.executable, "-m", "parallel_ms", "report", str(run)],
                         capture_output=True, text=True, env=mpi_env(), cwd=ROOT, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert (run / "history.png").stat().st_size > 10_000 and (run / "fields.png").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert f"rel_l2: {summary['rel_l2']}" in rep.stdout
