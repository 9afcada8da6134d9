"""Build the network of a configuration (same initial parameters on every rank)."""
from __future__ import annotations

import torch
from torch import nn

from parallel_ms.config import NetworkConfig
from parallel_ms.errors import UserError
from parallel_ms.fine.derivatives import derivatives
from parallel_ms.fine.networks import (MLP, CoefficientEnriched, HardBoundary, MsFourierNet,
                                       TwoScaleNet)
from parallel_ms.problems import Problem

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_network(cfg: NetworkConfig, problem: Problem, outputs: int = 1) -> nn.Module:
    """MLP, Ms-FF (sigmas default to [1, 1/eps], paper §4.4) or two-scale network (the fast
    waves from the case), optionally with hard BCs;
    ``outputs`` = 2 for the two temperature drops of the block-tensor upscaling."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    inner = outputs
    if cfg.enrich == "coefficient":
        alpha, beta = problem.bounds
        if not 0 < alpha < beta:
            raise UserError(f"network.enrich = 'coefficient' needs K's bounds 0 < alpha < beta; "
                            f"case '{problem.name}' has ({alpha:g}, {beta:g}) (allowed: none)",
                            collective=True)
        outputs = 2 * inner
    if cfg.kind == "mlp":
        net: nn.Module = MLP(problem.dim, cfg.width, cfg.depth, outputs)
    elif cfg.kind == "two-scale":
        if problem.waves is None:
            raise UserError(f"network.kind = 'two-scale' needs a case with a known fast "
                            f"structure (a period or fast_waves); case '{problem.name}' has "
                            f"none (allowed: msff, mlp)", collective=True)
        net = TwoScaleNet(problem.dim, problem.eps, problem.waves, cfg.harmonics, cfg.width,
                          cfg.depth, outputs)
    else:
        sigmas = cfg.sigmas or [1.0, 1.0 / problem.eps]
        net = MsFourierNet(problem.dim, sigmas, cfg.features, cfg.width, cfg.depth, outputs,
                           generator=gen)
    if cfg.enrich == "coefficient":
        net = CoefficientEnriched(net, problem.k, problem.bounds, inner)
    if cfg.hard_bc:
        net = HardBoundary(net)
    return net.to(DTYPES[cfg.dtype])


class PINNForward(nn.Module):
    """What one training step evaluates (one forward call, so DistributedDataParallel can wrap
    it): v, grad v, lap v at the interior points, v at the boundary points and v at the coarse
    nodes (used by the compression operator near the boundary; empty for plain PINN)."""

    def __init__(self, net: nn.Module, mode: str = "jet") -> None:
        super().__init__()
        self.net = net
        self.mode = mode

    def forward(self, x_int: torch.Tensor, x_bnd: torch.Tensor, x_nodes: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        v, g, lap = derivatives(self.net, x_int, self.mode)
        v_bn = self.net(torch.cat([x_bnd, x_nodes]))
        return v, g, lap, v_bn[:len(x_bnd)], v_bn[len(x_bnd):]
