"""Helpers shared by the benchmark scripts: machine description, timing, JSON output."""
from __future__ import annotations

import functools
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch

# Firedrake hands sys.argv to PETSc: the benchmarks' own options are not PETSc options.
os.environ.setdefault("FIREDRAKE_DISABLE_OPTIONS_LEFT", "1")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}


def time_method(cls: type, name: str, totals: dict[str, float], key: str) -> None:
    """Wrap ``cls.name`` so that its wall time adds to ``totals[key]`` (seconds)."""
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    setattr(cls, name, wrapped)


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Smallest wall time of ``repeats`` calls after ``warmup`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(data, indent=2))
        print(f"wrote {path}")


def plot_errors(curves: dict[str, list[tuple[list[float], list[float]]]], title: str,
                xlabel: str, out: Path, loglog: bool) -> None:
    """Relative L2 error curves, one colour per label (several runs, e.g. seeds, per label)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    beside = len(curves) > 5                    # many labels: the legend right of the axes
    fig, ax = plt.subplots(figsize=(10.0 if beside else 6.4, 4.0))
    for i, (label, runs) in enumerate(curves.items()):
        for k, (xs, ys) in enumerate(runs):
            (ax.loglog if loglog else ax.semilogy)(xs, ys, color=f"C{i}", marker=".", alpha=0.8,
                                                  label=label if k == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("relative L2 error")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
                             if beside else {}))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


def continued(run: Path, overrides: list[str]) -> Any:
    """A trainer holding a finished run's last checkpoint (read only: the run directory is not
    written), its config.toml with ``overrides``; R ranks for a run made on R ranks (the
    checkpoint is per rank)."""
    from parallel_ms import config, parallel
    from parallel_ms.commands.run import CHECKPOINT
    from parallel_ms.io import checkpoint
    from parallel_ms.training.loop import Trainer
    cfg = config.load(run / "config.toml", overrides)
    ctx = parallel.init(cfg.parallel.device)
    trainer = Trainer(cfg, ctx)
    trainer.load_state_dict(*checkpoint.read(run / CHECKPOINT, ctx.comm)[:2])
    return trainer
