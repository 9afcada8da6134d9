"""Distributed row datasets in parallel HDF5: every rank writes its own rows."""
from __future__ import annotations

import h5py
import numpy as np
from mpi4py import MPI


def write_rows(f: h5py.File, name: str, local: np.ndarray, comm: MPI.Comm) -> None:
    """Create ``name`` (collective) as the concatenation, in rank order, of every rank's rows."""
    local = np.ascontiguousarray(local)
    n_local = local.shape[0]
    offset = comm.exscan(n_local) or 0
    total = comm.allreduce(n_local)
    dset = f.create_dataset(name, (total, *local.shape[1:]), dtype=local.dtype)
    dset[offset:offset + n_local] = local
