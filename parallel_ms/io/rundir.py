"""The run directory ``<output.root>/<output.name>/``: the resolved configuration
(``config.toml``), the metric history (``metrics.csv``, one row per step) and the summary
(``summary.json``), next to the checkpoint, plots and fields written by the run command.
Written by rank 0 only; metrics are flushed as they come, so an interrupted run keeps its
history."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, TextIO

from parallel_ms import config


class RunDirectory:
    def __init__(self, root: Path, name: str | None, cfg: config.Config, is_root: bool,
                 comm: Any) -> None:
        name = name or time.strftime(f"{cfg.train.method}-{cfg.problem.case}-%Y%m%d-%H%M%S")
        name = comm.bcast(name, root=0)  # one name on every rank, even across a second tick
        self.path = Path(root).expanduser() / name
        self.is_root = is_root
        self._csv: TextIO | None = None
        self._writer: csv.DictWriter | None = None
        if is_root:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "config.toml").write_text(config.to_toml(cfg))

    def log(self, row: dict[str, Any]) -> None:
        """Append one step to metrics.csv (columns fixed by the first row; later keys such as
        the errors appear in the columns reserved for them)."""
        if not self.is_root:
            return
        if self._writer is None:
            self._start_csv(list(row) + [k for k in ("rel_l2", "rel_h1") if k not in row])
        self._writer.writerow(row)  # type: ignore[union-attr]
        self._csv.flush()  # type: ignore[union-attr]

    def resume_metrics(self, step: int) -> None:
        """Continue metrics.csv after ``step`` (rows written after the checkpoint are dropped:
        the resumed run writes them again)."""
        if not self.is_root or not (self.path / "metrics.csv").exists():
            return
        with open(self.path / "metrics.csv", newline="") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if int(r["step"]) <= step]
        self._start_csv(fields)
        self._writer.writerows(rows)  # type: ignore[union-attr]
        self._csv.flush()  # type: ignore[union-attr]

    def _start_csv(self, fields: list[str]) -> None:
        """(Re)write metrics.csv with its header; rows follow."""
        self._csv = open(self.path / "metrics.csv", "w", newline="")
        self._writer = csv.DictWriter(self._csv, fieldnames=fields, extrasaction="ignore")
        self._writer.writeheader()

    def summary(self, data: dict[str, Any]) -> None:
        if self.is_root:
            (self.path / "summary.json").write_text(json.dumps(data, indent=2) + "\n")

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
