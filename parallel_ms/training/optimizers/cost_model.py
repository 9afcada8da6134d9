"""The modeled time of one Gauss-Newton step per curvature solver and per part (issue 32, item
4): the one model behind the solvers' :meth:`~.curvature.CurvatureSolver.seconds` (and so
behind ``gn_solver = "auto"``) and behind ``benchmarks/gn_scaling.py --project``.

A step on R ranks, ``rows`` residual rows per rank (N = R x rows in all), P parameters:

- ``jacobian``: the explicit Jacobian, rows P x its measured cost per row and parameter
  (:data:`NETWORK`; none for CG);
- ``gram``: the Gram matrix or kernel and the gradient, flops / the machine's product rate:
  1.125 rows P^2 (cholesky: the upper block triangle), 1.125 N^2 P / R (woodbury: the upper
  block triangle of this rank's columns' kernel), 1.125 rows P^2 (scalapack: this rank's
  share of G's lower triangle); CG: the gradient's reverse pass;
- ``reduction``: the set-up's data movement: the sums over ranks (P^2 or N^2 doubles; a sum
  is a reduce and a broadcast, :func:`.collectives.replicated_sum`: twice an all-reduce,
  alpha log2 R + beta bytes 2 (R - 1) / R), woodbury's all-to-all of J by columns,
  ScaLAPACK's sums of G's rows onto their owners (a reduce: half an all-reduce each) and
  their redistribution to the block-cyclic layout (and on a GPU the copy of the rows to the
  host);
- ``factorisation``: per solve P^3 / 3 (cholesky, on every rank), N^3 / 3 (woodbury, on every
  rank), P^3 / (3 R) and the panel broadcasts (scalapack), at the factorisation's rate;
- ``solve``: per solve the triangular solves and products with G, K or J, and their
  collectives; CG: its iterations, one J v, one J^T u and one sum of P doubles each;
- ``trials``: the loss at each trial point, one forward pass of the network (the
  linearization) and one sum.

An explicit solver solves once per trial (a rejected trial is re-solved with a larger
damping); CG solves once and backtracks. What a step repeats (:class:`Counts`) depends on the
run: projections take :data:`STEP`, a check against a measurement its own counts.

Rates: :data:`MACHINES`. ``this`` is this machine, measured: the products' and ScaLAPACK's
rates (:data:`.curvature.RATES`), the factorisations' and the network's (:data:`NETWORK`)
from the same measured step, the collectives' latency and bandwidth from
``benchmarks/gn_scaling.py --collectives``. ``cpu-cluster`` and ``gpu`` are projection targets
whose numbers are assumptions, each with its source.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from parallel_ms.config import OptimizerConfig
from parallel_ms.training.optimizers.collectives import equal_blocks
from parallel_ms.training.optimizers.curvature import RATES

#: the parts of a step, in order
PARTS = ("jacobian", "gram", "reduction", "factorisation", "solve", "trials")
#: bytes per number: the Gauss-Newton step works in float64
ITEM = 8
#: ScaLAPACK's block size: PETSc's MATSCALAPACK default (DEFAULT_BLOCKSIZE in
#: src/mat/impls/scalapack/matscalapack.c)
NB = 64


@dataclass(frozen=True)
class Timing:
    """A network pass measured on one core of this machine (one torch thread): ``seconds``
    per step for ``count`` passes over ``rows`` residual rows of a ``parameters`` network."""
    seconds: float
    rows: float
    parameters: float
    count: float = 1.0

    def flops(self) -> float:
        """Its cost per row and parameter in product-equivalent flops (at the products' rate
        RATES["torch"] measured on the same core), so that a machine's network rate scales
        it."""
        return self.seconds / self.count * RATES["torch"] / (self.rows * self.parameters)


#: the network's passes, measured by benchmarks/gn_scaling.py (docs/results.md §2.3: the
#: default run's step, hybrid paper-2d, Ms-FF 4,801 parameters, 5,997 points + 676 coarse
#: dofs = 6,673 rows, cholesky on 1 rank, EPYC, 2026-12-04): the explicit Jacobian 1.287 s;
#: the trials 0.196 s for 3 per step (its timed steps 2 and 3 took 5 and 1 trials, as in
#: metrics.csv of §2.3's loss-history run on 1 rank, the same steps of the same run). CG's
#: operator (one J v and one J^T u): 12.13 s per step for 100 at 1,017 points + 676 = 1,693
#: rows (gn_scaling.py --ranks 1 2 --solvers cholesky cg --points 1000 --steps 1 --kinds
#: strong, 2026-12-05) on this machine under load (load average ~10 on its 2 cores; the same
#: run's Jacobian took 1.9 times the time per row and parameter above): an upper bound until
#: measured on an idle machine
NETWORK = {"jacobian": Timing(1.287, 6673, 4801),
           "trial": Timing(0.196, 6673, 4801, 3),
           "product": Timing(12.13, 1693, 4801, 100)}


@dataclass(frozen=True)
class Link:
    """A collective's cost per message step: ``alpha`` seconds of latency and ``beta``
    seconds per byte (1 / bandwidth)."""
    alpha: float
    beta: float

    @classmethod
    def fit(cls, nbytes: list[float], seconds: list[float]) -> "Link":
        """The least-squares fit of seconds = alpha + beta bytes, each residual relative to its
        measured time (so that the small messages fix alpha and the large ones beta)."""
        t = np.asarray(seconds, dtype=float)
        a = np.stack([np.ones_like(t), np.asarray(nbytes, dtype=float)], 1) / t[:, None]
        (alpha, beta), *_ = np.linalg.lstsq(a, np.ones_like(t), rcond=None)
        return cls(float(alpha), float(beta))


@dataclass(frozen=True)
class Machine:
    """Per-rank rates of a machine (one rank: a core, or a GPU)."""
    gemm: float          #: flop/s of torch's matrix products
    potrf: float         #: flop/s of torch's Cholesky factorisation
    pdgemm: float        #: flop/s per rank of ScaLAPACK's level-3 PBLAS (its triangular
                         #: solves; host cores)
    pdpotrf: float       #: flop/s per rank of ScaLAPACK's Cholesky (host cores)
    network: float       #: product-equivalent flop/s of the network's passes (:class:`Timing`)
    intra: Link          #: the collectives' link between the ranks of a node
    inter: Link          #: ... between nodes
    node: int            #: ranks per node
    memory: float        #: bytes a rank may hold
    copy: float          #: seconds per byte of a local copy (a transposition, a re-layout)
    host: float = 0.0    #: seconds per byte copied between device and host (0: on the host)

    def link(self, ranks: int) -> Link:
        """The link a collective over ``ranks`` ranks is bound by (its slowest)."""
        return self.intra if ranks <= self.node else self.inter

    def allreduce(self, nbytes: float, ranks: int) -> float:
        """A ring (or Rabenseifner's) all-reduce of ``nbytes``: alpha log2 R + beta bytes
        2 (R - 1) / R."""
        if ranks == 1:
            return 0.0
        link = self.link(ranks)
        return link.alpha * math.log2(ranks) + link.beta * nbytes * 2 * (ranks - 1) / ranks

    def replicated_sum(self, nbytes: float, ranks: int) -> float:
        """:func:`.collectives.replicated_sum`: a reduce to rank 0 (reduce-scatter and gather)
        and a broadcast (scatter and all-gather), each an all-reduce's latency and volume."""
        return 2 * self.allreduce(nbytes, ranks)

    def allgather(self, nbytes: float, ranks: int) -> float:
        """An all-gather of ``nbytes`` in all: alpha log2 R + beta bytes (R - 1) / R."""
        if ranks == 1:
            return 0.0
        link = self.link(ranks)
        return link.alpha * math.log2(ranks) + link.beta * nbytes * (ranks - 1) / ranks

    def alltoall(self, nbytes: float, ranks: int) -> float:
        """A pairwise all-to-all of this rank's ``nbytes``: R - 1 messages, (R - 1) / R of the
        bytes leave the rank."""
        if ranks == 1:
            return 0.0
        link = self.link(ranks)
        return link.alpha * (ranks - 1) + link.beta * nbytes * (ranks - 1) / ranks

    def panels(self, count: float, nbytes: float, ranks: int) -> float:
        """ScaLAPACK's ``count`` panel steps on its sqrt(R) x sqrt(R) process grid: per step a
        tree broadcast of ``nbytes`` along the grid's rows and one along its columns
        (2 log2 sqrt(R) = log2 R hops)."""
        if ranks == 1:
            return 0.0
        link = self.link(ranks)
        return count * math.log2(ranks) * (link.alpha + link.beta * nbytes)

    def network_seconds(self, kind: str, rows: float, parameters: float) -> float:
        """One network pass (:data:`NETWORK`) over ``rows`` rows of ``parameters``."""
        return rows * parameters * NETWORK[kind].flops() / self.network


#: the collectives of this machine (2 ranks, shared memory; MPI_Allreduce of 8 B .. 64 MiB):
#: benchmarks/gn_scaling.py --collectives (EPYC, 2026-12-05, the machine loaded: load average
#: ~10 on 2 cores; 4 to 64 MiB took 0.9 to 2.1 GB/s)
THIS_LINK = Link(1.06e-6, 1 / 1.57e9)
#: nominal FP64 rate of an H200 on its tensor cores (NVIDIA H200 datasheet: 67 TFLOP/s)
H200_FP64 = 67e12

#: the machines a step is modeled on (per rank); ``this`` measured, the others assumed
MACHINES = {
    "this": Machine(
        gemm=RATES["torch"], pdgemm=RATES["scalapack"],
        # potrf: the cholesky and scalapack runs of NETWORK's measurement, 4.077 and 4.066 s
        # per step for 3 factorisations of P = 4,801: 3 P^3 / 3 / 4.07 s
        potrf=27e9, pdpotrf=27e9,
        network=RATES["torch"],               # NETWORK's unit: measured on this core
        # copy: J^T made contiguous (256 MB in 0.19 s) and G's rows zeroed and converted to
        # MATSCALAPACK (2 x 184 MB in 0.32 s) at P = 4,801, 6,673 rows, one core
        copy=0.8e-9,
        intra=THIS_LINK, inter=THIS_LINK, node=2,
        memory=23 * 2 ** 30 / 2),             # 23 GiB (free -g) over 2 cores
    "cpu-cluster": Machine(
        gemm=RATES["torch"], pdgemm=RATES["scalapack"], potrf=27e9, pdpotrf=27e9,
        network=RATES["torch"],               # assumed: this machine's cores
        copy=0.8e-9,
        # assumed: InfiniBand (HDR/NDR-class: ~2 us MPI latency, ~12 GB/s per rank's share)
        # for every collective (one rank per core, the cores' traffic all off-node)
        intra=Link(2e-6, 1 / 12e9), inter=Link(2e-6, 1 / 12e9), node=1,
        memory=4 * 2 ** 30),                  # assumed: 4 GiB per core (512 GiB, 128 cores)
    "gpu": Machine(
        gemm=0.5 * H200_FP64,                 # assumed: large products at 50 % of nominal
        potrf=0.3 * H200_FP64,                # assumed: cuSOLVER's potrf at 60 % of that
                                              # (the share measured here: 27 / 44 GFLOP/s)
        pdgemm=RATES["scalapack"], pdpotrf=27e9,   # ScaLAPACK runs on one host core per GPU
        network=0.1 * H200_FP64,              # assumed: the network's passes (memory-bound
                                              # jets, docs/results.md §1) at 10 % of nominal
        copy=1 / 2e12,                        # assumed: ~40 % of 4.8 TB/s HBM3e, read+write
        # assumed: NCCL over NVLink 4 within a node of 8 (~400 GB/s per direction realised
        # of 450; ~5 us a step), over InfiniBand NDR between nodes (one 400 Gb/s NIC per GPU:
        # 50 GB/s; ~10 us a step)
        intra=Link(5e-6, 1 / 400e9), inter=Link(10e-6, 1 / 50e9), node=8,
        memory=141e9,                         # H200 datasheet: 141 GB HBM3e (ScaLAPACK's
                                              # matrices are in host memory: not told apart)
        host=1 / 50e9),                       # assumed: PCIe Gen5 x16, ~50 GB/s realised
}


@dataclass(frozen=True)
class Counts:
    """What one step repeats: loss evaluations at trial points (an explicit solver solves
    once per trial) and CG's operator applications."""
    trials: float
    products: float


#: a step of a projection: the default run's first 10 steps took 17 trials (metrics.csv of
#: docs/results.md §2.3's loss-history run on 1 rank: 1, 5, 1, 1, 3, 2, 1, 1, 1, 1); CG runs
#: to its cap, optimizer.cg_max_iter = 100 (as measured with NETWORK's CG product), after the
#: Nystrom preconditioner's sketch of optimizer.nystrom_rank products
STEP = Counts(trials=1.7, products=OptimizerConfig.cg_max_iter + OptimizerConfig.nystrom_rank)

#: (P, rows per rank, R, machine, counts) -> seconds per part
Model = Callable[[float, float, int, Machine, Counts], dict[str, float]]


def _trials(p: float, rows: float, ranks: int, m: Machine, c: Counts) -> float:
    """The trial points' losses: one forward pass and one sum of a number each."""
    return c.trials * (m.network_seconds("trial", rows, p) + m.replicated_sum(ITEM, ranks))


def _cholesky(p: float, rows: float, ranks: int, m: Machine, c: Counts) -> dict[str, float]:
    return {"jacobian": m.network_seconds("jacobian", rows, p),
            "gram": (1.125 * rows * p * p + 2 * rows * p) / m.gemm,
            "reduction": m.replicated_sum(ITEM * p * p, ranks) + m.replicated_sum(ITEM * p, ranks),
            "factorisation": c.trials * p ** 3 / 3 / m.potrf,
            "solve": c.trials * 4 * p * p / m.gemm,          # two triangular solves, G x
            "trials": _trials(p, rows, ranks, m, c)}


def _woodbury(p: float, rows: float, ranks: int, m: Machine, c: Counts) -> dict[str, float]:
    n = rows * ranks
    return {"jacobian": m.network_seconds("jacobian", rows, p),
            "gram": (1.125 * n * n * p / ranks + 2 * rows * p) / m.gemm,
            "reduction": m.alltoall(ITEM * rows * p, ranks) + m.replicated_sum(ITEM * n * n, ranks)
            + m.replicated_sum(ITEM * p, ranks),
            "factorisation": c.trials * n ** 3 / 3 / m.potrf,
            # two triangular solves (2 N^2), J^T alpha and J^T (J x) (6 rows P); the gather of
            # an N-vector and two sums of P
            "solve": c.trials * ((2 * n * n + 6 * rows * p) / m.gemm + m.allgather(ITEM * n, ranks)
                                 + 2 * m.replicated_sum(ITEM * p, ranks)),
            "trials": _trials(p, rows, ranks, m, c)}


def _scalapack(p: float, rows: float, ranks: int, m: Machine, c: Counts) -> dict[str, float]:
    share = ITEM * NB * p / math.sqrt(ranks)                        # a panel's share per rank
    starts = equal_blocks(int(p), ranks)                            # G's rows per owner
    return {"jacobian": m.network_seconds("jacobian", rows, p),
            # this rank's share of G's lower triangle by torch's products (9/16 of 2 rows
            # P^2: curvature_scalapack.lower_rows) and of g
            "gram": (1.125 * rows * p * p + 2 * rows * p) / m.gemm,
            # each owner's rows summed onto it (the stored part: rows :hi of its block), its
            # rows to the host and to the block-cyclic layout (pdgemr2d), g to every rank
            "reduction": sum(m.allreduce(ITEM * hi * (hi - lo), ranks) / 2
                             for lo, hi in zip(starts, starts[1:]))
            + m.host * ITEM * p * p / ranks + m.alltoall(ITEM * p * p / ranks, ranks)
            # J transposed, G's rows zeroed and re-laid out block-cyclically
            + m.copy * ITEM * (rows * p + 2 * p * p / ranks)
            + m.replicated_sum(ITEM * p, ranks),
            "factorisation": c.trials * (p ** 3 / (3 * ranks) / m.pdpotrf
                                         + m.panels(p / NB, share, ranks)),
            # pdpotrs (2 P^2 / R) and its P / NB steps each way, x to every rank, J^T (J x)
            # (4 rows P) and its sum, the right-hand side and the step to and from the host
            "solve": c.trials * (2 * p * p / ranks / m.pdgemm
                                 + 2 * m.panels(p / NB, ITEM * NB, ranks)
                                 + m.allgather(ITEM * p, ranks) + 4 * rows * p / m.gemm
                                 + m.replicated_sum(ITEM * p, ranks) + m.host * 2 * ITEM * p),
            "trials": _trials(p, rows, ranks, m, c)}


def _cg(p: float, rows: float, ranks: int, m: Machine, c: Counts) -> dict[str, float]:
    # the gradient J^T r: one reverse pass, assumed half of the operator's pair of passes
    gradient = m.network_seconds("product", rows, p) / 2
    gradient_sum = m.replicated_sum(ITEM * p, ranks)
    return {"jacobian": 0.0, "gram": gradient, "reduction": gradient_sum, "factorisation": 0.0,
            # its iterations, and the right-hand side's gradient again
            "solve": c.products * (m.network_seconds("product", rows, p) + gradient_sum)
            + gradient + gradient_sum,
            "trials": _trials(p, rows, ranks, m, c)}


#: optimizer.gn_solver -> its step's model
MODELS: dict[str, Model] = {"cholesky": _cholesky, "woodbury": _woodbury,
                            "scalapack": _scalapack, "cg": _cg}


def step(solver: str, parameters: float, rows: float, ranks: int,
         machine: Machine = MACHINES["this"], counts: Counts = STEP) -> dict[str, float]:
    """Modeled seconds of one step of ``solver`` per part (:data:`PARTS`), on ``machine``
    (per rank; ``rows``: this rank's residual rows)."""
    return MODELS[solver](parameters, rows, ranks, machine, counts)


def step_seconds(solver: str, parameters: float, rows: float, ranks: int) -> float:
    """Modeled seconds of one step of ``solver`` on this machine (:data:`MACHINES` ``this``),
    a step repeating :data:`STEP`."""
    return sum(step(solver, parameters, rows, ranks).values())
