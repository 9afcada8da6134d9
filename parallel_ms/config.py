"""One typed configuration for a run: the dataclasses, the tables of allowed values and the
constants that configure a run. Reading TOML files and ``--set key=value`` overrides,
validation and writing TOML live in :mod:`parallel_ms.config_io`; ``load``, ``set_value``,
``validate`` and ``to_toml`` are re-exported here (``config.load(...)``)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from parallel_ms.training.optimizers.registry import AUTO, CURVATURE_SOLVERS, OPTIMIZERS


@dataclass
class ProblemConfig:
    case: str = "paper-2d"          #: built-in case name or FILE.py:NAME
    eps: float | None = None        #: override the case's eps
    contrast: float | None = None   #: override the case's contrast (high-contrast, channels,
                                    #: random-inclusions; docs/cases.md)
    width: float | None = None      #: ... its interfaces' smoothing width (the same cases)
    seed: int | None = None         #: ... its random medium's draw (random-inclusions)

    def build(self) -> Any:
        """The case's :class:`~parallel_ms.problems.Problem` with these parameter overrides
        (None keeps the case's value)."""
        from parallel_ms.problems import get_case
        return get_case(self.case, eps=self.eps, contrast=self.contrast, width=self.width,
                        seed=self.seed)


@dataclass
class NetworkConfig:
    kind: str = "msff"              #: msff (multiscale Fourier features) | mlp | two-scale
                                    #: (N_0(x) + eps N_1(x, x/eps), cases with fast waves)
    width: int = 128                #: neurons per hidden layer
    depth: int = 2                  #: hidden layers (per Fourier-feature branch for msff)
    features: int = 64              #: Fourier features m per map (Ms-FF)
    sigmas: list[float] | None = None  #: Ms-FF scales; default [1, 1/eps] (paper §4.4)
    harmonics: int = 1              #: harmonics of each fast wave of the case (two-scale)
    hard_bc: bool = False           #: v = l(x) N(x), l = prod 4 x_i (1 - x_i)
    enrich: str = "none"            #: none | coefficient (v = N_0 + g N_1, g the normalised
                                    #: log K_eps: for sharp high-contrast interfaces)
    dtype: str = "auto"             #: auto (float64 for Gauss-Newton, else float32) | float32
                                    #: | float64
    seed: int = 0                   #: initialisation seed (same on every rank)


@dataclass
class SamplingConfig:
    interior: int = 25000           #: M_Omega, global
    boundary: int = 2500            #: M_dOmega, global (2D; 1D uses the two end points)
    method: str = "uniform"         #: uniform | sobol | gauss (a composite Gauss rule with
                                    #: equal weights, for loss.form = "energy")
    seed: int = 0                   #: seed of the collocation points (same on every rank)
    adaptive_every: int = 0         #: residual-based resampling every T steps (0: off)
    adaptive_beta: float = 1.0      #: density ~ |r|^beta / mean + c
    adaptive_c: float = 1.0         #: ... the constant c of that density
    resample_every: int = 0         #: fresh uniform/Sobol interior points every T steps (0: off)
    validation: int = 0             #: interior points of a fixed set on which the best iterate
                                    #: is chosen (0: each step's own points, the paper's rule)
    layer_width: float = 0.0        #: importance sampling near the boundary: the width of the
                                    #: layer where the interior points are denser (0: off)
    layer_density: float = 1.0      #: ... how many times denser (>= 1), each point weighted by
                                    #: the inverse (the loss stays a quadrature of mean r^2)
    interior_milestones: list[int] = field(default_factory=list)  #: steps from which the
                                    #: fresh interior points (resample_every) number
                                    #: interior_counts instead of interior: few cheap steps
                                    #: early, less noise late ([]: interior throughout)
    interior_counts: list[int] = field(default_factory=list)  #: ... one per milestone

    def interior_at(self, step: int) -> int:
        """M_Omega of the fresh points of ``step``: ``interior``, from each milestone on its
        count."""
        count = self.interior
        for milestone, n in zip(self.interior_milestones, self.interior_counts):
            count = n if step >= milestone else count
        return count

    @property
    def most_interior(self) -> int:
        """The largest M_Omega of the run (what memory and the curvature solver are sized
        for)."""
        return max([self.interior, *self.interior_counts])


@dataclass
class LossConfig:
    form: str = "strong"            #: strong (the residual (4.8) at the points) | energy (the
                                    #: Ritz energy as least squares, first derivatives only:
                                    #: for sharp interfaces of K_eps; docs/usage.md)
    tau1: float = 1.0               #: boundary weight tau_1 in (3.24)
    tau_weak: float = 0.0           #: weight of the weak residual (r tested against coarse
                                    #: hat functions; 0: off; docs/gauss-newton.md)
    weak_cells: int = 10            #: ... its hat functions' cells per direction
    weak_norm: str = "l2"           #: ... l2 (the tested residual's values) | dual (weighted
                                    #: by the inverse Laplacian stiffness of the hat functions:
                                    #: a smooth error at its H^1 size; docs/gauss-newton.md)
    derivatives: str = "jet"        #: jet (fast forward path) | jet-compiled | autograd


@dataclass
class BalancingConfig:
    enabled: bool = True            #: gradient-norm global weights (paper's ref. [63])
    every: int = 100                #: steps between updates of the weights
    alpha: float = 0.9              #: moving average of the weights


@dataclass
class OptimizerConfig:
    kind: str = "adam"              #: adam | lbfgs | adam-lbfgs | gauss-newton
                                    #: | adam-gauss-newton (gn_warmup Adam steps first)
    lr: float = 5e-4                #: Adam learning rate
    decay: float = 0.75             #: lr x decay every decay_every steps (Adam)
    decay_every: int = 1000         #: steps between learning-rate decays (Adam)
    lbfgs_lr: float = 1.0           #: L-BFGS step length (with its strong Wolfe line search)
    lbfgs_history: int = 50         #: L-BFGS curvature pairs kept
    lbfgs_max_iter: int = 20        #: iterations per step (<= 25 line-search evaluations each)
    switch_window: int = 500        #: adam-lbfgs: compare mean gradient norms of two windows
    switch_tol: float = 0.05        #: ... and switch when they fall by less than this fraction
    gn_solver: str = "auto"         #: Gauss-Newton step: cholesky (explicit J^T J, summed over
                                    #: ranks, P x P on every rank) | scalapack (J^T J
                                    #: block-cyclic over the ranks, P^2 / ranks each) |
                                    #: woodbury (sample space: N x N kernel, for rows < P)
                                    #: | cg (matrix-free conjugate gradients) | auto (the
                                    #: exact solver of least modeled time that fits the
                                    #: memory, else cg; the run header says which and why)
    gn_damping: float = 1e-3        #: Gauss-Newton: initial Levenberg-Marquardt damping lambda
    gn_momentum: float = 0.0        #: Gauss-Newton momentum mu (SPRING): the step is drawn
                                    #: towards mu x the previous one (0: off; docs/gauss-newton.md)
    gn_warmup: int = 1000           #: adam-gauss-newton: Adam steps before Gauss-Newton
    cg_max_iter: int = 100          #: CG iterations per Gauss-Newton step (cap)
    cg_tol: float = 1e-4            #: ... until ||CG residual|| <= cg_tol ||J^T r||
    cg_preconditioner: str = "nystrom"  #: CG's preconditioner: nystrom (the randomized
                                    #: Nystrom approximation of J^T J, sketched every step:
                                    #: NysNewton-CG; docs/gauss-newton.md) | none
    nystrom_rank: int = 50          #: nystrom: the sketch's rank (its J and J^T products
                                    #: per step, counted in cg_iters)
    line_search: int = 10           #: Armijo backtracking halvings before a step is rejected


#: default coarse cells per direction (``coarse.cells``): the paper's h = 0.004 (1D) and
#: h ~ 0.04 (2D)
DEFAULT_COARSE_CELLS = {1: 250, 2: 25}


@dataclass
class CoarseConfig:
    cells: int | None = None        #: coarse cells per direction (default 1D: 250, 2D: 25)
    partitioner: str = "simple"     #: PETSc partitioner of the coarse DMPlex: simple (cells
                                    #: in numbering order: the same shards in every run) |
                                    #: ptscotch | parmetis (may differ from run to run)
    space: str = "p1"               #: the hybrid's coarse space: p1 (P1 with the upscaled K~
                                    #: from the network, paper 000) | gmsfem (the GMsFEM
                                    #: space of [gmsfem] with K_eps itself, no K~; 2D)


@dataclass
class CouplingConfig:
    tau2: float = 1.0               #: coupling weight tau_2 (3.1), times the balancing weight
    delta: float | None = None      #: compression radius delta (default eps, paper)
    weights: str = "uniform"        #: uniform (paper) | lumped (lumped coarse mass)
    k12: float | None = None        #: given K~_12 = K~_21 (2D; none: K~ = K~_11 I)
    k22: float | None = None        #: given K~_22 (2D; none: K~ = K~_11 I)
    refresh: str = "lazy"           #: lazy (paper) | every-step
    refresh_every: int = 100        #: T_K: recheck K~ every T_K steps (lazy)
    refresh_tol: float = 1e-2       #: ... and re-solve the state when K~ moved more than this
    continuation: float = 0.0       #: from this fraction of the steps on, tau_2 decays
                                    #: linearly to 0 at the end (0: off)
    upscaling: str = "isotropic"    #: isotropic (paper (4.10): K~_11 I, or with k12/k22)
                                    #: | block-tensor (Algorithm 4.1 per block, 2D, two-output
                                    #: network for the temperature drops w_1, w_2)
    blocks: list[int] = field(default_factory=lambda: [1, 1])  #: block-tensor: blocks per
                                    #: direction (each must divide coarse.cells)
    form: str = "compression"       #: compression (paper (3.25): Q v against the coarse
                                    #: state) | galerkin (coarse.space = gmsfem: the error's
                                    #: Galerkin projection onto V_ms from the fine residual,
                                    #: zero at the solution; coupling/galerkin.py)


@dataclass
class GmsfemConfig:
    basis: int = 4                  #: L: eigenfunctions per coarse neighbourhood, the smallest of
                                    #: its local spectral problem (GMsFEM, Efendiev, Galvis & Hou
                                    #: 2013; docs/cases.md)
    threshold: float = 0.0          #: > 0: per neighbourhood only the eigenfunctions with
                                    #: eigenvalue below it (at least 1, at most basis); 0: basis
    refinement: int = 16            #: fine cells per coarse cell and direction of the local
                                    #: problems (a power of 2 >= 2: nested meshes)
    eigensolver: str = "sparse"     #: sparse (ARPACK shift-invert) | dense (LAPACK) for the
                                    #: local spectral problems


@dataclass
class TrainConfig:
    method: str = "pinn"            #: pinn | hybrid (Algorithm 3.1)
    steps: int = 1000               #: training steps (a resumed run continues to this step)
    eval_every: int = 100           #: relative L2/H1 against the reference every N steps
    best_by: str = "estimate"       #: the best iterate (reported, written, resumed from):
                                    #: estimate (smallest estimated rel. L2 error, every
                                    #: estimate.every steps) | loss (smallest fine-problem
                                    #: loss (3.24), the paper's rule)
    log_every: int = 100            #: steps between progress lines
    ema_decay: float = 0.0          #: beta > 0: the run's answer is the exponential moving
                                    #: average of the iterates, v_k^avg = beta v_{k-1}^avg +
                                    #: (1 - beta) v_k (torch.optim.swa_utils.AveragedModel):
                                    #: its estimate, errors, best iterate and fields; the
                                    #: optimizer goes on from the iterate. 0: the iterate


@dataclass
class ReferenceConfig:
    degree: int = 2                 #: P2: its gradient error stays below the networks' H1 error
    resolution: int | None = None   #: cells per direction (default: the resolution rule)
    cache_dir: str = "~/.cache/parallel_ms/references"  #: where computed references are kept


@dataclass
class EstimateConfig:
    enabled: bool = True            #: estimate the error without the reference at every
                                    #: evaluation: the Galerkin projection e_h of the error
                                    #: (docs/usage.md); v + e_h is the corrected answer
    cells_per_period: int = 4       #: ... its mesh: cells per shortest period of K_eps
    degree: int = 2                 #: ... its P_degree elements
    every: int = 5                  #: ... every N steps (and at the last)


@dataclass
class ParallelConfig:
    device: str = "auto"            #: auto | cpu | cuda
    threads: int = 0                #: torch threads per rank (0: the node's cores divided
                                    #: by the ranks on the node)
    memory_per_rank: float = 0.0    #: GiB a rank may use (0: the node's available memory,
                                    #: cgroup or SLURM limit, shared by its ranks); the run
                                    #: refuses to start when its estimate exceeds it


@dataclass
class OutputConfig:
    root: str = "runs"              #: run directories go to <root>/<name>/
    name: str | None = None         #: default: <method>-<case>-<date>-<time>
    checkpoint_every: int = 500     #: HDF5 checkpoint every N steps (0: only at the end and
                                    #: on preemption)
    checkpoint_minutes: float = 10.0  #: also a checkpoint whenever this many minutes of
                                      #: training wall time have passed since the last one
                                      #: (0: off); bounds what a SIGKILL or node failure loses
    progress: str = "auto"          #: auto (bar on a terminal) | bar | log (lines only)
    fields: bool = True             #: write fields (ParaView, fields.h5) and plots at the end


@dataclass
class Config:
    problem: ProblemConfig = field(default_factory=ProblemConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    balancing: BalancingConfig = field(default_factory=BalancingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    coupling: CouplingConfig = field(default_factory=CouplingConfig)
    gmsfem: GmsfemConfig = field(default_factory=GmsfemConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    estimate: EstimateConfig = field(default_factory=EstimateConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def outputs(self) -> int:
        """Network outputs: 2 for the block-tensor upscaling of the hybrid method (the
        temperature drops of Algorithm 4.1), else 1."""
        return 2 if self.train.method == "hybrid" and self.coupling.upscaling == "block-tensor" \
            else 1


CHOICES: dict[str, tuple[str, ...]] = {
    "network.kind": ("msff", "mlp", "two-scale"),
    "network.enrich": ("none", "coefficient"),
    "network.dtype": ("auto", "float32", "float64"),
    "sampling.method": ("uniform", "sobol", "gauss"),
    "loss.derivatives": ("jet", "jet-compiled", "autograd"),
    "loss.weak_norm": ("l2", "dual"),
    "loss.form": ("strong", "energy"),
    "optimizer.kind": tuple(OPTIMIZERS),            # the optimizer registry's names
    "optimizer.gn_solver": (AUTO, *CURVATURE_SOLVERS),
    "optimizer.cg_preconditioner": ("none", "nystrom"),
    "train.method": ("pinn", "hybrid"),
    "train.best_by": ("estimate", "loss"),
    "coarse.partitioner": ("simple", "ptscotch", "parmetis"),
    "coarse.space": ("p1", "gmsfem"),
    "coupling.weights": ("uniform", "lumped"),
    "coupling.refresh": ("lazy", "every-step"),
    "coupling.upscaling": ("isotropic", "block-tensor"),
    "coupling.form": ("compression", "galerkin"),
    "gmsfem.eigensolver": ("sparse", "dense"),
    "parallel.device": ("auto", "cpu", "cuda"),
    "output.progress": ("auto", "bar", "log"),
}
POSITIVE = ("network.width", "network.depth", "network.features", "network.harmonics",
            "sampling.interior", "optimizer.lr", "optimizer.decay", "optimizer.decay_every",
            "optimizer.lbfgs_lr", "optimizer.lbfgs_history", "optimizer.lbfgs_max_iter",
            "optimizer.switch_window", "optimizer.gn_damping", "optimizer.cg_max_iter",
            "optimizer.cg_tol", "optimizer.nystrom_rank", "balancing.every", "train.steps",
            "train.eval_every", "train.log_every", "reference.degree", "problem.eps",
            "coarse.cells", "loss.weak_cells", "reference.resolution", "coupling.delta",
            "estimate.cells_per_period", "estimate.every",
            "coupling.refresh_every", "gmsfem.basis", "gmsfem.refinement")
NON_NEGATIVE = ("sampling.boundary", "sampling.adaptive_every", "sampling.adaptive_beta",
                "sampling.adaptive_c", "sampling.resample_every", "sampling.validation",
                "sampling.layer_width",
                "optimizer.gn_warmup", "optimizer.line_search", "loss.tau1", "loss.tau_weak",
                "optimizer.switch_tol",
                "network.seed", "sampling.seed", "problem.seed", "coupling.tau2",
                "coupling.refresh_tol",
                "output.checkpoint_every", "output.checkpoint_minutes", "parallel.threads",
                "parallel.memory_per_rank", "gmsfem.threshold")

#: fractions in [0, 1)
UNIT_INTERVAL = ("balancing.alpha", "coupling.continuation", "optimizer.gn_momentum",
                 "train.ema_decay")

#: upper limits (callables: a limit may depend on the machine)
UPPER: dict[str, Any] = {
    "optimizer.line_search": lambda: 60,        # 2^-60: a step below round-off
    "network.harmonics": lambda: 1000,
    "optimizer.lbfgs_max_iter": lambda: 10_000,
    "optimizer.cg_max_iter": lambda: 1_000_000,
    "sampling.adaptive_beta": lambda: 10.0,     # |r|^beta must stay finite
    "sampling.layer_width": lambda: 0.5,        # half the unit cube's side: all of it
    "parallel.threads": lambda: os.cpu_count() or 1,
}


#: the reading, validation and writing of a configuration (parallel_ms/config_io.py)
from parallel_ms.config_io import (INT_LIMIT, load, set_value, to_toml,  # noqa: E402,F401
                                   validate)
