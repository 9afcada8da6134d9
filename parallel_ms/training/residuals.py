"""Products with the Jacobian of the objective's residual rows (for Gauss-Newton;
docs/second-order.md §1-2).

The rows are :meth:`~parallel_ms.training.objective.PINNObjective.rows` (the objective's one
definition) times sqrt(lambda), lambda the (frozen) balancing weights, so that
J(theta) = sum over ranks of ||rows||^2 is the objective Adam and L-BFGS minimise. A
:class:`Linearization` at the current parameters offers J delta (forward mode through the jet
path, then the rows' tangents, the coupling's by its tangent-linear coarse solve) and J^T u
(one reverse pass through the rows' retained graph, the coupling's by its adjoint solve), both on this rank's rows: sums over ranks are the caller's (an all-reduce of a
parameter-sized vector, as DDP does for a gradient).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from parallel_ms.fine.derivatives import derivatives
from parallel_ms.training.optimizers.base import flatten, unflatten
from parallel_ms.training.objective import PINNObjective


class Linearization:
    """The residual rows at the current parameters and products with their Jacobian.

    ``rows`` maps each term to this rank's weighted residual vector (detached); ``jvp(delta)``
    returns the same layout for J delta; ``vjp(u)`` returns this rank's share of J^T u as a
    flat parameter vector. Both are linear; the coupling's parts are collective calls, so all
    ranks call them together. The rows are :meth:`PINNObjective.rows` times the square roots
    of the (frozen) balancing weights."""

    def __init__(self, residuals: "Residuals") -> None:
        self.owner = residuals
        objective = residuals.objective
        self.outs = objective.outputs_of(residuals.forward)
        self.scale = residuals.scales()
        self.rows_graph = {n: self.scale[n] * r for n, r in objective.rows(self.outs).items()}
        self.rows = {name: t.detach() for name, t in self.rows_graph.items()}

    def local_terms(self) -> dict[str, float]:
        """This rank's ||rows||^2 per term, without the balancing weights."""
        weights = self.owner.weights
        return {n: float(r @ r) / weights.get(n, 1.0) for n, r in self.rows.items()}

    def jvp(self, delta: torch.Tensor) -> dict[str, torch.Tensor]:
        res = self.owner
        tangents = jvp(res.outputs_of, res.primals(), unflatten(delta, res.params))[1]
        return {n: self.scale[n] * t for n, t in res.objective.row_tangents(*tangents).items()}

    def jacobian(self, chunk: int) -> torch.Tensor:
        """This rank's rows' Jacobian (local rows x parameters), terms stacked in the order
        of ``rows``. Per point by reverse mode (vmap over ``chunk`` points at a time of the
        gradient of one point's residual r, and of v where the coupling needs it: far cheaper
        than one forward-mode pass per parameter); the coupling's block by
        :meth:`Coupling.rows_tangent_columns` with dK~ from one reverse pass (a scalar K~), or
        by :meth:`Coupling.rows_tangent` per column (the block tensor, which needs d grad v
        at every point; collective); the Galerkin form's from the residual's block (one
        KSPMatSolve)."""
        res, o = self.owner, self.owner.objective
        coupling = o.coupling
        block = coupling is not None and coupling.kind == "block-tensor"
        galerkin = coupling is not None and coupling.galerkin is not None
        if block:
            dv, dg, dlap = res.point_jacobian(o.x_int, chunk, "jet")
            ones = [1] * (dlap.dim() - 1)                     # (outputs, parameters)
            dr = dlap.mul_(-o.k.reshape(-1, *ones)).sub_(      # in place: dlap is not needed
                (o.grad_k.reshape(*o.grad_k.shape, *ones) * dg).sum(1))
        elif coupling is not None and not galerkin:
            dv, dr = res.point_jacobian(o.x_int, chunk, "value-residual")
        else:
            (dr,) = res.point_jacobian(o.x_int, chunk, "residual")
        rows: dict[str, torch.Tensor] = {}
        if not o.hard_bc:
            rows["boundary"] = (self.scale["boundary"] * o.row_scale["boundary"]
                                * res.point_jacobian(o.x_bnd, chunk)[0])
        if o.weak is not None:
            rows["weak"] = self._scaled("weak", o.weak.rows_columns(dr), dr)
        if galerkin:
            rows["coupling"] = self._scaled("coupling", math.sqrt(coupling.tau2)
                                            * coupling.galerkin.rows_columns(dr), dr)
        elif coupling is not None:
            (dv_nodes,) = res.point_jacobian(o.x_nodes, chunk)
            if block:
                columns = np.stack([coupling.rows_tangent(*t) for t in zip(
                    dv.movedim(-1, 0), dg.movedim(-1, 0), dv_nodes.movedim(-1, 0))], 1)
            else:
                dk = coupling.upscaling.jacobian(self.outs[1], res.params)
                columns = coupling.rows_tangent_columns(dv, dv_nodes, dk)
            rows["coupling"] = self._scaled("coupling", columns, dv)
        # dr is scaled in place once the blocks computed from it are done (no copy of J)
        rows["residual"] = o.scale_residual(dr, self.scale["residual"], in_place=True)
        blocks = [rows[name].reshape(-1, dr.shape[-1]) for name in self.rows]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks)

    def _scaled(self, term: str, rows: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """Jacobian blocks computed in NumPy (weak residual, coupling) scaled, as tensors."""
        return self.scale[term] * torch.as_tensor(rows, dtype=like.dtype, device=like.device)

    def vjp(self, u: dict[str, torch.Tensor]) -> torch.Tensor:
        pairing = sum((r * u[n]).sum() for n, r in self.rows_graph.items())
        return flatten(torch.autograd.grad(pairing, self.owner.params, retain_graph=True,
                                           materialize_grads=True))


class _JetOf(nn.Module):
    """(v, grad v, lap v) of ``net`` as a forward call (for torch.func.functional_call)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return derivatives(self.net, x, "jet")


class Residuals:
    """The objective of a :class:`PINNObjective` (with its coupling, if any) as residual rows
    through ``forward`` (a :class:`~parallel_ms.fine.model.PINNForward`, not DDP-wrapped:
    the sums over ranks are explicit)."""

    def __init__(self, objective: PINNObjective, forward: nn.Module,
                 weights: Callable[[], dict[str, float]] = dict) -> None:
        self.objective, self.forward = objective, forward
        self._weights = weights
        self.names = [n for n, _ in forward.named_parameters()]
        self.params = [p for _, p in forward.named_parameters()]

    @property
    def weights(self) -> dict[str, float]:
        return self._weights()

    def scales(self) -> dict[str, float]:
        """Row scale per term: the square root of its balancing weight."""
        return {n: math.sqrt(self.weights.get(n, 1.0)) for n in self.objective.term_names}

    def primals(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach() for p in self.params)

    def outputs_of(self, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        o = self.objective
        return functional_call(self.forward, dict(zip(self.names, params)),
                               (o.x_int, o.x_bnd, o.x_nodes))

    def point_jacobian(self, x: torch.Tensor, chunk: int, of: str = "value"
                       ) -> tuple[torch.Tensor, ...]:
        """The derivatives d/d(theta) at the points x of: ``"value"`` v; ``"jet"`` (v, grad v,
        lap v); ``"residual"`` r (4.8, in the objective's form), ``"value-residual"`` (v, r) —
        these two at the objective's interior points (x = x_int). Each of shape (points,
        *value shape, parameters). Reverse mode per point: the cost grows with the number of
        quantities."""
        names = [n.removeprefix("net.") for n in self.names]
        jet_of = _JetOf(self.forward.net)
        o = self.objective
        extras = o.extras if of.endswith("residual") else ()

        def at_point(params: tuple[torch.Tensor, ...], xi: torch.Tensor, *ki: torch.Tensor
                     ) -> tuple[torch.Tensor, ...]:
            if of == "value":
                return (functional_call(self.forward.net, dict(zip(names, params)),
                                        (xi[None],))[0],)
            v, g, lap = functional_call(jet_of, dict(zip(self.names, params)), (xi[None],))
            if of == "jet":
                return v[0], g[0], lap[0]
            r = o.point_residual(*(e[None] for e in ki), lap, g)[0]
            return (v[0], r) if of == "value-residual" else (r,)

        columns = torch.tensor([0] + [p.numel() for p in self.params]).cumsum(0).tolist()
        full: list[torch.Tensor] = []
        for start in range(0, max(len(x), 1), chunk):   # a rank without points: empty rows
            at = [t[start:start + chunk] if len(x) else t.new_zeros((1, *t.shape[1:]))
                  for t in (x, *extras)]
            jac = vmap(jacrev(at_point), in_dims=(None, *[0] * len(at)))(self.primals(), *at)
            rows = min(len(x) - start, len(at[0]))
            for k, out in enumerate(jac):                # written in place: no second copy
                if len(full) == k:
                    shape = out[0].shape[1:out[0].dim() - self.params[0].dim()]
                    full.append(x.new_empty((len(x), *shape, columns[-1])))
                for j, p, a, b in zip(out, self.params, columns, columns[1:]):
                    full[k][start:start + rows, ..., a:b] = j.flatten(j.dim() - p.dim())[:rows]
        return tuple(full)

    def linearize(self) -> Linearization:
        with torch.enable_grad():
            return Linearization(self)
