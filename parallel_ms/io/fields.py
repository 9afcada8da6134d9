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

from pathlib import Path
from typing import Any

import firedrake as fd
import numpy as np
import torch
from firedrake.output import VTKFile

from parallel_ms.coarse.mesh import vertex_coordinates
from parallel_ms.io.hdf5 import create_parallel, write_rows


def _network_values(net: torch.nn.Module, x: np.ndarray, dtype: torch.dtype,
                    device: torch.device) -> np.ndarray:
    """v(x) (first output) without gradients."""
    with torch.no_grad():
        v = net(torch.tensor(np.array(x), dtype=dtype, device=device))
    return (v[:, 0] if v.dim() == 2 else v).double().cpu().numpy()


def _functions(V: fd.FunctionSpace, values: dict[str, np.ndarray]) -> list[fd.Function]:
    out = []
    for name, data in values.items():
        f = fd.Function(V, name=name)
        f.dat.data_wo[:] = data
        out.append(f)
    return out


def write_fields(trainer: Any, directory: Path) -> None:
    """Write the fields of the trainer's current network (collective)."""
    s, ctx = trainer.s, trainer.ctx
    ref = trainer.reference()
    comm = ref.mesh.comm
    fine_x = vertex_coordinates(ref.mesh)
    u = fd.Function(fd.FunctionSpace(ref.mesh, "CG", 1)).interpolate(ref.u).dat.data_ro
    v = _network_values(s.net, fine_x, s.objective.dtype, ctx.device)
    fine = {"u": u.copy(), "v": v, "error": np.abs(v - u)}
    groups = {"fine": (fine_x, fine)}
    if ctx.is_root:
        (directory / "fields").mkdir(parents=True, exist_ok=True)
    comm.barrier()
    VTKFile(str(directory / "fields" / "fine.pvd"), comm=comm).write(
        *_functions(fd.FunctionSpace(ref.mesh, "CG", 1), fine))
    coupling = s.objective.coupling
    if coupling is not None:
        obj = s.objective
        with torch.enable_grad():
            v_int, g, _, _, v_nodes = s.forward(obj.x_int, obj.x_bnd, obj.x_nodes)
        coupling.refresh(coupling.k_global(g))     # y_h of this network's K~
        first = lambda t: t.detach().reshape(len(t), -1)[:, 0].double().cpu().numpy()  # noqa: E731
        coarse = {"y": np.asarray(coupling.ys[0]),
                  "qv": coupling.compression.apply(first(v_int), first(v_nodes))}
        V = coupling.coarse.V
        VTKFile(str(directory / "fields" / "coarse.pvd"), comm=comm).write(
            *_functions(V, coarse))
        groups["coarse"] = (vertex_coordinates(V.mesh()), coarse)
    with create_parallel(directory / "fields.h5", comm) as f:
        for group, (x, values) in groups.items():
            write_rows(f, f"{group}/coordinates", x, comm)
            for name, data in values.items():
                write_rows(f, f"{group}/{name}", data, comm)
        f.attrs["dim"] = s.problem.dim
        f.attrs["case"] = s.problem.name
