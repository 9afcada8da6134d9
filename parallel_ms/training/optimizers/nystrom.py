"""The randomized Nystrom preconditioner of matrix-free CG (issue 32, item 1: NysNewton-CG,
Rathore, Frangella, Yang, Mahoney & Udell 2024; the preconditioner of Frangella, Tropp &
Udell, "Randomized Nystrom preconditioning", SIAM J. Matrix Anal. Appl. 2023).

For A = J^T J (P x P, summed over the ranks) and a test matrix Omega (P x l, orthonormal
columns), the Nystrom approximation A_nys = (A Omega)(Omega^T A Omega)^+ (A Omega)^T = U Lam U^T
(their Algorithm 2.1, stabilised by a shift nu) captures A's l largest eigenpairs, where the
Gauss-Newton matrix of a network keeps most of its spectrum. The preconditioner of
A + lambda I (their eq. 5.3) is

    P^-1 = (lam_l + lambda) U (Lam + lambda I)^-1 U^T + (I - U U^T),

so that the preconditioned matrix has condition number about (lam_l + lambda) / lambda
instead of (lam_1 + lambda) / lambda. The sketch A Omega is l products with J and J^T on
this rank's rows and one sum over ranks of a P x l block; everything after it is dense
algebra on replicated tensors on the parameters' device, so every rank holds the same U and
Lam. Omega is drawn from a generator of fixed seed at every sketch: replicas and a resumed
run draw the same test matrix without state to keep.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

#: the seed of every sketch's test matrix (the same on every rank and after a resume)
SEED = 20240214


@dataclass
class Nystrom:
    """A_nys = U diag(lam) U^T, U (P x l) with orthonormal columns, lam >= 0 decreasing."""

    u: torch.Tensor
    lam: torch.Tensor

    @classmethod
    def sketch(cls, apply: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor,
               rank: int) -> "Nystrom | None":
        """The rank-``rank`` Nystrom approximation of the symmetric positive semidefinite
        operator ``apply`` (a P x l block -> A times it, summed over ranks), in the dtype and
        on the device of ``like`` (a P-vector). None where the sketch's core is not positive
        definite even after the shift (then CG runs unpreconditioned)."""
        p = like.numel()
        rank = min(rank, p)
        gen = torch.Generator().manual_seed(SEED)
        omega = torch.randn(p, rank, generator=gen, dtype=torch.float64)
        omega = torch.linalg.qr(omega.to(like))[0]
        y = apply(omega)
        nu = p ** 0.5 * torch.finfo(y.dtype).eps * float(torch.linalg.matrix_norm(y, 2))
        y = y + nu * omega
        core = omega.T @ y
        factor, info = torch.linalg.cholesky_ex((core + core.T) / 2)
        if int(info) != 0:
            return None
        b = torch.linalg.solve_triangular(factor, y.T, upper=False).T       # Y_nu L^-T
        u, sigma, _ = torch.linalg.svd(b, full_matrices=False)
        return cls(u, torch.clamp(sigma ** 2 - nu, min=0.0))

    def inverse(self, damping: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """v -> P^-1 v, the preconditioner of A + ``damping`` I (eq. 5.3 above)."""
        u, scale = self.u, (self.lam[-1] + damping) / (self.lam + damping)

        def apply(v: torch.Tensor) -> torch.Tensor:
            w = u.T @ v
            return v + u @ ((scale - 1) * w)

        return apply
