"""Preemption: SIGTERM or SIGUSR1 makes every rank finish its current step, write a checkpoint
and exit with status 0 (SLURM: ``#SBATCH --signal=B:USR1@120`` plus requeue; see jobs/).

A handler only records the signal; after every step the ranks agree with one tiny all-reduce
(the largest signal number seen), so a signal seen by any rank — before or during the
step — stops every rank after the same step.

The signals are also blocked in the main thread while training runs, and a blocked signal
that is pending counts as received. The block is what protects a rank's child processes:
mpiexec forwards SIGUSR1 to each rank's whole process group and SLURM signals every process of
the step, so a C compiler that PyOP2 is running for a kernel compiled mid-run (the error
estimate's, the first time it is evaluated) would die of the signal and fail the run. Children
inherit the blocked mask and finish; the rank acts on the signal after its step.
"""
from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from mpi4py import MPI

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preemption:
    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm
        self.received: int | None = None
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> "Preemption":
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        return self

    def __exit__(self, *exc: object) -> None:
        # unblock first: a signal still pending reaches this handler, not the previous one
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _seen(self) -> int:
        """The signal this rank has received, or 0: one its handler ran for (delivered to
        another thread, or before the block), else one pending under the block."""
        if self.received:
            return self.received
        return max((int(s) for s in signal.sigpending() if s in SIGNALS), default=0)

    def requested(self) -> bool:
        """Has any rank received a preemption signal? (collective)"""
        self.signum = int(self.comm.allreduce(self._seen(), op=MPI.MAX))
        return self.signum != 0

    @property
    def name(self) -> str:
        """The signal some rank received (after :meth:`requested` said so)."""
        return signal.Signals(self.signum).name
