"""The residuals of the fine problem (paper 000 (4.8)/(4.11)): the physics every training
objective is built on, in one of two forms (``loss.form``).

    strong   r = -K_eps lap v - grad K_eps . grad v - f_eps,      f_eps = q + d_1 K_eps
    energy   rho = (K_eps grad v - sigma_f) / sqrt(K_eps),        div sigma_f = -f_eps

(the lifted problem: v is the periodic/zero-boundary part of the temperature). The energy
form is the Ritz energy written as least squares: for v = 0 on the boundary,
1/2 int |rho|^2 = 1/2 int K_eps |grad v|^2 - int f_eps v + const (integrate sigma_f . grad v by
parts), the energy whose minimiser solves (4.8) (Deep Ritz: E & Yu 2018); its Gauss–Newton
matrix is the stiffness of the network's tangent space (the energy natural gradient of Müller &
Zeinhofer 2023). It needs first derivatives only, of v and not of K_eps, and sharp interfaces
of K_eps enter as values, not as the spikes of grad K_eps. Pure torch, so that forward-mode
(jvp) and per-point reverse-mode (vmap of jacrev) derivatives go through it.
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


def energy_residual(k: torch.Tensor, sigma: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """rho = (K grad v - sigma_f) / sqrt(K), shape (M, d), sigma_f (M, d) a flux of the lifted
    source (:meth:`~parallel_ms.problems.problem.Problem.lifted_source_flux`). With sigma_f = 0
    it is rho's (linear) change for a change grad v of the network."""
    return (k[:, None] * grad - sigma) / k.sqrt()[:, None]
