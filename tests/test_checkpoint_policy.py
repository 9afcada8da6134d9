"""The checkpoint policy: by steps, by wall time (the same decision on every rank), and a run
whose ranks are all killed with SIGKILL resumes from its last time-based checkpoint bitwise."""
from __future__ import annotations

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
from mpi4py import MPI

from conftest import ROOT, mpi_env
from parallel_ms import config
from parallel_ms.errors import UserError
from parallel_ms.training.checkpoint_policy import CheckpointPolicy


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_every_n_steps_at_the_end_and_on_a_stop():
    p = CheckpointPolicy(every_steps=3, minutes=0.0)
    assert [s for s in range(1, 11) if p.due(s)] == [3, 6, 9]
    assert p.due(10, final=True) and p.reason == "end of run"
    assert p.due(7, stopped=True) and p.reason == "stop requested"
    off = CheckpointPolicy(0, 0.0)
    assert not any(off.due(s) for s in range(1, 50))
    assert off.due(50, final=True)


def test_every_t_minutes_of_wall_time_since_the_last_checkpoint():
    clock = FakeClock()
    p = CheckpointPolicy(every_steps=0, minutes=1.0, clock=clock)
    clock.t += 1000.0            # time before the run starts does not count
    p.start()
    due = []
    for step in range(1, 13):
        clock.t += 25.0          # a 25 s step: 60 s have passed after steps 3, 6, 9, 12
        if p.due(step):
            due.append((step, p.reason))
    assert due == [(3, "wall time"), (6, "wall time"), (9, "wall time"), (12, "wall time")]
    # a checkpoint for another reason restarts the interval too
    p.start()
    clock.t += 50.0
    assert p.due(1, stopped=True)
    clock.t += 50.0
    assert not p.due(2)          # 50 s since the stop's checkpoint
    clock.t += 10.0
    assert p.due(3) and p.reason == "wall time"


def test_both_rules_and_the_resume_protocol():
    clock = FakeClock()
    p = CheckpointPolicy(every_steps=4, minutes=0.5, clock=clock)
    p.start()
    got = []
    for step in range(1, 9):
        clock.t += 20.0 if step < 5 else 1.0
        if p.due(step):
            got.append((step, p.reason))
    assert got == [(2, "wall time"), (4, "steps"), (8, "steps")]
    assert p.state_dict() == {}
    clock.t += 1000.0
    p.load_state_dict(p.state_dict())          # the resumed run's interval starts afresh
    assert not p.due(9)
    with pytest.raises(ValueError):
        CheckpointPolicy(-1, 0.0)


def test_the_config_key_is_a_non_negative_float():
    cfg = config.load(overrides=["output.checkpoint_minutes=0.5"])
    assert cfg.output.checkpoint_minutes == 0.5
    assert config.Config().output.checkpoint_minutes == 10.0
    with pytest.raises(UserError, match="output.checkpoint_minutes"):
        config.load(overrides=["output.checkpoint_minutes=-1"])


@pytest.mark.mpi
def test_the_decision_is_the_same_on_every_rank():
    """Every rank's clock runs at its own pace (rank r: a step takes 10 + 7 r seconds); the
    decision follows the slowest rank's elapsed time, on every rank."""
    comm = MPI.COMM_WORLD
    clock = FakeClock(1e6 * comm.rank)          # the clocks' origins differ as well
    p = CheckpointPolicy(every_steps=0, minutes=1.0, comm=comm, clock=clock)
    p.start()
    pace = 10.0 + 7.0 * comm.rank
    slowest = 10.0 + 7.0 * (comm.size - 1)
    due = []
    for step in range(1, 41):
        clock.t += pace
        due.append(p.due(step))
    everyone = comm.allgather(due)
    assert all(d == everyone[0] for d in everyone)
    expected, last = [], 0.0
    for step in range(1, 41):
        if step * slowest - last >= 60.0:
            expected.append(step)
            last = step * slowest
    assert [s for s, d in zip(range(1, 41), due) if d] == expected


# ---- a run killed with SIGKILL on every rank ---------------------------------------------

