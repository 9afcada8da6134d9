"""The fields of a trained network as arrays, for :func:`parallel_ms.io.fields.write_fields`
(paper 000 Figs. 1-3): the network v and the reference u_h at the P1 dofs (vertices) of the
reference mesh, and for the hybrid method the coarse state y_h and the compression Q v at the
coarse vertices. Each rank evaluates the rows it owns; nothing is gathered."""
from __future__ import annotations

from typing import Any

import firedrake as fd
import numpy as np
import torch

from parallel_ms.coarse.mesh import vertex_coordinates
from parallel_ms.coupling.coupling import Coupling
from parallel_ms.fine.model import PINNForward
from parallel_ms.training.objective import PINNObjective

#: one group of fields: the P1 space whose owned dofs the rows are, the dofs' coordinates
#: (n, dim) and the named values (n,)
FieldGroup = tuple[fd.FunctionSpace, np.ndarray, dict[str, np.ndarray]]


def network_values(net: torch.nn.Module, x: np.ndarray, dtype: torch.dtype,
                   device: torch.device) -> np.ndarray:
    """v(x) (first output) without gradients."""
    with torch.no_grad():
        v = net(torch.tensor(np.array(x), dtype=dtype, device=device))
    return (v[:, 0] if v.dim() == 2 else v).double().cpu().numpy()


def field_arrays(net: torch.nn.Module, forward: PINNForward, objective: PINNObjective,
                 coupling: Coupling | None, reference: Any,
                 correction: fd.Function | None = None) -> dict[str, FieldGroup]:
    """The groups ``fine`` (u = u_h interpolated into P1, v, error = |v - u_h|; with the
    error estimate's ``correction`` e_h also e_h and the corrected answer v + e_h) and, with a
    coupling, ``coarse`` (y = y_h, qv = Q v) of the current network (collective).

    The coarse state is refreshed for this network's K~ (paper (4.10)) first, so y_h is the
    state that belongs to the network written (the coupling keeps that state afterwards)."""
    V = fd.FunctionSpace(reference.mesh, "CG", 1)
    fine_x = vertex_coordinates(reference.mesh)
    u = fd.Function(V).interpolate(reference.u).dat.data_ro
    v = network_values(net, fine_x, objective.dtype, objective.device)
    fine = {"u": u.copy(), "v": v, "error": np.abs(v - u)}
    if correction is not None:          # e_h lives on the estimate's mesh
        e_h = fd.assemble(fd.interpolate(correction, V)).dat.data_ro.copy()
        fine.update(e_h=e_h, corrected=v + e_h)
    groups: dict[str, FieldGroup] = {"fine": (V, fine_x, fine)}
    if coupling is not None:
        obj = objective
        with torch.enable_grad():
            v_int, g, _, _, v_nodes = forward(obj.x_int, obj.x_bnd, obj.x_nodes)
        coupling.refresh(coupling.k_global(g))     # y_h of this network's K~
        first = lambda t: t.detach().reshape(len(t), -1)[:, 0].double().cpu().numpy()  # noqa: E731
        coarse = {"y": np.array(coupling.ys[0]),
                  "qv": coupling.compression.apply(first(v_int), first(v_nodes))}
        Vc = coupling.coarse.V
        groups["coarse"] = (Vc, vertex_coordinates(Vc.mesh()), coarse)
    return groups
