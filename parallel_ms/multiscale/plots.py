"""The figure of ``python -m parallel_ms gmsfem --plot FILE``: GMsFEM's errors against its coarse
dofs (and those of the operator's bases, ``--basis-from``), with the P1 upscaled coarse
solutions as single points (PNG, matplotlib as in :mod:`parallel_ms.io.plots`)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from parallel_ms.multiscale.study import Study  # noqa: E402

#: (attribute suffix, panel title)
NORMS = (("l2", "rel. L2 error"), ("h1", "rel. H1 error"), ("energy", "rel. energy error"))


def plot_errors(study: Study, out: Path) -> Path:
    fig, axes = plt.subplots(1, len(NORMS), figsize=(4.2 * len(NORMS), 3.6))
    spectral = [row for row in study.rows if row.bases == "spectral"]
    learned = [row for row in study.rows if row.bases == "operator"]
    for ax, (norm, title) in zip(axes, NORMS):
        ax.loglog([row.dofs for row in spectral],
                  [getattr(row, f"rel_{norm}") for row in spectral], "o-", label="GMsFEM")
        if learned:
            ax.loglog([row.dofs for row in learned],
                      [getattr(row, f"rel_{norm}") for row in learned], "D",
                      label="operator bases")
        for row in study.rows:
            ax.annotate(f"L={row.basis}", (row.dofs, getattr(row, f"rel_{norm}")),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.loglog([study.p1_dofs], [getattr(study, f"p1_upscaled_rel_{norm}")], "s",
                  label="P1, K~ per square")
        ax.loglog([study.p1_dofs], [getattr(study, f"p1_scalar_rel_{norm}")], "^",
                  label="P1, scalar K~_11")
        ax.set(xlabel="coarse dofs", title=title)
        ax.grid(True, which="both", lw=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{study.case}: {study.cells} x {study.cells} coarse, "
                 f"{study.refinement} x {study.refinement} fine per coarse square", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
