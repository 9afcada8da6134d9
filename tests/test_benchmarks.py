"""The reproduction driver (benchmarks/reproduce.py) end to end at its quick scale: runs, the
table in the paper's format, JSON, figure, and reuse of finished runs. (The benchmark scripts
measure time; none of that is asserted here.)"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _reproduce(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/reproduce.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_reproduce_tabulates_runs_and_reuses_them(tmp_path):
    args = ("1d-eps1_15", "--scale", "quick", "--seeds", "0", "--jobs", "1",
            "--root", str(tmp_path), "--json", str(tmp_path / "r.json"))
    first = _reproduce(*args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("[start]") == 2
    assert "| hybrid |" in first.stdout and "| Ms-PINN |" in first.stdout
    rows = json.loads((tmp_path / "r.json").read_text())["tables"]["1d-eps1_15"]["rows"]
    for runs in rows.values():
        assert runs[0]["steps"] == 60 and math.isfinite(runs[0]["rel_l2"])
        assert Path(runs[0]["path"], "summary.json").is_file()
    assert rows["hybrid"][0]["method"] == "hybrid" and rows["Ms-PINN"][0]["method"] == "pinn"
    assert (tmp_path / "quick" / "1d-eps1_15.png").stat().st_size > 0
    again = _reproduce(*args)
    assert again.returncode == 0 and "[start]" not in again.stdout
    assert again.stdout.count("[cached]") == 2
    # time to accuracy of the same finished runs
    paths = {row: runs[0]["path"] for row, runs in rows.items()}
    tta = subprocess.run(
        [sys.executable, "benchmarks/time_to_accuracy.py",
         *[f"{row}={path}" for row, path in paths.items()], "--targets", "1e9", "0",
         "--out", str(tmp_path / "tta.png"), "--json", str(tmp_path / "tta.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert tta.returncode == 0, tta.stdout + tta.stderr
    out = json.loads((tmp_path / "tta.json").read_text())["runs"]
    assert [r["label"] for r in out] == list(paths)
    for r in out:      # every error is <= 1e9 (reached at the first evaluation), none is <= 0
        assert r["time_to"] == {"1000000000.0": r["train_time"][0], "0.0": None}
        assert r["steps"][-1] == 60 and r["ranks"] == 1
    assert "| hybrid | 1 | 60 |" in tta.stdout and (tmp_path / "tta.png").stat().st_size > 0


def test_reproduce_unknown_table_is_one_line():
    out = _reproduce("table-9")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        "unknown table 'table-9' (allowed: 1d-eps0_01, 1d-eps1_15, 2d, beyond-1d, beyond-2d, "
        "tta-1d-eps1_15, tta-1d-eps0_01)")
