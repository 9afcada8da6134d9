"""``python -m parallel_ms info``: what the parallel environment looks like, checked live.

Initialises the bootstrap, runs one torch.distributed all-reduce and compares it with the MPI
result, distributes a small DMPlex mesh with Firedrake, and prints one line per rank.
"""
from __future__ import annotations

import argparse
import socket

from parallel_ms import __version__, parallel


def environment_report(device: str = "auto") -> list[str]:
    """Lines describing the stack and every rank; the same list on every rank."""
    import firedrake as fd
    import h5py
    import mpi4py
    import petsc4py
    from mpi4py import MPI
    from petsc4py import PETSc
    import torch
    import torch.distributed as dist

    ctx = parallel.init(device)
    t = torch.tensor([float(ctx.rank + 1)], device=ctx.device)
    dist.all_reduce(t)
    mpi_sum = ctx.comm.allreduce(float(ctx.rank + 1))
    if float(t.item()) != mpi_sum:
        raise RuntimeError(f"torch.distributed all-reduce gave {t.item()}, MPI gave {mpi_sum}")
    mesh = fd.UnitSquareMesh(16, 16, comm=ctx.comm)
    n_cells = mesh.cell_set.size
    me = (f"rank {ctx.rank}/{ctx.size} on {socket.gethostname()}: local rank "
          f"{ctx.local_rank}/{ctx.local_size}, device {ctx.device}, {n_cells} of 512 mesh cells")
    ranks = ctx.comm.allgather(me)
    v = PETSc.Sys.getVersion()
    return [
        f"parallel_ms {__version__}",
        f"PETSc {v[0]}.{v[1]}.{v[2]} (petsc4py {petsc4py.__version__}), "
        f"firedrake {_version('firedrake')}",
        f"MPI: {MPI.Get_library_version().splitlines()[0].strip()} (mpi4py {mpi4py.__version__})",
        f"torch {torch.__version__}, torch.distributed backend {ctx.backend}, "
        f"CUDA devices: {torch.cuda.device_count()}",
        f"h5py {h5py.__version__} (MPI: {h5py.get_config().mpi})",
        f"torch.distributed all-reduce of 1..{ctx.size} = {t.item():g} (MPI: {mpi_sum:g})",
        *ranks,
    ]


def _version(dist_name: str) -> str:
    from importlib.metadata import version
    return version(dist_name)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="check and describe the parallel environment "
                                    "(MPI, PETSc, Firedrake, torch.distributed, devices)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto (default), cpu or cuda")


def main(args: argparse.Namespace) -> int:
    for line in environment_report(getattr(args, "device", "auto")):
        parallel.print0(line)
    return 0
