"""Validation metrics: relative L2 and H1 errors of any point function against a reference.

The paper's errors (§4.4): ||v - u_h||_{L2} / ||u_h||_{L2} and, for H1, the L2 norm of the
gradient (seminorm) in both numerator and denominator. Computed by quadrature on the reference
mesh: the function is evaluated at the quadrature points each rank owns (no gathering), the
integrals are assembled by Firedrake and summed over ranks, so 1 and n ranks agree to rounding.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import firedrake as fd
import numpy as np
import torch

from parallel_ms.reference.solver import Reference

#: x of shape (M, d) -> (v of shape (M,), grad v of shape (M, d))
PointFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def relative_errors(fn: PointFunction, ref: Reference, quadrature_degree: int | None = None,
                    correction: fd.Function | None = None) -> tuple[float, float]:
    """(relative L2 error, relative H1-seminorm error) of ``fn`` (plus ``correction``, a
    finite-element function on another mesh of the unit cube, as the error estimate's e_h)
    against ``ref.u``.

    The default quadrature degree 2p (P_p reference) integrates the reference's own terms
    exactly; ``fn`` is smooth on the reference mesh's scale (h <= eps/32), so a higher degree
    would mostly add network evaluations, which are the cost of a validation."""
    mesh = ref.mesh
    degree = quadrature_degree or 2 * ref.degree
    Q = fd.FunctionSpace(mesh, "Quadrature", degree, quad_scheme="default")
    QV = fd.VectorFunctionSpace(mesh, "Quadrature", degree, quad_scheme="default")
    points = fd.Function(QV).interpolate(fd.SpatialCoordinate(mesh)).dat.data_ro
    values, grads = fn(np.asarray(points).reshape(-1, ref.problem.dim))
    v, g = fd.Function(Q), fd.Function(QV)
    v.dat.data_wo[:] = values
    g.dat.data_wo[:] = np.asarray(grads).reshape(v.dat.data_wo.shape[0], -1).squeeze()
    if correction is not None:
        v += fd.assemble(fd.interpolate(correction, Q))
        g += fd.assemble(fd.interpolate(_gradient(correction), QV))
    dxq = fd.dx(metadata={"quadrature_degree": degree, "quadrature_rule": "default"})
    u = ref.u

    def integral(expr: object) -> float:
        return float(fd.assemble(expr * dxq))

    l2 = math.sqrt(integral((v - u) ** 2) / integral(u ** 2))
    h1 = math.sqrt(integral(fd.inner(g - fd.grad(u), g - fd.grad(u)))
                   / integral(fd.inner(fd.grad(u), fd.grad(u))))
    return l2, h1


def _gradient(f: fd.Function) -> fd.Function:
    """grad f of a continuous P_p function, exactly, in discontinuous vector P_(p-1): a
    function that can be interpolated onto another mesh's points."""
    degree = f.function_space().ufl_element().degree()
    space = fd.VectorFunctionSpace(f.function_space().mesh(), "DG", degree - 1)
    return fd.Function(space).interpolate(fd.grad(f))


def torch_point_function(model: torch.nn.Module, dtype: torch.dtype = torch.float64,
                         device: torch.device | str = "cpu",
                         batch: int = 65536) -> PointFunction:
    """A :data:`PointFunction` for a torch network v(x) (value and autograd gradient; the
    first output of a network with several: the temperature drop along e_1)."""

    def fn(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values, grads = [], []
        for start in range(0, max(len(x), 1), batch):
            xb = torch.tensor(x[start:start + batch], dtype=dtype, device=device)
            xb.requires_grad_(True)
            out = model(xb)
            out = out[:, 0] if out.dim() == 2 else out
            (g,) = torch.autograd.grad(out.sum(), xb)
            values.append(out.detach().cpu().numpy())
            grads.append(g.detach().cpu().numpy())
        return np.concatenate(values), np.concatenate(grads)

    return fn


def fe_relative_errors(v: fd.Function, u: fd.Function, k: Any) -> tuple[float, float, float]:
    """Relative errors of the finite-element function v against u (same mesh): L2, H1 seminorm (L2 norm of the gradient)
    and energy norm (int k |grad e|^2)^(1/2), the norm in which the Galerkin solution in a
    larger space is never worse."""
    def ratio(e: Any, ref: Any, weight: Any = 1.0) -> float:
        return _norm(e, weight) / _norm(ref, weight)
    grad_e = fd.grad(v - u)
    return ratio(v - u, u), ratio(grad_e, fd.grad(u)), ratio(grad_e, fd.grad(u), k)


def _norm(f: Any, weight: Any = 1.0) -> float:
    """(int weight |f|^2)^(1/2) over the mesh of f."""
    return math.sqrt(fd.assemble(weight * fd.inner(f, f) * fd.dx))


def norms(u: fd.Function, k: Any) -> tuple[float, float, float]:
    """(||u||_L2, |u|_H1 = ||grad u||_L2, ||u||_a = (int k |grad u|^2)^(1/2)) of a
    finite-element function: the denominators of the relative errors. Their ratio
    ||u||_L2 / |u|_H1 says how much of u oscillates on the scale eps: about eps / (2 pi) when u
    is an eps-periodic oscillation, about 1 / (pi sqrt(d)) for a smooth bump on the unit cube;
    the closer to eps / (2 pi), the smaller an error in H1 that the relative L2 error already
    counts as large."""
    return _norm(u), _norm(fd.grad(u)), _norm(fd.grad(u), k)
