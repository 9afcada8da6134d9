"""When to write a checkpoint: every N steps, every T minutes of training wall time, and
always at the end of the run or when a stop (preemption) is requested.

The step rule (``output.checkpoint_every``) was sized for Adam's many cheap steps; a
Gauss-Newton run takes tens to hundreds of steps of seconds to a minute each, so the wall-time
rule (``output.checkpoint_minutes``) is what bounds the work lost to a SIGKILL, an OOM kill or
a node failure.

Every rank must take the same decision (the checkpoint is written collectively), but wall
clocks differ per rank: the elapsed time is all-reduced (its maximum over the ranks) once per
step, one tiny collective, and every rank compares that same number with the same threshold.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from mpi4py import MPI


class CheckpointPolicy:
    """Decides after each step whether to checkpoint (the same answer on every rank).

    ``every_steps``: a checkpoint at every step divisible by it (0: off). ``minutes``: a
    checkpoint as soon as that much wall time has passed since the last checkpoint or since
    :meth:`start` (0: off); the time spent writing a checkpoint counts towards the next
    interval. ``comm``: the communicator of the ranks that decide together (``None``: one
    process). ``clock``: seconds, monotonic (a fake one in tests).

    The policy holds no state a bitwise resume needs: the step rule depends on the step alone,
    and the wall-time interval restarts with the resumed run (:meth:`start`).
    """

    def __init__(self, every_steps: int = 0, minutes: float = 0.0,
                 comm: MPI.Comm | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if every_steps < 0 or minutes < 0:
            raise ValueError(f"every_steps ({every_steps}) and minutes ({minutes}) must be "
                             f">= 0")
        self.every_steps = int(every_steps)
        self.seconds = 60.0 * float(minutes)
        self.comm = comm
        self.clock = clock
        self._t0 = clock()
        self._last = 0.0          #: elapsed seconds (max over ranks) at the last checkpoint
        self.reason: str | None = None   #: why the last :meth:`due` said yes

    def start(self) -> None:
        """Start the wall-time interval (at the start of :meth:`Trainer.run`, also after a
        resume)."""
        self._t0, self._last = self.clock(), 0.0

    def elapsed(self) -> float:
        """Seconds since :meth:`start`, the maximum over the ranks (collective when the
        wall-time rule is on and there is more than one rank)."""
        local = self.clock() - self._t0
        if self.comm is None or self.comm.size == 1:
            return local
        return float(self.comm.allreduce(local, op=MPI.MAX))

    def due(self, step: int, final: bool = False, stopped: bool = False) -> bool:
        """Checkpoint after ``step``? Yes at the ``final`` step, when ``stopped``, at every
        ``every_steps``-th step and when ``minutes`` have passed since the last checkpoint.
        Call it after every step on every rank (collective when the wall-time rule is on);
        a yes restarts the wall-time interval, so call it only when the answer is acted on."""
        self.reason = ("stop requested" if stopped else "end of run" if final
                       else "steps" if self.every_steps and step % self.every_steps == 0
                       else None)
        if self.seconds:
            now = self.elapsed()   # every rank, every step: the collective is never skipped
            if self.reason is None and now - self._last >= self.seconds:
                self.reason = "wall time"
            if self.reason is not None:
                self._last = now
        return self.reason is not None

    def state_dict(self) -> dict[str, Any]:
        """Nothing to restore (see the class docstring); for the policies' common protocol."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restart the wall-time interval (the resumed run's clock is a new one)."""
        self.start()
