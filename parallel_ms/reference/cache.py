"""On-disk cache of reference solutions (Firedrake ``CheckpointFile``, HDF5).

Keyed by problem (name, eps, parameters), degree, resolution and tensor flag. A checkpoint
stores the mesh with its distribution and the solution fields; it reloads on any number of
ranks (Firedrake redistributes). Files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written cache entry.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import re
from pathlib import Path

import firedrake as fd
from mpi4py import MPI

from parallel_ms.problems import Problem
from parallel_ms.reference.solver import (DEFAULT_SOLVER, MESH_NAME, Reference, cells_for,
                                          solve_reference)


def _formula_digest(problem: Problem) -> str:
    """Short hash of the source text of K_eps and q, so an edited user case is not served
    a stale cached solution under the same name."""
    try:
        text = inspect.getsource(problem.conductivity) + inspect.getsource(problem.source)
    except (OSError, TypeError):
        return "nosource"
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def cache_key(problem: Problem, degree: int, resolution: int, tensor: bool) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", problem.name)
    params = "".join(f"-{k}{v:g}" for k, v in sorted(problem.params.items()))
    return (f"{name}-eps{problem.eps:.10g}{params}-P{degree}-n{resolution}"
            f"{'-tensor' if tensor else ''}-{_formula_digest(problem)}")


def save(ref: Reference, path: Path) -> None:
    """Write ``ref`` to ``path`` atomically (collective)."""
    comm = ref.mesh.comm
    tmp = path.with_name(path.name + ".tmp")
    if comm.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
    comm.barrier()
    with fd.CheckpointFile(str(tmp), "w", comm=comm) as f:
        f.save_mesh(ref.mesh)
        for u in ref.us:
            f.save_function(u)
        f.set_attr("/", "k11", ref.k11)
        f.set_attr("/", "solve_time", ref.solve_time)
        f.set_attr("/", "degree", ref.degree)
        f.set_attr("/", "resolution", ref.resolution)
        f.set_attr("/", "n_fields", len(ref.us))
    comm.barrier()
    if comm.rank == 0:
        os.replace(tmp, path)
    comm.barrier()


def load(problem: Problem, path: Path, comm: MPI.Comm = MPI.COMM_WORLD) -> Reference:
    """Read a reference written by :func:`save` (on any number of ranks)."""
    with fd.CheckpointFile(str(path), "r", comm=comm) as f:
        mesh = f.load_mesh(MESH_NAME)
        n_fields = int(f.get_attr("/", "n_fields"))
        us = [f.load_function(mesh, f"u{i + 1}") for i in range(n_fields)]
        return Reference(problem, int(f.get_attr("/", "degree")),
                         int(f.get_attr("/", "resolution")), mesh, us,
                         float(f.get_attr("/", "k11")), float(f.get_attr("/", "solve_time")))


def load_or_solve(problem: Problem, degree: int = 1, resolution: int | None = None,
                  solver: str = DEFAULT_SOLVER, tensor: bool = False,
                  cache_dir: Path | None = None,
                  comm: MPI.Comm = MPI.COMM_WORLD) -> tuple[Reference, bool]:
    """The reference from the cache when present, else solved (and cached when ``cache_dir``
    is given). Returns (reference, loaded_from_cache)."""
    n = resolution or cells_for(problem)
    if cache_dir is None:
        return solve_reference(problem, degree, n, solver, tensor, comm), False
    path = Path(cache_dir) / f"{cache_key(problem, degree, n, tensor)}.h5"
    if path.exists():
        return load(problem, path, comm), True
    ref = solve_reference(problem, degree, n, solver, tensor, comm)
    save(ref, path)
    return ref, False
