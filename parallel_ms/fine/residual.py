"""The strong residual of the fine problem (paper 000 (4.8)/(4.11)): the physics every
training objective is built on.

    r = -K_eps lap v - grad K_eps . grad v - f_eps,      f_eps = q + d_1 K_eps

(the lifted problem: v is the periodic/zero-boundary part of the temperature). Pure torch, so
that forward-mode (jvp) and per-point reverse-mode (vmap of jacrev) derivatives go through it.
"""
from __future__ import annotations

import torch


def residual(k: torch.Tensor, grad_k: torch.Tensor, f: torch.Tensor, lap: torch.Tensor,
             grad: torch.Tensor) -> torch.Tensor:
    """r = -K lap v - grad K . grad v - f (4.8); for a network with n outputs (one per
    temperature drop) lap and f are (M, n) and grad is (M, d, n). With f = 0 it is the
    residual's (linear) change for a change (lap v, grad v) of the network."""
    if lap.dim() == 2:
        k, grad_k = k[:, None], grad_k[:, :, None]
    return -k * lap - (grad_k * grad).sum(1) - f
