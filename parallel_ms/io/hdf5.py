"""Parallel HDF5 files (MPI-IO) and distributed row datasets: every rank writes its own rows."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from mpi4py import MPI

from parallel_ms.errors import UserError


def create_parallel(path: Path, comm: MPI.Comm) -> h5py.File:
    """Create ``path`` for writing by every rank of ``comm`` (collective). The path is made
    absolute first (Open MPI's MPI-IO cannot open relative names that are all digits, such as
    ``0``); a file that cannot be created is a one-line error on every rank."""
    try:
        return h5py.File(Path(path).absolute(), "w", driver="mpio", comm=comm)
    except OSError as err:
        raise UserError(f"cannot write the HDF5 file '{path}' ({err}; allowed: a path in a "
                        f"writable directory)", collective=True) from None


def write_rows(f: h5py.File, name: str, local: np.ndarray, comm: MPI.Comm) -> None:
    """Create ``name`` (collective) as the concatenation, in rank order, of every rank's rows."""
    local = np.ascontiguousarray(local)
    n_local = local.shape[0]
    offset = comm.exscan(n_local) or 0
    total = comm.allreduce(n_local)
    dset = f.create_dataset(name, (total, *local.shape[1:]), dtype=local.dtype)
    dset[offset:offset + n_local] = local
