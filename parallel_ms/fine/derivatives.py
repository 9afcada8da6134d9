"""v, grad v and lap v of a network at points: the autograd reference and the fast path.

``derivatives(model, x, "autograd")`` differentiates twice with autograd (the reference
implementation); ``"jet"`` pushes value, gradient and Laplacian forward through the layers
(:mod:`.jet`), one matrix product per layer, and is what training uses. Both build graphs that
training can backpropagate through.
"""
from __future__ import annotations

import torch

MODES = ("jet", "autograd")


def derivatives_autograd(model: torch.nn.Module,
                         x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(v (M,), grad v (M, d), lap v (M,)) by double-backward autograd."""
    x = x.detach().requires_grad_(True)
    v = model(x)
    (g,) = torch.autograd.grad(v.sum(), x, create_graph=True)
    lap = torch.zeros_like(v)
    for k in range(x.shape[1]):
        (gk,) = torch.autograd.grad(g[:, k].sum(), x, create_graph=True)
        lap = lap + gk[:, k]
    return v, g, lap


def derivatives(model: torch.nn.Module, x: torch.Tensor,
                mode: str = "jet") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(v, grad v, lap v); ``mode`` is ``jet`` (fast forward path) or ``autograd``."""
    if mode == "autograd":
        return derivatives_autograd(model, x)
    net = model.module if hasattr(model, "module") else model  # DistributedDataParallel
    j = net.jet(x)
    return j.value, j.grad.T if j.grad.dim() == 2 else j.grad.permute(1, 0), j.lap
