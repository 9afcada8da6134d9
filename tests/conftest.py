"""Shared test helpers.

Serial session: ``python -m pytest --with-mpi`` (tests marked ``mpi`` run on one rank).
Parallel sessions: ``mpiexec -n 2 python -m pytest --with-mpi -m mpi`` (and ``-n 3``).
Tests that launch ``mpiexec`` themselves are not marked ``mpi``: they run in the serial session.
"""
from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mpi4py import MPI

# Firedrake hands sys.argv to PETSc; pytest's own options are not PETSc options.
os.environ.setdefault("FIREDRAKE_DISABLE_OPTIONS_LEFT", "1")

ROOT = Path(__file__).resolve().parents[1]


def mpi_env() -> dict[str, str]:
    """Environment for child ``mpiexec`` runs (root allowed, one OpenMP thread per rank)."""
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1")
    return env


def run_mpi(n: int, args: list[str], timeout: float = 120.0,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n n python args...``; raises ``subprocess.TimeoutExpired`` on a hang."""
    cmd = ["mpiexec", "--oversubscribe", "-n", str(n), sys.executable, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=mpi_env(), cwd=cwd or ROOT)


def bounds_inactive(s):
    """Shrink the network output (K~ -> the Voigt mean; with a hard boundary condition the
    output of the wrapped network) and widen the Reuss/Voigt bounds of a
    hybrid setup so that nothing is clipped: a point where the projection is the identity."""
    import torch
    from parallel_ms.fine.networks import CoefficientEnriched, HardBoundary
    net = s.net
    while isinstance(net, (HardBoundary, CoefficientEnriched)):   # l(x) N(x), N_0 + g N_1
        net = net.net                                             # scale N
    with torch.no_grad():
        net.output.weight.mul_(0.1)
        net.output.bias.mul_(0.1)
    up = s.objective.coupling.upscaling
    if hasattr(up, "reuss"):                 # not the GMsFEM space, which has no K~
        up.reuss, up.voigt = 0.5 * up.reuss, 2.0 * up.voigt
    return s


@pytest.fixture
def mpiexec():
    return run_mpi


def pytest_runtest_teardown(item, nextitem):
    """Collect garbage after every test on all ranks together: PETSc objects owned by
    Python are destroyed collectively, so ranks must not collect at different times."""
    gc.collect()
    MPI.COMM_WORLD.barrier()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """End the parallel program while every rank is still here (see ``parallel.finalize``)."""
    from parallel_ms import parallel
    parallel.finalize()
