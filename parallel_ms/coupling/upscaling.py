"""Upscaling K~[v] from the network, its coercivity safeguard and its linearisation.

Two variants, with one interface used by :class:`~parallel_ms.coupling.coupling.Coupling`:

* :class:`ScalarUpscaling`, the paper's (4.10): K~_11 = (1/M) sum_i K_i (d_1 v_i + 1), a global
  Monte-Carlo mean; kept between the Reuss and Voigt bounds of K_eps (harmonic <= K~_11 <=
  arithmetic mean over the points) by projection.
* :class:`BlockTensorUpscaling`, Algorithm 4.1 per block V_j with a two-output network
  v = (v_1, v_2) for the temperature drops w_i = v_i + x_i (4.7):

      T^j[c, i] = <d_c w_i>_{V_j},  F^j[c, i] = <K d_c w_i>_{V_j},  K~^j = F^j (T^j)^{-1},

  symmetrised and projected into the matrix bounds Reuss_j I <= K~^j <= Voigt_j I (its
  eigenvalues clipped into [Reuss_j, Voigt_j]).

Every mean is a sum of per-rank partial sums divided by the GLOBAL point count, so the values
are those of the serial run for the same global points. The derivative of the APPLIED (bounded)
coefficient with respect to grad v at the points, at the last measured v, is offered both ways:
``tangent(d grad_v)`` gives dK~ (global) and ``cotangent(g)`` gives this rank's share of
(dK~/d grad_v)^T g for g = dJ^/dK~ (zero through a clipped direction): <cotangent(g), grad_v>
is the surrogate whose autograd gradient is the adjoint part of the reduced gradient.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from mpi4py import MPI

from parallel_ms import parallel
from parallel_ms.coarse.blocks import block_index, tensor_from_averages
from parallel_ms.errors import UserError


class ScalarUpscaling:
    """K~ = K~_11 (times I, or with given K~_12, K~_22) by (4.10)."""

    outputs = 1

    def __init__(self, k_points: torch.Tensor, n_global: int, comm: MPI.Comm) -> None:
        self.k_points, self.n_global, self.comm = k_points, n_global, comm
        k = k_points.double().cpu().numpy()
        self.voigt = parallel.allreduce_sum(float(k.sum()), comm) / n_global
        self.reuss = n_global / parallel.allreduce_sum(float((1 / k).sum()), comm)

    def local(self, grad_v: torch.Tensor) -> torch.Tensor:
        """This rank's share of K~_11 (differentiable)."""
        return (self.k_points * (grad_v[:, 0] + 1)).sum() / self.n_global

    def measure(self, grad_v: torch.Tensor) -> float:
        """K~_11 before the bound (all ranks); also the point the derivatives expand at."""
        self._dim = grad_v.shape[1]
        self._k_raw = parallel.allreduce_sum(float(self.local(grad_v).detach()), self.comm)
        return self._k_raw

    def bound(self, k_raw: float) -> tuple[float, bool]:
        k = min(max(k_raw, self.reuss), self.voigt)
        return k, k != k_raw

    def passes_gradient(self) -> bool:
        """Is the bound's derivative nonzero at the last measured K~ (bound inactive)?"""
        return not self.bound(self._k_raw)[1]

    def tangent(self, d_grad_v: torch.Tensor) -> float:
        """dK~_11 (global) for a change d grad_v of grad v at this rank's points; zero while
        the bound is active (the applied K~ does not move)."""
        if not self.passes_gradient():
            return 0.0
        local = float((self.k_points * d_grad_v[:, 0]).sum())
        return parallel.allreduce_sum(local, self.comm) / self.n_global

    def jacobian(self, grad_v: torch.Tensor, params: list[torch.Tensor]) -> np.ndarray:
        """dK~_11/d params (global, flat (P,)) through grad_v's graph: one reverse pass and one
        all-reduce, instead of the per-point Jacobian of grad v; zero while the bound is
        active."""
        if not self.passes_gradient():
            return np.zeros(sum(p.numel() for p in params))
        with torch.enable_grad():
            grads = torch.autograd.grad(self.local(grad_v), params, retain_graph=True,
                                        materialize_grads=True)
        local = torch.cat([g.reshape(-1) for g in grads])
        return parallel.allreduce_sum(local.double().cpu().numpy(), self.comm)

    def cotangent(self, g: float) -> torch.Tensor:
        """(dK~_11/d grad_v)^T g at this rank's points, shape of grad v (M, d)."""
        out = torch.zeros((len(self.k_points), self._dim), dtype=self.k_points.dtype,
                          device=self.k_points.device)
        if self.passes_gradient():
            out[:, 0] = g * self.k_points / self.n_global
        return out

    @staticmethod
    def log_values(k: float, k_raw: float, active: bool) -> dict[str, Any]:
        return {"k11": k, "k11_raw": k_raw, "bound_active": active}


