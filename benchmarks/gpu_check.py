"""GPU check (issue 32, item 3): the fine-scale half and the curvature solvers on one device,
with only torch, numpy and mpi4py installed (no PETSc, no Firedrake).

    .venv/bin/python benchmarks/gpu_check.py [--device cuda|cpu] [--quick] [--steps 20]
                                             [--solver auto|cholesky|woodbury|cg] [--json F]

Prints the device (name, memory); a table of step costs for the paper's network (Ms-FF,
2 x 128 tanh, 64 features per map: 33,281 parameters) and one of about 100,000 parameters
(2 x 256: 99,329) on the same points: the network's residual with its derivatives (the
forward jet and the fine residual (4.8), with its autograd graph), the explicit Jacobian of
the residual rows, and one Gauss-Newton step per curvature solver (cholesky, woodbury, cg;
a solver whose memory (its ``memory()`` model) does not fit the device is skipped and says
so); then ``--steps`` Gauss-Newton steps of a PINN with a known solution, the loss and the
relative L2 error against it on a fixed grid per step.

The case is manufactured: u = sin(pi x1) sin(pi x2), K_eps = 2 + sin(2 pi x1 / eps)
sin(2 pi x2 / eps), q = -div(K_eps grad(u + x1)) (the lifted problem (4.8) of the project's
Problem, its source written in closed form), the hard boundary condition v = l(x) N(x).
The objective is the PINN objective's residual rows sqrt(|Omega| / M) r(x_i) (the objective of
``training/objective.py`` without boundary rows, weak term or coupling; that module needs
Firedrake), on fresh uniform points every step as the default run draws them.
``--quick``: smaller networks (2 x 32 and 2 x 64, 16 features) and fewer points, for a CPU.
Default device: cuda where torch sees one, else cpu (with a note).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from mpi4py import MPI
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from common import machine, write_json
from parallel_ms import config
from parallel_ms.fine.model import PINNForward, build_network
from parallel_ms.fine.residual import residual
from parallel_ms.problems import Problem
from parallel_ms.problems.math import TORCH
from parallel_ms.resources import available_memory, size_text
from parallel_ms.training.optimizers.base import flatten, unflatten
from parallel_ms.training.optimizers.gauss_newton import GaussNewton
from parallel_ms.training.optimizers.registry import (AUTO, choose_curvature_solver,
                                                     curvature_solver)

#: the curvature solvers of the table (the ScaLAPACK solver is host only and needs PETSc)
SOLVERS = ("cholesky", "woodbury", "cg")
#: scale of the manufactured case's K_eps
EPS = 0.1


@dataclass(frozen=True)
class Scale:
    """Sizes of one run of the check."""
    networks: dict[str, tuple[int, int]]   #: label -> (width, features) of an Ms-FF 2 x width
    points: int                            #: collocation points of the table and of the run
    train: str                             #: the network (label) of the Gauss-Newton run
    grid: int                              #: evaluation grid points per direction


SCALES = {"full": Scale({"paper": (128, 64), "100k": (256, 64)}, 4096, "paper", 256),
          "quick": Scale({"2 x 32": (32, 16), "2 x 64": (64, 16)}, 800, "2 x 32", 64)}


# ---- the manufactured case ------------------------------------------------------------------
def conductivity(x: Any, m: Any) -> Any:
    return 2 + m.sin(2 * m.pi * x[0] / EPS) * m.sin(2 * m.pi * x[1] / EPS)


def solution(x: Any, m: Any) -> Any:
    return m.sin(m.pi * x[0]) * m.sin(m.pi * x[1])


def source(x: Any, m: Any) -> Any:
    """q = -div(K grad w), w = u + x1: 2 pi^2 K u - grad K . grad w."""
    a, pi = 2 * m.pi / EPS, m.pi
    k_1 = a * m.cos(a * x[0]) * m.sin(a * x[1])
    k_2 = a * m.sin(a * x[0]) * m.cos(a * x[1])
    w_1 = pi * m.cos(pi * x[0]) * m.sin(pi * x[1]) + 1
    w_2 = pi * m.sin(pi * x[0]) * m.cos(pi * x[1])
    return 2 * pi ** 2 * conductivity(x, m) * solution(x, m) - k_1 * w_1 - k_2 * w_2


PROBLEM = Problem(name="manufactured-2d", dim=2, eps=EPS, conductivity=conductivity,
                  source=source, bounds=(1.0, 3.0), period=(1.0, 1.0),
                  description="u = sin(pi x1) sin(pi x2), K = 2 + sin(2 pi x1/eps) "
                              "sin(2 pi x2/eps) (manufactured)")


def exact(x: torch.Tensor) -> torch.Tensor:
    """u at the points x (M, 2)."""
    return solution([x[:, 0], x[:, 1]], TORCH)


# ---- the objective as residual rows (the interface GaussNewton works on) ----------------------
class PINNRows:
    """The hard-BC PINN objective of ``problem`` at points as residual rows, with the members
    :class:`~parallel_ms.training.optimizers.gauss_newton.GaussNewton` reads of a
    ``training.residuals.Residuals``: sqrt(|Omega| / M) r(x_i), r the fine residual (4.8)."""

    def __init__(self, net: nn.Module, problem: Problem) -> None:
        self.forward = PINNForward(net)
        self.names = [n for n, _ in self.forward.named_parameters()]
        self.params = [p for _, p in self.forward.named_parameters()]
        self.problem = problem
        self.objective = SimpleNamespace(problem=problem, outputs=1, version=0)
        self.weights: dict[str, float] = {}

    def use(self, x: torch.Tensor) -> None:
        """Work on the points x from now on (a new objective for the optimizer)."""
        p = self.problem
        self.points = (x, p.k(x), p.grad_k(x), p.lifted_source(x))
        self.objective.version += 1

    def rows_at(self, params: tuple[torch.Tensor, ...], x: torch.Tensor, k: torch.Tensor,
                grad_k: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """The rows at the points x (with K, grad K and f there) for the parameters."""
        none = x.new_empty((0, x.shape[1]))
        _, grad, lap, _, _ = functional_call(self.forward, dict(zip(self.names, params)),
                                             (x, none, none))
        return residual(k, grad_k, f, lap, grad) / math.sqrt(len(self.points[0]))

    def linearize(self) -> "Rows":
        with torch.enable_grad():
            return Rows(self)


class Rows:
    """The rows at the current parameters and products with their Jacobian (the members
    GaussNewton and the curvature solvers use of ``training.residuals.Linearization``)."""

    def __init__(self, owner: PINNRows) -> None:
        self.owner = owner
        self.graph = owner.rows_at(tuple(owner.params), *owner.points)
        self.rows = {"residual": self.graph.detach()}

    def primals(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach() for p in self.owner.params)

    def local_terms(self) -> dict[str, float]:
        return {n: float(r @ r) for n, r in self.rows.items()}

    def jvp(self, delta: torch.Tensor) -> dict[str, torch.Tensor]:
        o = self.owner
        tangent = jvp(lambda *p: o.rows_at(p, *o.points), self.primals(),
                      unflatten(delta, o.params))[1]
        return {"residual": tangent}

    def vjp(self, u: dict[str, torch.Tensor]) -> torch.Tensor:
        return flatten(torch.autograd.grad(self.graph, self.owner.params, u["residual"],
                                           retain_graph=True, materialize_grads=True))

    def jacobian(self, chunk: int) -> torch.Tensor:
        """Rows x parameters, per point by reverse mode, ``chunk`` points per vmap."""
        o = self.owner

        def at_point(params: tuple[torch.Tensor, ...], *point: torch.Tensor) -> torch.Tensor:
            return o.rows_at(params, *(t[None] for t in point))[0]

        per_point = vmap(jacrev(at_point), in_dims=(None, 0, 0, 0, 0))
        x = o.points[0]
        out = x.new_empty(len(x), sum(p.numel() for p in o.params))
        for start in range(0, len(x), chunk):
            cols = per_point(self.primals(), *(t[start:start + chunk] for t in o.points))
            out[start:start + chunk] = torch.cat([c.reshape(len(c), -1) for c in cols], 1)
        return out


# ---- measuring ------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, warmup: int = 1) -> float:
    """Wall time of one call of fn after ``warmup`` calls, the device's work included."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def free_memory(device: torch.device) -> int:
    """Bytes the check may still allocate on the device."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory()


def describe(device: torch.device) -> dict[str, Any]:
    """The device's name, its memory and what of it is free (bytes)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name, memory = props.name, props.total_memory
    else:
        mach = machine()
        name = f"{mach['cpu']} ({mach['cores']} cores, {mach['torch_threads']} torch threads)"
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"device": str(device), "name": name, "memory": memory,
            "free": free_memory(device)}


