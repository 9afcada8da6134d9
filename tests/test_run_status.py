"""How a run ended (summary.json's status) and ``report`` over a directory of runs: one run of
each kind — completed, failed, diverged, preempted, killed with SIGKILL — made for real."""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, mpi_env

TINY = ["--case", "paper-1d-eps1_15", "--set", "network.width=8", "--set", "network.features=4",
        "--set", "sampling.interior=256", "--set", "coarse.cells=16", "--set",
        "reference.degree=1", "--set", "reference.resolution=512", "--set",
        "output.fields=false", "--set", "output.progress=log"]


def _cmd(tmp_path, name, *extra):
    return [sys.executable, "-m", "parallel_ms", "run", *TINY,
            "--set", f"reference.cache_dir={tmp_path}/ref", "--set",
            f"output.root={tmp_path}/runs", "--set", f"output.name={name}", *extra]


def _run(tmp_path, name, *extra):
    return subprocess.run(_cmd(tmp_path, name, *extra), capture_output=True, text=True,
                          env=mpi_env(), cwd=ROOT, timeout=300)


def _summary(tmp_path, name):
    return json.loads((tmp_path / "runs" / name / "summary.json").read_text())


def _wait_for_rows(path, rows, proc):
    t0 = time.time()
    while not (path.exists() and len(path.read_text().splitlines()) > rows):
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()
        time.sleep(0.2)


def test_each_way_a_run_ends_is_recorded_and_reported(tmp_path):
    done = _run(tmp_path, "a-completed", "--steps", "3")
    assert done.returncode == 0, done.stderr
    # hybrid with too few points for the compression radius: fails after the run dir exists
    failed = _run(tmp_path, "b-failed", "--method", "hybrid", "--steps", "3",
                  "--set", "sampling.interior=8")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    diverged = _run(tmp_path, "c-diverged", "--optimizer", "lbfgs", "--steps", "20",
                    "--set", "optimizer.lbfgs_lr=1e12")
    assert diverged.returncode == 2 and "diverged" in diverged.stderr, diverged.stderr
    for name, sig in (("d-preempted", signal.SIGUSR1), ("e-killed", signal.SIGKILL)):
        proc = subprocess.Popen(_cmd(tmp_path, name, "--steps", "100000", "--set",
                                     "output.checkpoint_every=2", "--set", "train.log_every=1"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=mpi_env(), cwd=ROOT)
        _wait_for_rows(tmp_path / "runs" / name / "metrics.csv", 4, proc)
        os.kill(proc.pid, sig)
        proc.communicate(timeout=120)

    assert _summary(tmp_path, "a-completed")["status"] == "completed"
    s = _summary(tmp_path, "b-failed")
    assert s["status"] == "failed" and "collocation point" in s["reason"], s
    s = _summary(tmp_path, "c-diverged")
    assert s["status"] == "diverged" and "diverged" in s["reason"], s
    s = _summary(tmp_path, "d-preempted")
    assert s["status"] == "preempted" and s["checkpoint_step"] == s["steps"] >= 4, s
    s = _summary(tmp_path, "e-killed")
    assert s["status"] == "running" and s["checkpoint_step"] >= 2, s

    rep = subprocess.run([sys.executable, "-m", "parallel_ms", "report", str(tmp_path / "runs")],
                         capture_output=True, text=True, env=mpi_env(), cwd=ROOT, timeout=120)
    assert rep.returncode == 0, rep.stderr
    lines = rep.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["run", "status"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert [line.split()[0] for line in lines[1:]] == sorted(rows)   # by start time
    assert " completed " in rows["a-completed"] and " 3 " in rows["a-completed"]
    assert " failed " in rows["b-failed"] and " diverged " in rows["c-diverged"]
    assert " preempted " in rows["d-preempted"]
    assert f"not finished (running, or killed; last checkpoint at step " \
           f"{_summary(tmp_path, 'e-killed')['checkpoint_step']})" in rows["e-killed"]
    one = subprocess.run([sys.executable, "-m", "parallel_ms", "report",
                          str(tmp_path / "runs" / "e-killed")], capture_output=True, text=True,
                         env=mpi_env(), cwd=ROOT, timeout=120)
    assert one.stdout.splitlines()[0].strip().startswith("status: not finished"), one.stdout