CASE = ["--case", "paper-1d-eps1_15", "--optimizer", "gauss-newton", "--dtype", "float64",
        "--set", "network.hard_bc=false",
        "--set", "sampling.interior=600", "--set", "sampling.boundary=80",
        "--set", "network.width=12", "--set", "network.features=6",
        "--set", "reference.degree=1", "--set", "train.eval_every=1000",
        "--set", "output.fields=false", "--set", "output.progress=log",
        "--set", "train.log_every=1", "--set", "output.checkpoint_every=0",
        "--set", "output.checkpoint_minutes=0.005"]       # 0.3 s: every few steps


def _cmd(tmp_path, name, steps):
    return ["mpiexec", "--oversubscribe", "-n", "2", sys.executable, "-m", "parallel_ms",
            "run", *CASE, "--steps", str(steps), "--set", f"output.root={tmp_path}",
            "--set", f"output.name={name}", "--set", f"reference.cache_dir={tmp_path}/ref"]


def _network(path):
    with h5py.File(path, "r") as f:
        g = f["replicated/network"]
        return {k: np.array(g[k]) for k in g}, int(f.attrs["step"])


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True,
                              text=True).stdout.split()
        out += [int(k) for k in kids]
        todo += [int(k) for k in kids]
    return out


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                          # a zombie is dead
        return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _last_step(metrics):
    lines = metrics.read_text().splitlines() if metrics.exists() else []
    try:
        return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0
    except ValueError:                            # a row being written
        return 0


def test_a_run_killed_on_every_rank_resumes_from_its_time_checkpoint_bitwise(tmp_path):
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(tmp_path, "killed", 400), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=mpi_env(), cwd=ROOT,
                            start_new_session=True)
    try:
        t0, checkpointed = time.time(), None
        while time.time() - t0 < 300 and proc.poll() is None:
            summary = (json.loads((run / "summary.json").read_text())
                       if (run / "summary.json").exists() else {})
            checkpointed = summary.get("checkpoint_step")
            if checkpointed and checkpointed >= 3 and _last_step(run / "metrics.csv") \
                    >= checkpointed + 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"no checkpoint before the end (checkpoint_every = 0): the "
                                 f"wall-time rule did not fire: {proc.poll()}, {checkpointed}")
        ranks = _descendants(proc.pid)
        assert len([p for p in ranks if _alive(p)]) >= 2, ranks
        for pid in ranks:                          # SIGKILL: no handler, no last checkpoint
            os.kill(pid, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        t0 = time.time()
        while any(_alive(p) for p in ranks) and time.time() - t0 < 30:
            time.sleep(0.1)
        assert not any(_alive(p) for p in ranks)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "running"         # it never learnt that it was killed
    _, stopped = _network(run / "checkpoint.h5")
    # (killed between the checkpoint's rename and summary.json's update: one step behind)
    assert summary["checkpoint_step"] <= stopped and 3 <= stopped < 400
    assert _last_step(run / "metrics.csv") >= stopped
    total = stopped + 4
    out = subprocess.run(["mpiexec", "--oversubscribe", "-n", "2", sys.executable, "-m",
                          "parallel_ms", "run", "--resume", str(run),
                          "--set", f"train.steps={total}"],
                         capture_output=True, text=True, env=mpi_env(), cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resuming {run} at step {stopped}" in out.stdout
    ref = subprocess.run(_cmd(tmp_path, "ref", total), capture_output=True, text=True,
                         env=mpi_env(), cwd=ROOT, timeout=300)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    resumed, step_resumed = _network(run / "checkpoint.h5")
    reference, step_reference = _network(tmp_path / "ref" / "checkpoint.h5")
    assert step_resumed == step_reference == total
    for k in reference:
        assert np.array_equal(resumed[k], reference[k]), k        # bitwise
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    ref_rows = list(csv.DictReader(open(tmp_path / "ref" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, total + 1))
    for column in ("loss", "residual", "boundary", "grad_norm", "damping", "rel_l2"):
        assert [r[column] for r in rows] == [r[column] for r in ref_rows], column