def points(n: int, round_: int, device: torch.device) -> torch.Tensor:
    """n uniform points of (0,1)^2 of sampling round ``round_``, the same on every device
    (drawn on the host)."""
    gen = torch.Generator().manual_seed(round_)
    return torch.rand(n, 2, generator=gen, dtype=torch.float64).to(device)


def network(width: int, features: int, device: torch.device) -> nn.Module:
    """The Ms-FF 2 x width network with ``features`` per map and the hard boundary
    condition, float64, as a run builds it."""
    cfg = config.load(None, [f"network.width={width}", f"network.features={features}",
                             "network.hard_bc=true", "network.dtype=float64"])
    return build_network(cfg.network, PROBLEM).to(device)


def optimizer(rows: PINNRows, solver: str) -> GaussNewton:
    cfg = config.load(None, ["optimizer.kind=gauss-newton", f"optimizer.gn_solver={solver}"])
    return GaussNewton(rows, cfg.optimizer, curvature_solver(solver), MPI.COMM_SELF)


def step_costs(width: int, features: int, n: int, device: torch.device) -> dict[str, Any]:
    """Seconds of the residual, the Jacobian and one Gauss-Newton step per solver (None
    and the bytes it needs where a solver does not fit)."""
    net = network(width, features, device)
    rows = PINNRows(net, PROBLEM)
    rows.use(points(n, 0, device))
    params = sum(p.numel() for p in rows.params)
    out: dict[str, Any] = {"parameters": params, "points": n,
                           "residual_s": timed(rows.linearize, device)}
    chunk = optimizer(rows, "cg").solver.chunk         # the points per pass GaussNewton takes
    lin = rows.linearize()
    out["jacobian_s"] = timed(lambda: lin.jacobian(chunk), device)
    lin = None                                      # its memory, before the solvers' steps
    for name in SOLVERS:
        need = curvature_solver(name).memory(params, n, 8, 1)
        if need > free_memory(device):
            out[name] = {"seconds": None, "needs": need}
            continue
        trial = PINNRows(copy.deepcopy(net), PROBLEM)
        trial.use(rows.points[0])
        gn = optimizer(trial, name)
        out[name] = {"seconds": timed(gn.step, device), "needs": need}
        del gn, trial
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def relative_error(net: nn.Module, grid: torch.Tensor) -> float:
    with torch.no_grad():
        u = exact(grid)
        return float(torch.linalg.vector_norm(net(grid) - u) / torch.linalg.vector_norm(u))


