"""The subspace neural operator of paper 004 (Rudikov et al., "Locally subspace-informed neural
operators", ICLR 2026): a small U-Net mapping a neighbourhood's coefficient patch (log10 K on the
(2m+1)^2 grid of :mod:`parallel_ms.multiscale.patches`) to L vectors on the grid whose span
approximates the span of the L first local GMsFEM eigenvectors, and the subspace-alignment loss
it is trained with.

Subspace-alignment loss (paper 004's L_SAL; Fanaskov et al., "Deep learning for subspace
regression", arXiv 2509.23249): with V an orthonormal basis of the target span and Q one of the
predicted span (a reduced QR of the predictions),

    L_SAL = k - ||V^T Q||_F^2 = sum_i sin^2 theta_i,

theta_i the principal angles between the two k-dimensional spans. It depends on the spans
alone: invariant to the sign, order and any invertible recombination of the predicted vectors
and of the targets.

Inner product: the Euclidean one of the nodal values on closure(omega) (the nodes of the mask).
On the uniform grid this is h^2 times a lumped L2 inner product. The S_omega (K~-weighted)
inner product was not chosen: with contrast 10^2-10^4 its weights, and so the angles, would be
dominated by the few high-conductivity nodes, leaving errors in the background, where the
energy of the basis functions lives, almost unseen by the loss; it would also need a per-sample
sparse Cholesky factor inside the loss. Both losses vanish exactly when the spans agree.

The constant is an exact eigenvector of the Neumann problem (A_omega 1 = 0, lambda_1 = 0): it is
the first basis vector of every predicted span, and the network predicts the other L - 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: the network sees (log10 K - LOG_K_SHIFT) / LOG_K_SCALE: K in [1, 1e4] -> [-1, 1]
LOG_K_SHIFT, LOG_K_SCALE = 2.0, 2.0


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())


class SubspaceUNet(nn.Module):
    """U-Net on the node grid (size = 2^k + 1): ``levels`` stride-2 coarsenings map
    2^k + 1 -> 2^(k-1) + 1 nodes per direction (every other node), bilinear interpolation with
    ``align_corners`` maps them back exactly onto the finer nodes, channels double per level.

    Input (B, 1, s, s) log10 K; output (B, count, s, s): the constant on the mask followed by
    ``count - 1`` predicted vectors, zero outside the mask (not orthonormalised). The network
    also sees the node coordinates and the mask (its position within omega matters to the
    eigenvectors; convolutions alone are translation-equivariant).
    """

    def __init__(self, mask: torch.Tensor, count: int, width: int = 12, levels: int = 2) -> None:
        super().__init__()
        size = mask.shape[-1]
        if count < 2 or (size - 1) % 2 ** levels:
            raise ValueError(f"count = {count} (allowed: >= 2), grid {size} (allowed: "
                             f"2^k + 1 with k >= levels = {levels})")
        self.hyper = {"count": count, "width": width, "levels": levels}
        self.register_buffer("mask", mask.to(torch.bool))
        line = torch.linspace(-1.0, 1.0, size)
        self.register_buffer("frame", torch.stack([*torch.meshgrid(line, line, indexing="xy"),
                                                   mask.to(line.dtype)])[None])
        widths = [width * 2 ** level for level in range(levels + 1)]
        self.down = nn.ModuleList([_block(1 + self.frame.shape[1], widths[0])] + [
            _block(widths[i - 1], widths[i], stride=2) for i in range(1, levels + 1)])
        self.up = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i])
                                 for i in reversed(range(levels))])
        # no bias: a constant added to an output lies in the span already (the constant is
        # basis vector 1), so the loss would not depend on it
        self.head = nn.Conv2d(widths[0], count - 1, 1, bias=False)

    def forward(self, log_k: torch.Tensor) -> torch.Tensor:
        frame = self.frame.to(log_k.dtype).expand(len(log_k), -1, -1, -1)
        x = torch.cat([(log_k - LOG_K_SHIFT) / LOG_K_SCALE, frame], dim=1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = block(torch.cat([x, skip], dim=1))
        mask = self.mask.to(x.dtype)
        constant = mask.expand(len(x), 1, -1, -1)
        return torch.cat([constant, self.head(x) * mask], dim=1)


def orthonormal_basis(vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis (Euclidean, on the mask's nodes) of the span of each sample's
    vectors: (B, k, s, s) -> Q (B, n_mask, k), by a reduced QR (differentiable where the
    vectors are linearly independent)."""
    return torch.linalg.qr(vectors[:, :, mask].transpose(1, 2)).Q


def subspace_loss(predicted: torch.Tensor, target: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """L_SAL = k - ||V^T Q||_F^2 = sum of sin^2 of the principal angles between the spans of
    ``predicted`` and ``target`` (B, k, s, s), per sample (B,); in [0, k]."""
    V = orthonormal_basis(target, mask).detach()
    Q = orthonormal_basis(predicted, mask)
    return target.shape[1] - (V.transpose(1, 2) @ Q).square().sum(dim=(1, 2))


def principal_angles(predicted: torch.Tensor, target: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """The principal angles (radians, ascending) between the spans, (B, k): arccos of the
    singular values of V^T Q."""
    V, Q = orthonormal_basis(target, mask), orthonormal_basis(predicted, mask)
    cosines = torch.linalg.svdvals(V.transpose(1, 2) @ Q).clamp(max=1.0)
    return torch.arccos(cosines)


def save_operator(path: Path, model: SubspaceUNet, patch: dict[str, Any]) -> None:
    """The model's weights, its hyper-parameters and the patch it was trained on
    (``patch``: cells, refinement, quadrature_degree) in one file (its folder created if
    missing)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper": model.hyper, "patch": patch, "mask": model.mask.cpu(),
                "state": {k: v.cpu() for k, v in model.state_dict().items()}}, path)


def load_operator(path: Path) -> tuple[SubspaceUNet, dict[str, Any]]:
    """The model saved by :func:`save_operator` (on the CPU) and its patch description."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = SubspaceUNet(saved["mask"], **saved["hyper"])
    model.load_state_dict(saved["state"])
    return model, saved["patch"]


@torch.no_grad()
def predict_bases(model: nn.Module, log_k: torch.Tensor, mask: torch.Tensor,
                  batch: int = 4096) -> torch.Tensor:
    """The operator's basis construction: orthonormal bases of the predicted local spaces of
    the patches ``log_k`` (N, 1, s, s): a batched forward and QR, (N, n_mask, L)."""
    return torch.cat([orthonormal_basis(model(chunk), mask) for chunk in log_k.split(batch)])
