"""What rank 0 prints while training: a progress bar on a terminal (steps/s, losses, ETA) and a
log line every ``train.log_every`` steps; only the log lines when the output is not a terminal
(batch jobs, pipes) or the job was started by mpirun (see :func:`under_launcher`). Other ranks
print nothing."""
from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

MODES = ("auto", "bar", "log")


def log_line(row: dict[str, Any]) -> str:
    parts = [f"step {row['step']:>6}", f"loss {row['loss']:.4e}", f"res {row['residual']:.3e}"]
    if "boundary" in row:
        parts.append(f"bnd {row['boundary']:.3e}")
    if "R" in row:
        parts.append(f"R {row['R']:.3e}")
    if "k11" in row:
        parts.append(f"K~ {row['k11']:.4f}" + (" (bound)" if row["bound_active"] else ""))
    if row.get("damping") is not None:                  # a Gauss-Newton step
        parts.append(f"damping {row['damping']:.1e}"
                     + (f"  CG {row['cg_iters']}" if row["cg_iters"] else ""))
    else:
        parts.append(f"lr {row['lr']:.2e}")
    if "rel_l2" in row:
        parts.append(f"rel L2 {row['rel_l2']:.3e}  rel H1 {row['rel_h1']:.3e}")
    if "estimated_rel_l2" in row:
        parts.append(f"est. L2 {row['estimated_rel_l2']:.3e}  est. H1 "
                     f"{row['estimated_rel_h1']:.3e}")
    parts.append(f"{row['wall_time']:.1f} s")
    return "  ".join(parts)


def under_launcher() -> bool:
    """Started by mpirun/mpiexec (Open MPI, MPICH/Hydra)? Open MPI gives every rank a
    pseudo-terminal even when mpirun's own output goes to a file, so a terminal test of the
    rank's stdout says nothing there; the bar then needs ``output.progress = "bar"``."""
    return any(v in os.environ for v in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE"))


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, total: int, log_every: int, mode: str, is_root: bool,
                 stream: TextIO = sys.stdout) -> None:
        self.total, self.log_every, self.stream = total, log_every, stream
        self.active = is_root
        self.bar = is_root and (mode == "bar" or (mode == "auto" and stream.isatty()
                                                  and not under_launcher()))
        self._t0: float | None = None
        self._first = 0
        self._drawn = 0.0

    def __call__(self, row: dict[str, Any]) -> None:
        if not self.active:
            return
        step, now = row["step"], time.perf_counter()
        if self._t0 is None:
            self._t0, self._first = now, step
        if step % self.log_every == 0 or step == self.total:
            self._clear()
            self.stream.write(log_line(row) + "\n")
        if self.bar and step > self._first and (now - self._drawn > 0.2 or step == self.total):
            self._draw(row, now)
        self.stream.flush()

    def _draw(self, row: dict[str, Any], now: float) -> None:
        step = row["step"]
        rate = (step - self._first) / max(now - (self._t0 or now), 1e-9)
        done = int(30 * step / max(self.total, 1))
        eta = (self.total - step) / rate if rate > 0 else 0.0
        self.stream.write(f"\r[{'#' * done}{'.' * (30 - done)}] {step}/{self.total}  "
                          f"{rate:.2f} step/s  loss {row['loss']:.3e}  res {row['residual']:.3e}"
                          f"  ETA {_duration(eta)} ")
        self._drawn = now

    def _clear(self) -> None:
        if self.bar and self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = 0.0

    def close(self) -> None:
        if self.bar and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
