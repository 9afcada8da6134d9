"""The training objective (3.24)/(3.25) as weighted residual rows, and products with their
Jacobian (for Gauss-Newton; docs/second-order.md §1-2).

On this rank's points the objective's terms are squared norms of residual vectors

    interior  sqrt(lambda_r |Omega| / M) r(x_i),     r = -K lap v - grad K . grad v - f   (4.8)
    boundary  sqrt(lambda_b tau_1 |dOmega| / M_b) v(x_b)                (soft BCs only)
    weak      sqrt(lambda_w) Phi r   (owned test functions; loss.tau_weak > 0: .weak_residual)
    coupling  sqrt(lambda_c tau_2 w_n) (Q v_i - y_i(K~(theta)))_n       (owned coarse dofs)

with lambda the (frozen) balancing weights, so that J(theta) = sum over ranks of ||r||^2 is
the objective Adam and L-BFGS minimise. A :class:`Linearization` at the current parameters
offers J delta (forward mode through the jet path, then the coupling's tangent-linear coarse
solve) and J^T u (one reverse pass through a retained graph, with the coupling's adjoint
solve), both on this rank's rows: sums over ranks are the caller's (an all-reduce of a
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
from parallel_ms.training.objective import PINNObjective, residual


def flatten(tensors: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: list[torch.nn.Parameter]) -> tuple[torch.Tensor, ...]:
    out, offset = [], 0
    for p in like:
        out.append(vector[offset:offset + p.numel()].view_as(p))
        offset += p.numel()
    return tuple(out)


class Linearization:
    """The residual rows at the current parameters and products with their Jacobian.

    ``rows`` maps each term to this rank's weighted residual vector (detached); ``jvp(delta)``
    returns the same layout for J delta; ``vjp(u)`` returns this rank's share of J^T u as a
    flat parameter vector. Both are linear; the coupling's parts are collective calls, so all
    ranks call them together."""

    def __init__(self, residuals: "Residuals") -> None:
        self.owner = residuals
        objective = residuals.objective
        self.outs = residuals.forward(objective.x_int, objective.x_bnd, objective.x_nodes)
        v, g, lap, v_b, v_nodes = self.outs
        self.scale = residuals.scales()
        r = residual(objective.k, objective.grad_k, objective.f, lap, g)
        self.rows_graph = {"residual": self.scale["residual"] * r}
        if not objective.hard_bc:
            self.rows_graph["boundary"] = self.scale["boundary"] * v_b
        self.r_graph = r
        coupling = objective.coupling
        if coupling is not None:
            coupling.refresh(coupling.k_global(g.detach()))   # y = y(K~(theta)): consistent
        self.rows = {name: t.detach().reshape(-1) for name, t in self.rows_graph.items()}
        if objective.weak is not None:
            self.rows["weak"] = self._scaled("weak", objective.weak.rows(r), v)
        if coupling is not None:
            self.rows["coupling"] = self._scaled(
                "coupling", coupling.rows(v.detach(), v_nodes.detach()), v)

    def local_terms(self) -> dict[str, float]:
        """This rank's ||rows||^2 per term, without the balancing weights."""
        weights = self.owner.weights
        return {n: float(r @ r) / weights.get(n, 1.0) for n, r in self.rows.items()}

    def _network_rows(self, delta: torch.Tensor
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor, tuple[torch.Tensor, ...]]:
        """The PINN rows' J delta, the residual's change dr and the tangents (dv, d grad v,
        dv_nodes) the coupling rows need (pure torch: vmap-able over directions)."""
        res = self.owner
        objective = res.objective
        dv, dg, dlap, dv_b, dv_nodes = jvp(res.outputs_of, res.primals(),
                                           unflatten(delta, res.params))[1]
        dr = residual(objective.k, objective.grad_k, torch.zeros_like(objective.f), dlap, dg)
        rows = {"residual": (self.scale["residual"] * dr).reshape(-1)}
        if not objective.hard_bc:
            rows["boundary"] = (self.scale["boundary"] * dv_b).reshape(-1)
        return rows, dr, (dv, dg, dv_nodes)

    def _scaled(self, term: str, rows: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """Rows computed in NumPy (weak residual, coupling) scaled, as tensors."""
        return self.scale[term] * torch.as_tensor(rows, dtype=like.dtype, device=like.device)

    def jvp(self, delta: torch.Tensor) -> dict[str, torch.Tensor]:
        rows, dr, tangents = self._network_rows(delta)
        objective = self.owner.objective
        if objective.weak is not None:
            rows["weak"] = self._scaled("weak", objective.weak.rows(dr), dr)
        if objective.coupling is not None:
            rows["coupling"] = self._scaled(
                "coupling", objective.coupling.rows_tangent(*tangents), tangents[0])
        return rows

    def jacobian(self, chunk: int) -> torch.Tensor:
        """This rank's rows' Jacobian (local rows x parameters), terms stacked in the order
        of ``rows``. Per point by reverse mode (vmap over ``chunk`` points at a time of the
        gradient of one point's residual r, and of v where the coupling needs it: far cheaper
        than one forward-mode pass per parameter); the coupling's block by
        :meth:`Coupling.rows_tangent_columns` with dK~ from one reverse pass (a scalar K~), or
        by :meth:`Coupling.rows_tangent` per column (the block tensor, which needs d grad v
        at every point; collective)."""
        res, o = self.owner, self.owner.objective
        coupling = o.coupling
        block = coupling is not None and coupling.kind == "block-tensor"
        if block:
            dv, dg, dlap = res.point_jacobian(o.x_int, chunk, "jet")
            ones = [1] * (dlap.dim() - 1)                     # (outputs, parameters)
            dr = dlap.mul_(-o.k.reshape(-1, *ones)).sub_(      # in place: dlap is not needed
                (o.grad_k.reshape(*o.grad_k.shape, *ones) * dg).sum(1))
        elif coupling is not None:
            dv, dr = res.point_jacobian(o.x_int, chunk, "value-residual")
        else:
            (dr,) = res.point_jacobian(o.x_int, chunk, "residual")
        rows = {"residual": self.scale["residual"] * dr}
        if not o.hard_bc:
            rows["boundary"] = self.scale["boundary"] * res.point_jacobian(o.x_bnd, chunk)[0]
        if o.weak is not None:
            rows["weak"] = self._scaled("weak", o.weak.rows_columns(dr), dr)
        if coupling is not None:
            (dv_nodes,) = res.point_jacobian(o.x_nodes, chunk)
            if block:
                columns = np.stack([coupling.rows_tangent(*t) for t in zip(
                    dv.movedim(-1, 0), dg.movedim(-1, 0), dv_nodes.movedim(-1, 0))], 1)
            else:
                dk = coupling.upscaling.jacobian(self.outs[1], res.params)
                columns = coupling.rows_tangent_columns(dv, dv_nodes, dk)
            rows["coupling"] = self._scaled("coupling", columns, dv)
        return torch.cat([rows[name].reshape(-1, dr.shape[-1]) for name in self.rows])

    def vjp(self, u: dict[str, torch.Tensor]) -> torch.Tensor:
        v, g, _, _, v_nodes = self.outs
        pairing = sum((r.reshape(-1) * u[n]).sum() for n, r in self.rows_graph.items())
        objective = self.owner.objective
        if objective.weak is not None:
            cr = objective.weak.cotangent(self.scale["weak"] * u["weak"].double().cpu().numpy())
            pairing = pairing + (torch.as_tensor(cr, dtype=v.dtype, device=v.device)
                                 .reshape(self.r_graph.shape) * self.r_graph).sum()
        coupling = objective.coupling
        if coupling is not None:
            cv, cg, cn = coupling.rows_cotangent(self.scale["coupling"]
                                                 * u["coupling"].double().cpu().numpy(), g)
            as_t = lambda a: torch.as_tensor(a, dtype=v.dtype, device=v.device)  # noqa: E731
            pairing = pairing + (as_t(cv).reshape(v.shape) * v).sum() + (cg * g).sum() \
                + (as_t(cn).reshape(v_nodes.shape) * v_nodes).sum()
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
        """Row scale per term: sqrt(balancing weight x the term's quadrature weight)."""
        o, w = self.objective, self.weights
        return {"residual": math.sqrt(w.get("residual", 1.0) * o.w_int),
                "boundary": math.sqrt(w.get("boundary", 1.0) * o.w_bnd),
                "weak": math.sqrt(w.get("weak", 1.0)),
                "coupling": math.sqrt(w.get("coupling", 1.0))}

    def primals(self) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach() for p in self.params)

    def outputs_of(self, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        o = self.objective
        return functional_call(self.forward, dict(zip(self.names, params)),
                               (o.x_int, o.x_bnd, o.x_nodes))

    def point_jacobian(self, x: torch.Tensor, chunk: int, of: str = "value"
                       ) -> tuple[torch.Tensor, ...]:
        """The derivatives d/d(theta) at the points x of: ``"value"`` v; ``"jet"`` (v, grad v,
        lap v); ``"residual"`` r (4.8), ``"value-residual"`` (v, r) — these two at the
        objective's interior points (x = x_int). Each of shape (points, *value shape,
        parameters). Reverse mode per point: the cost grows with the number of quantities."""
        names = [n.removeprefix("net.") for n in self.names]
        jet_of = _JetOf(self.forward.net)
        o = self.objective
        extras = (o.k, o.grad_k, o.f) if of.endswith("residual") else ()

        def at_point(params: tuple[torch.Tensor, ...], xi: torch.Tensor, *ki: torch.Tensor
                     ) -> tuple[torch.Tensor, ...]:
            if of == "value":
                return (functional_call(self.forward.net, dict(zip(names, params)),
                                        (xi[None],))[0],)
            v, g, lap = functional_call(jet_of, dict(zip(self.names, params)), (xi[None],))
            if of == "jet":
                return v[0], g[0], lap[0]
            r = residual(*(e[None] for e in ki), lap, g)[0]
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
