"""HDF5 checkpoints (h5py, parallel HDF5), written atomically.

A checkpoint holds two trees of plain HDF5 groups and datasets, readable with any h5py:

    /replicated/...     state that is identical on every rank (network parameters, optimizer
                        state: Adam moments or the L-BFGS history, scheduler, loss-balancing
                        weights, best iterate, lazy-refresh state); data written by rank 0
    /rank/<r>/...       state of rank r (RNG states, its collocation points, its share of the
                        coarse states); written by rank r
    attributes          format, step, ranks, method, case

Trees are nested dicts/lists of tensors, arrays and scalars; every group and dataset carries a
``kind`` attribute so that :func:`read` rebuilds the same Python structure (tensors bitwise).
Parallel HDF5 creates datasets collectively, so the layout of every rank's tree is exchanged
first (metadata only). The file is written as ``<name>.tmp`` and renamed once every rank has
closed it: a crash while writing leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from mpi4py import MPI

from parallel_ms.errors import UserError
from parallel_ms.io.hdf5 import create_parallel

FORMAT = "parallel_ms-checkpoint-1"
Leaf = tuple[str, str, Any]  # (path, kind, numpy value or None for containers)


def _key(k: Any) -> str:
    return f"#{k}" if isinstance(k, int) else str(k)


def _unkey(k: str) -> Any:
    return int(k[1:]) if k.startswith("#") else k


def _flatten(obj: Any, path: str, out: list[Leaf]) -> None:
    if isinstance(obj, dict):
        out.append((path, "dict", None))
        for k, v in obj.items():
            _flatten(v, f"{path}/{_key(k)}", out)
    elif isinstance(obj, (list, tuple)):
        out.append((path, type(obj).__name__, None))
        for i, v in enumerate(obj):
            _flatten(v, f"{path}/{i}", out)
    elif isinstance(obj, torch.Tensor):
        out.append((path, f"tensor:{str(obj.dtype).removeprefix('torch.')}",
                    obj.detach().cpu().numpy()))
    elif isinstance(obj, np.ndarray):
        out.append((path, "ndarray", obj))
    elif obj is None:
        out.append((path, "none", np.zeros(0)))
    elif isinstance(obj, (bool, np.bool_)):
        out.append((path, "bool", np.asarray(bool(obj))))
    elif isinstance(obj, (int, np.integer)):
        out.append((path, "int", np.asarray(int(obj), dtype=np.int64)))
    elif isinstance(obj, (float, np.floating)):
        out.append((path, "float", np.asarray(float(obj))))
    elif isinstance(obj, str):
        out.append((path, "str", np.asarray(obj.encode())))
    else:
        raise TypeError(f"cannot checkpoint {type(obj).__name__} at {path}")


def _layout(leaves: list[Leaf]) -> list[tuple[str, str, tuple[int, ...] | None, str | None]]:
    return [(p, k, None if v is None else v.shape, None if v is None else v.dtype.str)
            for p, k, v in leaves]


def _create(f: h5py.File, layout: list) -> None:
    for path, kind, shape, dtype in layout:
        node = f.require_group(path) if shape is None else f.create_dataset(path, shape, dtype)
        node.attrs["kind"] = kind


def write(path: Path, replicated: dict[str, Any], per_rank: dict[str, Any],
          attrs: dict[str, Any], comm: MPI.Comm) -> None:
    """Write a checkpoint collectively (every rank calls this)."""
    rep: list[Leaf] = []
    _flatten(replicated, "/replicated", rep)
    mine: list[Leaf] = []
    _flatten(per_rank, f"/rank/{comm.rank}", mine)
    layouts = comm.allgather(_layout(mine))
    tmp = path.with_name(path.name + ".tmp")
    with create_parallel(tmp, comm) as f:
        _create(f, _layout(rep))
        for layout in layouts:
            _create(f, layout)
        for key, value in {"format": FORMAT, "ranks": comm.size, **attrs}.items():
            f.attrs[key] = value
        for p, _, v in rep if comm.rank == 0 else []:
            if v is not None and v.size:
                f[p][...] = v
        for p, _, v in mine:
            if v is not None and v.size:
                f[p][...] = v
    comm.barrier()
    if comm.rank == 0:
        os.replace(tmp, path)
    comm.barrier()


def _read_node(node: h5py.Group | h5py.Dataset) -> Any:
    kind = node.attrs["kind"]
    if kind == "dict":
        return {_unkey(k): _read_node(node[k]) for k in node}
    if kind in ("list", "tuple"):
        items = [_read_node(node[str(i)]) for i in range(len(node))]
        return items if kind == "list" else tuple(items)
    if kind == "none":
        return None
    value = node[()]
    if kind.startswith("tensor:"):
        return torch.from_numpy(np.array(value)).to(getattr(torch, kind.split(":")[1]))
    return {"ndarray": np.array, "bool": bool, "int": int, "float": float,
            "str": lambda b: bytes(b).decode()}[kind](value)


def read(path: Path, comm: MPI.Comm) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(replicated tree, this rank's tree, attributes); a one-line error for a missing,
    unreadable or incompatible checkpoint (decided collectively: no rank is left waiting)."""
    problem, result = None, None
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != FORMAT:
                problem = f"is not a parallel_ms checkpoint (format {attrs.get('format')!r})"
            elif attrs["ranks"] != comm.size:
                problem = (f"was written by {attrs['ranks']} rank(s), this job has {comm.size} "
                           f"(allowed: resume with {attrs['ranks']} rank(s))")
            else:
                result = (_read_node(f["replicated"]), _read_node(f[f"rank/{comm.rank}"]),
                          attrs)
    except FileNotFoundError:
        problem = "does not exist"
    except (OSError, KeyError, ValueError) as err:
        problem = f"cannot be read ({type(err).__name__}: {err}); it is corrupt or truncated"
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise UserError(f"checkpoint '{path}' {problems[0]}", collective=True)
    assert result is not None
    return result
