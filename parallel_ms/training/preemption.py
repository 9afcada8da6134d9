"""Preemption: SIGTERM or SIGUSR1 makes every rank finish its current step, write a checkpoint
and exit with status 0 (SLURM: ``#SBATCH --signal=B:USR1@120`` plus requeue; see jobs/).

A handler only records the signal; after every step the ranks agree with one tiny all-reduce
(the largest signal number seen), so a signal seen by any rank — before or during the
step — stops every rank after the same step.
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
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self) -> bool:
        """Has any rank received a preemption signal? (collective)"""
        self.signum = int(self.comm.allreduce(self.received or 0, op=MPI.MAX))
        return self.signum != 0

    @property
    def name(self) -> str:
        """The signal some rank received (after :meth:`requested` said so)."""
        return signal.Signals(self.signum).name
