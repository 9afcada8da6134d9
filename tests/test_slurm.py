"""The SLURM job scripts of jobs/ end to end against a real single-node SLURM on this machine
(scripts/slurm-local.sh: munge, slurmctld, slurmd on localhost). Skipped, with the reason,
only when the daemons cannot be started."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import ROOT, mpi_env

CONFIG = ["--set", "problem.case=paper-2d", "--set", "train.method=hybrid",
          "--set", "sampling.interior=600", "--set", "sampling.boundary=80",
          "--set", "network.width=12", "--set", "network.features=6",
          "--set", "coarse.cells=6", "--set", "coupling.delta=0.3",
          "--set", "reference.degree=1", "--set", "train.eval_every=100000",
          "--set", "output.fields=false", "--set", "train.log_every=1"]


@pytest.fixture(scope="module")
def slurm():
    started = subprocess.run([str(ROOT / "scripts/slurm-local.sh"), "start"],
                             capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.skip(f"SLURM daemons cannot start here: {started.stderr.strip()}")
    yield
    subprocess.run([str(ROOT / "scripts/slurm-local.sh"), "stop"], timeout=60)


def _sbatch(tmp_path: Path, name: str, steps: int, launcher: str, wait: bool):
    env = mpi_env()
    env.update(LAUNCHER=launcher, PARALLEL_MS_ROOT=str(ROOT), PARALLEL_MS_RUNS=str(tmp_path),
               SLURM_MPI_TYPE="pmix")
    cfg = tmp_path / "job.toml"
    cfg.write_text(f'[train]\nsteps = {steps}\n[reference]\ncache_dir = "{tmp_path}/ref"\n')
    cmd = ["sbatch", "--parsable", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=15",
           "--mem=4G",
           f"--output={tmp_path}/{name}-%j.out", *(["--wait"] if wait else []),
           str(ROOT / "jobs/slurm-cpu.sh"), str(cfg), name, *CONFIG]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=900)


def _job_output(tmp_path: Path, name: str) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob(f"{name}-*.out")))


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_cpu_job_script_runs_to_the_end(slurm, tmp_path, launcher):
    out = _sbatch(tmp_path, "job", 6, launcher, wait=True)
    log = _job_output(tmp_path, "job")
    assert out.returncode == 0, out.stderr + log
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["steps"] == 6 and summary["method"] == "hybrid"
    assert "on 2 rank(s)" in log and log.count("done: 6 steps") == 1


def test_preempted_job_checkpoints_requeues_and_resumes(slurm, tmp_path):
    """scancel --signal=USR1 --batch is what '#SBATCH --signal=B:USR1@120' does before the
    time limit: the job checkpoints, exits 0, is requeued, and the requeued job resumes."""
    out = _sbatch(tmp_path, "pre", 800, "mpirun", wait=False)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    metrics = tmp_path / "pre" / "metrics.csv"
    t0 = time.time()
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
        assert time.time() - t0 < 300, _job_output(tmp_path, "pre")
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    summary = tmp_path / "pre" / "summary.json"
    while not (summary.exists() and json.loads(summary.read_text())["status"] == "completed"):
        assert time.time() - t0 < 900, _job_output(tmp_path, "pre")
        time.sleep(1)
    log = _job_output(tmp_path, "pre")
    assert "SIGUSR1 received: stopped after step" in log, log
    assert "requeueing job" in log and "resuming" in log, log
    assert json.loads(summary.read_text())["steps"] == 800
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                         text=True).stdout.strip():
        assert time.time() - t0 < 900
        time.sleep(1)