class BlockTensorUpscaling:
    """Algorithm 4.1 per block, in the training loop (two-output network)."""

    outputs = 2

    def __init__(self, points: np.ndarray, k_points: torch.Tensor, blocks: Sequence[int],
                 comm: MPI.Comm) -> None:
        self.comm = comm
        self.n = int(np.prod(blocks))
        block = block_index(np.asarray(points).reshape(-1, 2), blocks)
        counts = parallel.allreduce_sum(np.bincount(block, minlength=self.n), comm)
        if counts.min() == 0:
            raise UserError(f"coupling.blocks = {list(blocks)}: {int((counts == 0).sum())} "
                            f"block(s) hold no collocation point (allowed: fewer blocks or more "
                            f"sampling.interior points)", collective=True)
        k = k_points.double().cpu().numpy()
        self.voigt = parallel.allreduce_sum(np.bincount(block, k, self.n), comm) / counts
        self.reuss = counts / parallel.allreduce_sum(np.bincount(block, 1 / k, self.n), comm)
        self.block = torch.as_tensor(block, device=k_points.device)
        self.k_points = k_points
        self.inv_count = torch.as_tensor(1.0 / counts[block], dtype=k_points.dtype,
                                         device=k_points.device)

    def _drops(self, grad_v: torch.Tensor) -> torch.Tensor:
        """grad w_i = e_i + grad v_i at the points: (M, c, i)."""
        return grad_v + torch.eye(2, dtype=grad_v.dtype, device=grad_v.device)

    def _local_averages(self, d: torch.Tensor) -> np.ndarray:
        """This rank's shares of the block means <d>, <K d> of a field d (M, 2, 2)."""
        d = d.detach() * self.inv_count[:, None, None]
        both = torch.stack([d, d * self.k_points[:, None, None]])          # (2, M, 2, 2)
        sums = torch.zeros((2, self.n, 2, 2), dtype=d.dtype, device=d.device)
        sums.index_add_(1, self.block, both)
        return sums.double().cpu().numpy()

    def measure(self, grad_v: torch.Tensor) -> np.ndarray:
        """K~^j = F^j (T^j)^{-1} before the bound (all ranks): shape (blocks, 2, 2); also the
        point the derivatives expand at."""
        t, f = parallel.allreduce_sum(self._local_averages(self._drops(grad_v)), self.comm)
        self._t, self._k_raw = t, tensor_from_averages(t, f)
        return self._k_raw

    def _spectrum(self, k_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lam, q = np.linalg.eigh(0.5 * (k_raw + np.swapaxes(k_raw, -1, -2)))
        return lam, q, np.clip(lam, self.reuss[:, None], self.voigt[:, None])

    def bound(self, k_raw: np.ndarray) -> tuple[np.ndarray, int]:
        """Symmetrised K~ with its eigenvalues clipped into [Reuss_j, Voigt_j]; the number of
        blocks where the bound is active."""
        lam, q, clipped = self._spectrum(k_raw)
        k = q @ (clipped[..., None] * np.swapaxes(q, -1, -2))
        return k, int((clipped != lam).any(-1).sum())

    def passes_gradient(self) -> bool:
        """Does any eigenvalue of the last measured K~ lie inside its bounds?"""
        lam, _, clipped = self._spectrum(self._k_raw)
        return bool((clipped == lam).any())

    def _bound_derivative(self, g: np.ndarray) -> np.ndarray:
        """The derivative of the bound (symmetrisation, then the spectral clip, by the
        Daleckii-Krein formula) at the last measured K~, applied to g. The map is self-adjoint
        in the Frobenius product, so the same function pulls g = dJ^/dK~_applied back."""
        lam, q, clipped = self._spectrum(self._k_raw)
        free = ((lam > self.reuss[:, None]) & (lam < self.voigt[:, None])).astype(float)
        dl = lam[:, :, None] - lam[:, None, :]
        same = np.abs(dl) <= 1e-13 * np.abs(lam).max()
        gamma = np.where(same, 0.5 * (free[:, :, None] + free[:, None, :]),
                         (clipped[:, :, None] - clipped[:, None, :]) / np.where(same, 1.0, dl))
        qt = np.swapaxes(q, -1, -2)
        gs = 0.5 * (g + np.swapaxes(g, -1, -2))
        return q @ (gamma * (qt @ gs @ q)) @ qt

    def tangent(self, d_grad_v: torch.Tensor) -> np.ndarray:
        """dK~^j (global, (blocks, 2, 2)) of the applied tensor for a change d grad_v
        (M, 2, 2) at this rank's points: dK~_raw = (dF - K~_raw dT) T^-1, then the bound's
        derivative."""
        dt, df = parallel.allreduce_sum(self._local_averages(d_grad_v), self.comm)
        dk_raw = np.linalg.solve(np.swapaxes(self._t, -1, -2),
                                 np.swapaxes(df - self._k_raw @ dt, -1, -2)).swapaxes(-1, -2)
        return self._bound_derivative(dk_raw)

    def cotangent(self, g: np.ndarray) -> torch.Tensor:
        """(dK~/d grad_v)^T g at this rank's points (M, 2, 2): with G the bound's derivative
        applied to g, <G, dK~_raw> = <G T^-T, dF> - <K~^T G T^-T, dT>, one weight matrix
        per point."""
        a = self._bound_derivative(g) @ np.linalg.inv(np.swapaxes(self._t, -1, -2))
        b = np.swapaxes(self._k_raw, -1, -2) @ a
        as_t = lambda x: torch.as_tensor(x, dtype=self.k_points.dtype,  # noqa: E731
                                         device=self.k_points.device)
        a_t, b_t = as_t(a)[self.block], as_t(b)[self.block]
        return (self.k_points[:, None, None] * a_t - b_t) * self.inv_count[:, None, None]

    @staticmethod
    def log_values(k: np.ndarray, k_raw: np.ndarray, active: int) -> dict[str, Any]:
        """Block means of the applied entries (the full tensors are in the checkpoint)."""
        mean = k.mean(0)
        return {"k11": float(mean[0, 0]), "k12": float(mean[0, 1]), "k22": float(mean[1, 1]),
                "k11_raw": float(k_raw[:, 0, 0].mean()), "bound_active": active}
