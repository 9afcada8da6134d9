"""Data-parallel training of the subspace neural operator (:mod:`.operator`) on the patch
samples of :mod:`.patches`.

Every rank holds the samples it generated (sample i on rank i % size,
:func:`~parallel_ms.multiscale.patches.sample_shard`) and a DistributedDataParallel replica
(torch.distributed as set up by :func:`parallel_ms.parallel.init`: gloo on CPUs, NCCL with one
GPU per rank, the same code). A step draws one global batch of sample numbers from a generator
seeded alike on every rank; each rank evaluates the samples of the batch it holds, its loss is
its sum of L_SAL over them times (ranks / global batch), so that DDP's average of the gradients
is the gradient of the batch mean of L_SAL: the n-rank step equals the 1-rank step on the same
global batch, up to rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from mpi4py import MPI
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from parallel_ms import parallel
from parallel_ms.multiscale.operator import principal_angles, subspace_loss
from parallel_ms.parallel import ParallelContext

if TYPE_CHECKING:       # patches needs Firedrake; training needs only torch (a GPU node)
    from parallel_ms.multiscale.patches import PatchData


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1000
    batch: int = 64             #: global batch (samples per step over all ranks)
    lr: float = 3e-3            #: Adam's initial rate, cosine-annealed to 0 over ``steps``
    seed: int = 0               #: the batches' order
    log_every: int = 0          #: print the batch loss every so many steps (0: never)


def _batches(total: int, batch: int, seed: int) -> Any:
    """Global batches of sample numbers, epoch after epoch (a new permutation per epoch, the
    same on every rank; the last incomplete batch of an epoch is dropped)."""
    if not 0 < batch <= total:
        raise ValueError(f"batch = {batch} (allowed: 1 ... {total} samples)")
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(total, generator=generator)
        yield from order[:total - total % batch].split(batch)


def _positions(data: PatchData, total: int) -> torch.Tensor:
    """Row of each sample number in this rank's data, -1 where another rank holds it."""
    rows = torch.full((total,), -1, dtype=torch.int64)
    rows[data.index] = torch.arange(len(data))
    return rows


def train(model: nn.Module, data: PatchData, total: int, settings: TrainSettings,
          ctx: ParallelContext) -> list[dict[str, float]]:
    """Train ``model`` (on ``ctx.device``, in the dtype of its parameters) on the ``total``
    samples spread over the ranks of ``ctx`` (``data``: this rank's); the global batch loss
    per step."""
    dtype = next(model.parameters()).dtype
    model.to(ctx.device)
    data = data.to(ctx.device, dtype)
    replica = model if ctx.size == 1 else DDP(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    rows = _positions(data, total).to(ctx.device)
    history = []
    for step, batch in zip(range(1, settings.steps + 1),
                           _batches(total, settings.batch, settings.seed)):
        mine = rows[batch.to(ctx.device)]
        mine = mine[mine >= 0]
        optimizer.zero_grad(set_to_none=True)
        losses = subspace_loss(replica(data.log_k[mine]), data.basis[mine], data.mask)
        (losses.sum() * (ctx.size / settings.batch)).backward()
        optimizer.step()
        schedule.step()
        loss = float(parallel.allreduce_sum(float(losses.detach().sum()), ctx.comm))
        history.append({"step": step, "loss": loss / settings.batch})
        if settings.log_every and step % settings.log_every == 0:
            if ctx.is_root:
                print(f"step {step:5d}  L_SAL {loss / settings.batch:.4e}", flush=True)
    return history


@torch.no_grad()
def evaluate(model: nn.Module, data: PatchData, ctx: ParallelContext) -> dict[str, Any]:
    """Over the samples of all ranks: the mean L_SAL, and the mean and largest principal
    angle (degrees) per index i = 1 ... L."""
    dtype = next(model.parameters()).dtype
    data = data.to(ctx.device, dtype)
    predicted = model(data.log_k)
    loss = subspace_loss(predicted, data.basis, data.mask).sum()
    angles = torch.rad2deg(principal_angles(predicted, data.basis, data.mask))
    count = parallel.allreduce_sum(float(len(data)), ctx.comm)
    sums = parallel.allreduce_sum(np.array([float(loss), *angles.sum(0).tolist()]), ctx.comm)
    largest = np.zeros(angles.shape[1])
    ctx.comm.Allreduce(angles.amax(0).cpu().double().numpy() if len(data) else largest.copy(),
                       largest, op=MPI.MAX)
    return {"samples": int(count), "loss": float(sums[0] / count),
            "angle_mean_deg": (sums[1:] / count).tolist(), "angle_max_deg": largest.tolist()}