def progress(step: int, loss: float, seconds: float, damping: float, net: nn.Module,
             grid: torch.Tensor) -> dict[str, float]:
    """One step's row of the Gauss-Newton run, printed."""
    row = {"step": step, "loss": loss, "rel_l2": relative_error(net, grid), "damping": damping,
           "seconds": seconds}
    print(f"{step:>5}{loss:>12.4e}{row['rel_l2']:>12.4e}{damping:>10.1e}{seconds:>9.3f}",
          flush=True)
    return row


def train(width: int, features: int, n: int, steps: int, solver: str, grid_n: int,
          device: torch.device) -> list[dict[str, float]]:
    """``steps`` Gauss-Newton steps on fresh points each, printed as they go: per step the
    loss at its points, the relative L2 error on the grid and the step's seconds."""
    net = network(width, features, device)
    rows = PINNRows(net, PROBLEM)
    why = f"{solver} (--solver)"
    if solver == AUTO:
        solver, why = choose_curvature_solver(sum(p.numel() for p in rows.params), n, 1, 8,
                                              free_memory(device))
    print(f"solver {why}")
    gn = optimizer(rows, solver)
    t = (torch.arange(grid_n, dtype=torch.float64) + 0.5) / grid_n
    grid = torch.cartesian_prod(t, t).to(device)
    print(f"{'step':>5}{'loss':>12}{'rel L2':>12}{'damping':>10}{'seconds':>9}")
    history = [progress(0, math.nan, 0.0, gn.damping, net, grid)]
    for k in range(1, steps + 1):
        rows.use(points(n, k, device))
        t0 = time.perf_counter()
        loss = gn.step(k).stats["loss"]
        sync(device)
        history.append(progress(k, loss, time.perf_counter() - t0, gn.damping, net, grid))
    return history


