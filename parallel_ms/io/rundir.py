"""The run directory ``<output.root>/<output.name>/``: the resolved configuration
(``config.toml``), the metric history (``metrics.csv``, one row per step) and the summary
(``summary.json``), next to the checkpoint, plots and fields written by the run command.
Written by rank 0 only; metrics are flushed as they come, so an interrupted run keeps its
history.

``summary.json`` says how the run ended: its ``status`` is ``running`` from the start (with
the step of the last checkpoint), then ``completed``, ``failed`` (with the one-line
``reason``), ``diverged`` or ``preempted``. Each update replaces the file atomically, so a
run killed at any moment (SIGKILL, node failure) still reads as ``running`` with its last
checkpoint step."""
from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from parallel_ms import config
from parallel_ms.errors import UserError


#: the values of summary.json's ``status``
STATUSES = ("running", "completed", "failed", "diverged", "preempted")
SUMMARY = "summary.json"


def read_summary(path: Path) -> dict[str, Any] | None:
    """A run directory's summary.json, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(path) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def _unwritable(root: Path) -> str | None:
    """Why no run directory can be written under ``root`` (None if one can): tried by creating
    ``root`` and a temporary file in it."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"cannot be created: {err.strerror or err}"
    try:
        with tempfile.TemporaryFile(dir=root):
            return None
    except OSError as err:
        return f"is not writable: {err.strerror or err}"


def check_root(root: str, comm: Any) -> None:
    """Refuse, with one line on every rank, an ``output.root`` where no run directory can be
    written (rank 0 tries; collective), before anything is computed."""
    why = comm.bcast(_unwritable(Path(root).expanduser()) if comm.rank == 0 else None, root=0)
    if why is not None:
        raise UserError(f"output.root = '{root}' {why} (allowed: a directory you can create "
                        f"and write)", collective=True)


class RunDirectory:
    def __init__(self, root: Path, name: str | None, cfg: config.Config, is_root: bool,
                 comm: Any) -> None:
        name = name or time.strftime(f"{cfg.train.method}-{cfg.problem.case}-%Y%m%d-%H%M%S")
        #: the columns of metrics.csv filled at evaluation steps only
        self._evaluated = ("rel_l2", "rel_h1", "best_rel_l2", "best_rel_h1") + (
            ("estimated_rel_l2", "estimated_rel_h1") if cfg.estimate.enabled else ())
        name = comm.bcast(name, root=0)  # one name on every rank, even across a second tick
        self.path = Path(root).expanduser() / name
        self.is_root = is_root
        self._csv: TextIO | None = None
        self._writer: csv.DictWriter | None = None
        self._summary: dict[str, Any] = {}
        if is_root:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "config.toml").write_text(config.to_toml(cfg))
            previous = read_summary(self.path) or {}   # a resumed run keeps its start time
            now = time.time()
            self._summary = {
                "status": "running", "reason": None,
                "started": previous.get("started",
                                        time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))),
                "start_time": previous.get("start_time", now),
                "method": cfg.train.method, "case": cfg.problem.case,
                "ranks": comm.size, "steps_planned": cfg.train.steps,
                "checkpoint_step": previous.get("checkpoint_step")}
            self._write_summary()

    def log(self, row: dict[str, Any]) -> None:
        """Append one step to metrics.csv (columns fixed by the first row; the errors appear in
        the columns reserved for them; a key the header lacks, as after a resume with a new
        setting, adds its column)."""
        if not self.is_root:
            return
        if self._writer is None:
            self._start_csv(list(row) + [k for k in self._evaluated if k not in row])
        new = [k for k in row if k not in self._writer.fieldnames]  # type: ignore[union-attr]
        if new:                      # e.g. a run resumed with sampling.validation set
            self._rewrite(new)
        self._writer.writerow(row)  # type: ignore[union-attr]
        self._csv.flush()  # type: ignore[union-attr]

    def resume_metrics(self, step: int) -> None:
        """Continue metrics.csv after ``step`` (rows written after the checkpoint are dropped:
        the resumed run writes them again)."""
        if self.is_root and (self.path / "metrics.csv").exists():
            self._rewrite([], step)

    def _rewrite(self, new: list[str], last: int | None = None) -> None:
        """Rewrite metrics.csv with the columns ``new`` added, keeping its rows up to step
        ``last`` (all if None)."""
        if self._csv is not None:
            self._csv.close()
        with open(self.path / "metrics.csv", newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if last is None or int(r["step"]) <= last]
        self._start_csv(fields + new)
        self._writer.writerows(rows)  # type: ignore[union-attr]
        self._csv.flush()  # type: ignore[union-attr]

    def _start_csv(self, fields: list[str]) -> None:
        """(Re)write metrics.csv with its header; rows follow."""
        self._csv = open(self.path / "metrics.csv", "w", newline="")
        self._writer = csv.DictWriter(self._csv, fieldnames=fields, extrasaction="ignore")
        self._writer.writeheader()

    def update(self, status: str | None = None, **data: Any) -> None:
        """Merge ``data`` into summary.json (and set its status), atomically. Rank 0 writes;
        ``status='failed'`` is written by any rank that has the reason (a failure on one rank
        alone aborts the job before rank 0 could hear of it)."""
        if status is not None:
            assert status in STATUSES, status
        if not self.is_root and status != "failed":
            return
        if not self._summary:  # another rank's failure: start from what rank 0 wrote
            self._summary = read_summary(self.path) or {}
        self._summary.update(data, **({} if status is None else {"status": status}))
        self._write_summary()

    def _write_summary(self) -> None:
        tmp = self.path / f".{SUMMARY}.{os.getpid()}"
        tmp.write_text(json.dumps(self._summary, indent=2) + "\n")
        os.replace(tmp, self.path / SUMMARY)

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
