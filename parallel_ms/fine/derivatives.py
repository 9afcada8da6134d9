"""v, grad v and lap v of a network at points: the autograd reference and the fast path.

``derivatives(model, x, "autograd")`` differentiates twice with autograd (the reference
implementation); ``"jet"`` pushes value, gradient and Laplacian forward through the layers
(:mod:`.jet`), one matrix product per layer, and is what training uses; ``"jet-compiled"`` is
the same computation through ``torch.compile``, which fuses the elementwise chain rule (a
one-time compile of ~30 s per point-set size, then about twice as fast again: see
``benchmarks/derivatives.py``). All build graphs that training can backpropagate through.
"""
from __future__ import annotations

import torch

MODES = ("jet", "jet-compiled", "autograd")


def derivatives_autograd(model: torch.nn.Module,
                         x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(v (M,), grad v (M, d), lap v (M,)) by double-backward autograd; for n > 1 outputs
    (v (M, n), grad v (M, d, n), lap v (M, n)), one output at a time."""
    x = x.detach().requires_grad_(True)
    v = model(x)
    outs = [v] if v.dim() == 1 else list(v.unbind(1))
    grads, laps = [], []
    for vi in outs:
        (g,) = torch.autograd.grad(vi.sum(), x, create_graph=True)
        lap = torch.zeros_like(vi)
        for k in range(x.shape[1]):
            (gk,) = torch.autograd.grad(g[:, k].sum(), x, create_graph=True)
            lap = lap + gk[:, k]
        grads.append(g)
        laps.append(lap)
    if v.dim() == 1:
        return v, grads[0], laps[0]
    return v, torch.stack(grads, -1), torch.stack(laps, -1)


def derivatives(model: torch.nn.Module, x: torch.Tensor,
                mode: str = "jet") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(v, grad v, lap v); ``mode`` is ``jet`` (fast forward path) or ``autograd``."""
    if mode == "autograd":
        return derivatives_autograd(model, x)
    net = model.module if hasattr(model, "module") else model  # DistributedDataParallel
    if mode == "jet-compiled":
        if "_compiled_jet" not in net.__dict__:
            net.__dict__["_compiled_jet"] = torch.compile(lambda y: _jet_outputs(net, y),
                                                          dynamic=False)
        return net.__dict__["_compiled_jet"](x)
    return _jet_outputs(net, x)


def _jet_outputs(net: torch.nn.Module, x: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(v (M,), grad v (M, d), lap v (M,)) from the network's jet (with n > 1 outputs:
    (M, n), (M, d, n), (M, n)), as fresh (non-view)
    tensors: torch.compile mishandles outputs that alias intermediate buffers."""
    j = net.jet(x)
    return j.value + 0, j.grad.transpose(0, 1).contiguous(), j.lap + 0
