"""Parallel bootstrap: MPI, torch.distributed, devices, abort-all, reductions.

One MPI rank per device. Rank and world size come from ``MPI.COMM_WORLD`` (the communicator
Firedrake uses); torch.distributed is initialised on top of it: rank 0 opens a
``TCPStore`` on a free port and broadcasts address and port over MPI, so the same code runs
under ``mpiexec``/``mpirun``, ``srun`` and plain ``python``. Backend ``nccl`` when CUDA devices
exist, ``gloo`` otherwise; device ``cuda:local_rank % n_gpus`` where the local rank comes from a
shared-memory split of COMM_WORLD.

Everything else in parallel_ms meets the other ranks only through the helpers here
(:func:`allreduce_sum`) or through PETSc.
"""
from __future__ import annotations

import datetime
import gc
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from types import TracebackType
from typing import Callable, TypeVar

import numpy as np
from mpi4py import MPI
import torch
import torch.distributed as dist

from parallel_ms.errors import UserError

T = TypeVar("T")

#: How long torch.distributed waits for a peer before failing (instead of hanging).
STORE_TIMEOUT = datetime.timedelta(seconds=120)


@dataclass(frozen=True)
class ParallelContext:
    """Where this process sits in the parallel job."""

    comm: MPI.Comm
    rank: int
    size: int
    local_rank: int
    local_size: int
    device: torch.device
    backend: str

    @property
    def is_root(self) -> bool:
        return self.rank == 0


_context: ParallelContext | None = None


def _select_device(local_rank: int, device: str) -> torch.device:
    """``auto``: ``cuda:local_rank % n_gpus`` when CUDA devices exist, else ``cpu``."""
    if device == "auto":
        n_gpus = torch.cuda.device_count()
        return torch.device(f"cuda:{local_rank % n_gpus}") if n_gpus else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device 'cuda' requested but torch sees no CUDA device "
                            "(allowed: auto, cpu, cuda)", collective=True)
        return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    raise UserError(f"device '{device}' is unknown (allowed: auto, cpu, cuda)", collective=True)


def _store_address(comm: MPI.Comm, local_size: int) -> str:
    """Address of rank 0 as the other ranks can reach it."""
    if local_size == comm.size:
        return "127.0.0.1"
    return socket.gethostbyname(socket.gethostname())


def init(device: str = "auto") -> ParallelContext:
    """Initialise MPI and torch.distributed once; later calls return the same context."""
    global _context
    if _context is not None:
        return _context
    comm = MPI.COMM_WORLD
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
    local_rank, local_size = local.rank, local.size
    local.Free()
    dev = _select_device(local_rank, device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        if comm.rank == 0:
            host = _store_address(comm, local_size)
            store = dist.TCPStore(host, 0, comm.size, is_master=True, timeout=STORE_TIMEOUT,
                                  wait_for_workers=False)
            host, port = comm.bcast((host, store.port), root=0)
        else:
            host, port = comm.bcast(None, root=0)
            store = dist.TCPStore(host, port, comm.size, is_master=False, timeout=STORE_TIMEOUT)
        dist.init_process_group(backend, store=store, rank=comm.rank, world_size=comm.size,
                                timeout=STORE_TIMEOUT)
    _context = ParallelContext(comm, comm.rank, comm.size, local_rank, local_size, dev, backend)
    return _context


def finalize() -> None:
    """Collective end of a parallel program: every rank must call it.

    Collects garbage on all ranks together, tears down torch.distributed and finalises PETSc
    while all ranks are still present. Left to interpreter exit, one rank can reach
    ``MPI_Finalize`` while another is still in PETSc's collective garbage cleanup (a hang
    seen with Firedrake + torch.distributed under ``mpiexec -n 2``).
    """
    global _context
    gc.collect()
    MPI.COMM_WORLD.barrier()
    if dist.is_initialized():
        dist.destroy_process_group()
    _context = None
    if "petsc4py.PETSc" in sys.modules:
        from petsc4py import PETSc
        PETSc._finalize()


def slowest(comm: MPI.Comm, call: Callable[[], T]) -> tuple[T, float]:
    """``call()``'s result and its wall time on the slowest rank of ``comm`` (started
    together: a barrier first)."""
    comm.barrier()
    t0 = time.perf_counter()
    out = call()
    return out, comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)


