"""PNG figures of a run, from the files of its run directory only (so ``report`` can redo them
anywhere): loss/error histories, and the fields as in paper 000 — 1D profiles (Figs. 1-2),
2D maps of u_h, v, |v - u_h|, y_h and Qv (Fig. 3)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: columns of metrics.csv drawn as loss terms, when present
TERMS = ("loss", "residual", "boundary", "coupling")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = list(rows[0]) if rows else []
    return {key: np.array([_float(r.get(key) or "") for r in rows]) for key in keys}


def plot_history(metrics: dict[str, np.ndarray], out: Path) -> Path:
    step = metrics["step"]
    has_k = "k11" in metrics
    fig, axes = plt.subplots(1, 3 if has_k else 2, figsize=(13 if has_k else 9, 3.6))
    for name in TERMS:
        if name in metrics:
            axes[0].semilogy(step, metrics[name], label=name, lw=1)
    axes[0].set(xlabel="step", title="loss terms")
    axes[0].legend()
    for name, label, style in (("rel_l2", "rel. L2", "o-"), ("rel_h1", "rel. H1", "o-"),
                               ("best_rel_l2", "rel. L2, best iterate so far", "s--"),
                               ("estimated_rel_l2", "estimated rel. L2", "-")):
        if name in metrics:
            ok = np.isfinite(metrics[name])
            axes[1].semilogy(step[ok], metrics[name][ok], style, ms=3, lw=1, label=label)
    axes[1].set(xlabel="step", title="error")
    axes[1].legend()
    if has_k:
        axes[2].plot(step, metrics["k11"], label="K~_11 applied")
        if "k11_raw" in metrics:
            axes[2].plot(step, metrics["k11_raw"], lw=0.7, label="K~_11 Monte Carlo")
        axes[2].set(xlabel="step", title="upscaled coefficient")
        axes[2].legend()
    fig.tight_layout()
    path = out / "history.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_fields(fields_h5: Path, out: Path) -> Path:
    with h5py.File(fields_h5, "r") as f:
        dim = int(f.attrs["dim"])
        data = {g: {k: np.array(f[g][k]) for k in f[g]} for g in f}
    fine, coarse = data["fine"], data.get("coarse")
    path = out / "fields.png"
    if dim == 1:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        order = np.argsort(fine["coordinates"][:, 0])
        x = fine["coordinates"][order, 0]
        axes[0].plot(x, fine["u"][order], "k", lw=1, label="u_h (reference)")
        axes[0].plot(x, fine["v"][order], "r--", lw=1, label="v (network)")
        if coarse is not None:
            oc = np.argsort(coarse["coordinates"][:, 0])
            xc = coarse["coordinates"][oc, 0]
            axes[0].plot(xc, coarse["y"][oc], "b", lw=1, label="y_h (coarse)")
            axes[0].plot(xc, coarse["qv"][oc], "g:", lw=1, label="Qv (compression)")
        axes[0].set(xlabel="x", title="solutions")
        axes[0].legend()
        axes[1].semilogy(x, np.maximum(fine["error"][order], 1e-16), lw=0.8)
        axes[1].set(xlabel="x", title="|v - u_h|")
    else:
        panels = [("fine", "u", "u_h (reference)"), ("fine", "v", "v (network)"),
                  ("fine", "error", "|v - u_h|")]
        if coarse is not None:
            panels += [("coarse", "y", "y_h (coarse)"), ("coarse", "qv", "Qv (compression)")]
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.3))
        for ax, (group, key, title) in zip(np.atleast_1d(axes), panels):
            xy = data[group]["coordinates"]
            im = ax.tricontourf(xy[:, 0], xy[:, 1], data[group][key], levels=40)
            fig.colorbar(im, ax=ax, shrink=0.85)
            ax.set(title=title, aspect="equal")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_plots(run_dir: Path) -> list[Path]:
    """All figures that the run directory's files allow."""
    out = []
    if (run_dir / "metrics.csv").exists():
        metrics = read_metrics(run_dir / "metrics.csv")
        if metrics:
            out.append(plot_history(metrics, run_dir))
    if (run_dir / "fields.h5").exists():
        out.append(plot_fields(run_dir / "fields.h5", run_dir))
    return out