def print_table(table: dict[str, dict[str, Any]]) -> None:
    print(f"{'network':>8}{'params':>9}{'points':>8}{'residual':>10}{'jacobian':>10}"
          + "".join(f"{'GN ' + s:>14}" for s in SOLVERS) + "   (seconds)")
    for label, r in table.items():
        cells = [f"{r[s]['seconds']:>14.3f}" if r[s]["seconds"] is not None
                 else f"{'needs ' + size_text(r[s]['needs']):>14}" for s in SOLVERS]
        print(f"{label:>8}{r['parameters']:>9}{r['points']:>8}{r['residual_s']:>10.3f}"
              f"{r['jacobian_s']:>10.3f}" + "".join(cells), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default=None,
                   help="default: cuda where torch sees one, else cpu")
    p.add_argument("--quick", action="store_true", help="smaller networks and points (a CPU)")
    p.add_argument("--steps", type=int, default=20, help="Gauss-Newton steps of the PINN run")
    p.add_argument("--solver", choices=[AUTO, *SOLVERS], default=AUTO,
                   help="curvature solver of the PINN run (auto: as optimizer.gn_solver)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        p.error("--device cuda: torch sees no CUDA device")
    if args.device is None and not cuda:
        print("note: torch sees no CUDA device; checking on the cpu")
    device = torch.device(args.device or ("cuda" if cuda else "cpu"))
    scale = SCALES["quick" if args.quick else "full"]
    dev = describe(device)
    print(f"device: {dev['name']} ({dev['device']}), memory {size_text(dev['memory'])}, "
          f"{size_text(dev['free'])} free; torch {torch.__version__}; float64")
    print(f"\none step's cost on {scale.points} points (Ms-FF 2 x width, hard BC)")
    table = {label: step_costs(w, f, scale.points, device)
             for label, (w, f) in scale.networks.items()}
    print_table(table)
    width, features = scale.networks[scale.train]
    print(f"\n{args.steps} Gauss-Newton steps, {PROBLEM.description}, eps = {EPS}, "
          f"{scale.train} network, {scale.points} fresh points per step, error on a "
          f"{scale.grid} x {scale.grid} grid")
    history = train(width, features, scale.points, args.steps, args.solver, scale.grid, device)
    write_json(args.json, {"machine": machine(), "device": dev, "table": table,
                           "history": history})


if __name__ == "__main__":
    main()