def allreduce_sum(x: T, comm: MPI.Comm = MPI.COMM_WORLD) -> T:
    """Sum of ``x`` over the ranks of ``comm``: a float, a NumPy array or a (detached) torch
    tensor."""
    if isinstance(x, torch.Tensor):
        out = torch.from_numpy(comm.allreduce(x.detach().cpu().numpy(), op=MPI.SUM))
        return out.to(device=x.device, dtype=x.dtype)  # type: ignore[return-value]
    if isinstance(x, np.ndarray):
        out_arr = np.empty_like(x)
        comm.Allreduce(np.ascontiguousarray(x), out_arr, op=MPI.SUM)
        return out_arr  # type: ignore[return-value]
    return comm.allreduce(x, op=MPI.SUM)


def allreduce_replicated(x: torch.Tensor, comm: MPI.Comm = MPI.COMM_WORLD) -> torch.Tensor:
    """Sum over the ranks of a (detached) tensor, bitwise identical on every rank: reduced to
    rank 0, then broadcast (MPI does not promise the same bits on every rank of an
    all-reduce). Decisions taken from the result are therefore the same on every rank."""
    local = np.ascontiguousarray(x.detach().cpu().numpy())
    out = np.empty_like(local)
    comm.Reduce(local, out, op=MPI.SUM, root=0)
    comm.Bcast(out, root=0)
    return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)


def print0(*args: object, **kwargs: object) -> None:
    """``print`` on rank 0 only."""
    if MPI.COMM_WORLD.rank == 0:
        print(*args, **kwargs, flush=True)  # type: ignore[call-overload]


def _report(prefix: str, text: str) -> None:
    rank = MPI.COMM_WORLD.rank
    tag = f"[rank {rank}] " if MPI.COMM_WORLD.size > 1 else ""
    sys.stderr.write(f"{prefix}{tag}{text}\n")
    sys.stderr.flush()


def _abort_all(status: int) -> None:
    """End this process and every other rank of the job, promptly."""
    if MPI.COMM_WORLD.size > 1:
        MPI.COMM_WORLD.Abort(status)
    os._exit(status)


def _excepthook(kind: type[BaseException], value: BaseException,
                tb: TracebackType | None) -> None:
    _report("", "".join(traceback.format_exception(kind, value, tb)).rstrip())
    _abort_all(1)


def install_abort_handler() -> None:
    """An uncaught exception on any rank prints its traceback once and ends all ranks.

    Without this, one failing rank leaves the others blocked in the next collective.
    """
    sys.excepthook = _excepthook


def run_main(main: Callable[[], int | None]) -> int:
    """Run a command's main function with the error policy of parallel_ms.

    - :class:`UserError` (collective): rank 0 prints ``parallel_ms: error: ...``; status 2.
    - :class:`UserError` (one rank): that rank prints it and aborts the job with status 2.
    - any other exception: the traceback once, then every rank is aborted (status 1).
    """
    install_abort_handler()
    try:
        status = main() or 0
        finalize()
        return status
    except UserError as err:
        if err.collective:
            if MPI.COMM_WORLD.rank == 0:
                sys.stderr.write(f"parallel_ms: error: {err}\n")
            sys.stderr.flush()
            finalize()       # every rank is here: tear down together, not at interpreter exit
            return 2
        _report("parallel_ms: error: ", str(err))
        _abort_all(2)
        return 2  # not reached
    except SystemExit:
        raise
    except BaseException:
        _excepthook(*sys.exc_info())  # type: ignore[arg-type]
        return 1  # not reached
