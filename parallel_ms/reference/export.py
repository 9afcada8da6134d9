"""Reference solutions as plain HDF5 for any h5py user (``reference --out FILE.h5``).

Layout (one row per mesh vertex; row order depends on the mesh distribution, so pair rows
through ``coordinates``):

    /coordinates   float64 (N, d)  vertex coordinates
    /u             float64 (N,)    u_h^eps at the vertices (lifted: zero on the boundary)
    /w             float64 (N,)    w = u + x_1 (temperature-drop solution of (4.6))
    /u2            float64 (N,)    x_2 temperature drop, lifted (only with --tensor)
    attributes     case, eps, degree, resolution, k11, solve_time_s, ranks,
                   K_tilde (2x2, only with --tensor), K_blocks (nb1 x nb2 x 2 x 2, with --blocks)

Written collectively with parallel HDF5: every rank writes the vertices it owns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np

from parallel_ms.coarse.mesh import vertex_coordinates
from parallel_ms.io.hdf5 import create_parallel, write_rows
from parallel_ms.reference.solver import Reference


def write_vertex_file(ref: Reference, path: Path,
                      extra_attrs: dict[str, Any] | None = None) -> None:
    mesh = ref.mesh
    comm = mesh.comm
    P1 = fd.FunctionSpace(mesh, "CG", 1)
    coords = vertex_coordinates(mesh)
    fields = {"u": fd.Function(P1).interpolate(ref.u).dat.data_ro}
    fields["w"] = fields["u"] + coords[:, 0]
    if len(ref.us) > 1:
        fields["u2"] = fd.Function(P1).interpolate(ref.us[1]).dat.data_ro
    if comm.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
    comm.barrier()
    with create_parallel(path, comm) as f:
        write_rows(f, "coordinates", coords, comm)
        for name, values in fields.items():
            write_rows(f, name, values, comm)
        attrs = {"case": ref.problem.name, "eps": ref.problem.eps, "degree": ref.degree,
                 "resolution": ref.resolution, "k11": ref.k11,
                 "solve_time_s": ref.solve_time, "ranks": comm.size, **(extra_attrs or {})}
        for key, val in attrs.items():
            f.attrs[key] = np.asarray(val) if isinstance(val, (list, np.ndarray)) else val
