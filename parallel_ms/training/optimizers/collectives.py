"""The curvature solvers' communication over the ranks, on the tensors' device (issue 32, item
3): sums over ranks (bitwise equal on every rank or on one owner), the gather of an N-vector's
rows, and the regrouping of a Jacobian's rows by column blocks (all-to-all).

A tensor on a device with a torch.distributed backend (:data:`BACKENDS`: NCCL for CUDA) meets
the other ranks through torch.distributed's default process group, which
:func:`parallel_ms.parallel.init` opens over ``MPI.COMM_WORLD`` for the rank's device: it stays
on the device, with no host round trip. Any other tensor (the CPU, or a communicator other than
the process group's ranks) goes through MPI on the host, as the rest of parallel_ms does
(:func:`parallel_ms.parallel.allreduce_replicated`). On one rank nothing moves.

A sum is reduced to rank 0 and broadcast (neither MPI nor NCCL promises the same bits on every
rank of an all-reduce), so every rank takes the same decisions from it; a gather and an
all-to-all only copy, so they are bitwise exact.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from mpi4py import MPI

from parallel_ms import parallel

#: device type -> the torch.distributed backend that carries the collectives of its tensors
#: (parallel.init opens it for the rank's device); tensors elsewhere go through MPI
BACKENDS = {"cuda": "nccl"}


def _on_process_group(x: torch.Tensor, comm: MPI.Comm) -> bool:
    """Do x's collectives over ``comm`` go through torch.distributed: its default group is
    open over the same ranks in the same order (``comm`` congruent with COMM_WORLD, as
    :func:`parallel_ms.parallel.init` opens it) with the backend of x's device?"""
    return (dist.is_available() and dist.is_initialized()
            and dist.get_backend() == BACKENDS.get(x.device.type)
            and dist.get_world_size() == comm.size
            and comm.Compare(MPI.COMM_WORLD) in (MPI.IDENT, MPI.CONGRUENT))


def replicated_sum(x: torch.Tensor, comm: MPI.Comm) -> torch.Tensor:
    """The sum of the (detached) tensor x over the ranks of ``comm``, the same bits on every
    rank, on x's device and in its dtype."""
    if comm.size == 1:
        return x.detach()
    if not _on_process_group(x, comm):
        return parallel.allreduce_replicated(x, comm)
    out = x.detach().clone(memory_format=torch.contiguous_format)
    dist.reduce(out, dst=0)
    dist.broadcast(out, src=0)
    return out


def sum_to(x: torch.Tensor, root: int, comm: MPI.Comm) -> torch.Tensor:
    """The sum of the contiguous tensor x over the ranks of ``comm``, in place on rank
    ``root`` (x holds it there; elsewhere x is left undefined), on x's device."""
    if comm.size == 1:
        return x
    if _on_process_group(x, comm):
        dist.reduce(x, dst=root)
        return x
    host = x.cpu()
    buf = host.numpy()
    comm.Reduce(MPI.IN_PLACE if comm.rank == root else buf, buf if comm.rank == root else None,
                op=MPI.SUM, root=root)
    if host is not x and comm.rank == root:
        x.copy_(host)
    return x


def _displacements(counts: list[int]) -> list[int]:
    """Where each rank's block of an MPI vector collective starts."""
    return np.cumsum([0] + counts[:-1]).tolist()


def gather_rows(local: torch.Tensor, counts: list[int], comm: MPI.Comm) -> torch.Tensor:
    """Every rank's rows of an N-vector (this rank's: ``local``; ``counts``: every rank's row
    count), concatenated in rank order, on every rank."""
    if comm.size == 1:
        return local.detach()
    if _on_process_group(local, comm):
        padded = local.new_zeros(max(counts))           # all_gather takes equal sizes
        padded[:len(local)] = local.detach()
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, counts)])
    send = np.ascontiguousarray(local.detach().cpu().numpy())
    out = np.empty(sum(counts), dtype=send.dtype)
    comm.Allgatherv(send, [out, (counts, _displacements(counts))])
    return torch.from_numpy(out).to(local)


def edges(n: int, parts: int) -> list[int]:
    """Boundaries of ``parts`` nearly equal consecutive blocks of range(n)."""
    return [n * k // parts for k in range(parts + 1)]


def equal_blocks(n: int, parts: int) -> list[int]:
    """Boundaries of ``parts`` blocks of range(n) of equal size ceil(n / parts), the last ones
    no larger (PetscSplitOwnershipEqual's layout, which ScaLAPACK takes without reordering)."""
    block = -(-n // parts)
    return [min(n, k * block) for k in range(parts + 1)]


def by_columns(jac: torch.Tensor, counts: list[int], comm: MPI.Comm) -> torch.Tensor:
    """The Jacobian regrouped: every rank's rows (this rank's: ``jac``; ``counts``: every
    rank's row count) of this rank's block of parameter columns (:func:`edges`), N x P_c,
    by one all-to-all. Holds at most two more copies of ``jac``'s size (the send and
    receive buffers)."""
    if comm.size == 1:
        return jac.detach()
    cols = edges(jac.shape[1], comm.size)
    send_counts = [jac.shape[0] * (b - a) for a, b in zip(cols, cols[1:])]
    send = jac.new_empty(sum(send_counts))          # the column blocks copied in, one by one:
    for (a, b), start in zip(zip(cols, cols[1:]), _displacements(send_counts)):  # no temporary
        send[start:start + jac.shape[0] * (b - a)].view(-1, b - a).copy_(jac.detach()[:, a:b])
    width = cols[comm.rank + 1] - cols[comm.rank]
    recv_counts = [n * width for n in counts]
    if _on_process_group(jac, comm):
        recv = send.new_empty(sum(recv_counts))
        dist.all_to_all_single(recv, send, recv_counts, send_counts)
        return recv.reshape(-1, width)
    host = send.cpu().numpy()
    out = np.empty(sum(recv_counts), dtype=host.dtype)
    comm.Alltoallv([host, (send_counts, _displacements(send_counts))],
                   [out, (recv_counts, _displacements(recv_counts))])
    return torch.from_numpy(out.reshape(-1, width)).to(jac)
