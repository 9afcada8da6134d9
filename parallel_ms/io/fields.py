"""Fields of a finished run, for ParaView and for the plots (paper 000 Figs. 1-3).

    fields/fine.pvd     on the reference mesh (P1): u_h (reference), v (network, best iterate),
                        error = |v - u_h|
    fields/coarse.pvd   on the coarse mesh (hybrid): y_h (coarse state), Qv (compression)
    fields.h5           the same values at the vertices (rows of every rank; pair them through
                        ``coordinates``): /fine/{coordinates,u,v,error},
                        /coarse/{coordinates,y,qv}

Written collectively (Firedrake's VTKFile writes one .vtu per rank and a .pvtu; h5py in
parallel mode); nothing is gathered on one rank.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
from firedrake.output import VTKFile

from parallel_ms.io.hdf5 import create_parallel, write_rows


def _functions(V: fd.FunctionSpace, values: Mapping[str, np.ndarray]) -> list[fd.Function]:
    out = []
    for name, data in values.items():
        f = fd.Function(V, name=name)
        f.dat.data_wo[:] = data
        out.append(f)
    return out


def write_fields(directory: Path,
                 groups: Mapping[str, tuple[fd.FunctionSpace, np.ndarray,
                                            Mapping[str, np.ndarray]]],
                 attrs: Mapping[str, Any]) -> None:
    """Write ``fields/<group>.pvd`` and the groups of ``fields.h5`` (collective).

    ``groups`` maps a group name (``fine``, ``coarse``) to the P1 space whose owned dofs the
    rows are, their coordinates (n, dim) and the named values (n,) of this rank, as
    :func:`parallel_ms.training.fields.field_arrays` returns them; ``attrs`` (``dim``,
    ``case``) become attributes of ``fields.h5``."""
    comm = next(iter(groups.values()))[0].mesh().comm
    if comm.rank == 0:
        (directory / "fields").mkdir(parents=True, exist_ok=True)
    comm.barrier()
    for group, (V, _, values) in groups.items():
        VTKFile(str(directory / "fields" / f"{group}.pvd"), comm=comm).write(
            *_functions(V, values))
    with create_parallel(directory / "fields.h5", comm) as f:
        for group, (_, x, values) in groups.items():
            write_rows(f, f"{group}/coordinates", x, comm)
            for name, data in values.items():
                write_rows(f, f"{group}/{name}", data, comm)
        for key, value in attrs.items():
            f.attrs[key] = value
