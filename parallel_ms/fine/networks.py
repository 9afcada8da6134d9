"""Networks of the paper (§4.4): tanh MLP, multiscale Fourier-feature network (Ms-PINN), a
two-scale network N_0(x) + eps N_1(x, x/eps) (paper 001 §4), a coefficient-enriched wrapper
v = N_0 + g N_1 (g from K_eps) and a hard-boundary wrapper v = l(x) N(x). Each ``forward``
gives v(x); each ``jet`` gives (v, grad v, lap v) by the forward-jet path of :mod:`.jet`."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from parallel_ms.fine.jet import Jet


def _glorot(layer: nn.Linear) -> nn.Linear:
    nn.init.xavier_normal_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """x -> tanh hidden layers -> linear output (Glorot initialisation)."""

    def __init__(self, dim: int, width: int = 64, depth: int = 8, out: int = 1) -> None:
        super().__init__()
        sizes = [dim] + [width] * depth
        self.hidden = nn.ModuleList(_glorot(nn.Linear(a, b)) for a, b in zip(sizes, sizes[1:]))
        self.output = _glorot(nn.Linear(width, out))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.tanh(layer(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.features(x)).squeeze(-1)

    def features_jet(self, j: Jet) -> Jet:
        for layer in self.hidden:
            j = j.linear(layer).tanh()
        return j

    def jet_of(self, j: Jet) -> Jet:
        """The jet of x -> N(a(x)) from the jet of the inputs a."""
        return _squeeze(self.features_jet(j).linear(self.output))

    def jet(self, x: torch.Tensor) -> Jet:
        return self.jet_of(Jet.of_input(x))


class MsFourierNet(nn.Module):
    """Multiscale Fourier-feature network (paper §4.4, method.md §7).

    K feature maps F_k(x) = [cos(2 pi B_k x), sin(2 pi B_k x)], B_k in R^{m x d} with entries
    ~ N(0, sigma_k^2) (fixed, not trained); every map goes through the SAME tanh hidden layers;
    the K last hidden states are concatenated and a linear layer gives v.
    """

    def __init__(self, dim: int, sigmas: Sequence[float] = (1.0, 10.0), features: int = 64,
                 width: int = 128, depth: int = 2, out: int = 1,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        b = torch.stack([torch.randn(features, dim, generator=generator) * s for s in sigmas])
        self.register_buffer("B", 2 * math.pi * b)  # (K, m, d), 2 pi folded in
        sizes = [2 * features] + [width] * depth
        self.hidden = nn.ModuleList(_glorot(nn.Linear(a, c)) for a, c in zip(sizes, sizes[1:]))
        self.output = _glorot(nn.Linear(width * len(sigmas), out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.einsum("kmd,nd->knm", self.B.to(x.dtype), x)  # (K, M, m)
        h = torch.cat([torch.cos(z), torch.sin(z)], -1)
        for layer in self.hidden:
            h = torch.tanh(layer(h))
        return self.output(torch.cat(list(h), -1)).squeeze(-1)

    def jet(self, x: torch.Tensor) -> Jet:
        n_maps, m, d = self.B.shape
        big_b = self.B.to(x.dtype)
        # all K maps stacked along the point axis: one matrix product per layer for all maps
        z = torch.einsum("kmd,nd->knm", big_b, x).reshape(n_maps * x.shape[0], m)
        dz = big_b.permute(2, 0, 1)[:, :, None, :].expand(d, n_maps, x.shape[0], m)
        j = Jet(z, dz.reshape(d, n_maps * x.shape[0], m), torch.zeros_like(z)).sin_cos()
        for layer in self.hidden:
            j = j.linear(layer).tanh()
        split = lambda t: torch.cat(t.split(x.shape[0], dim=-2), -1)  # noqa: E731  (K*M,w)->(M,K*w)
        return _squeeze(Jet(split(j.value), split(j.grad), split(j.lap)).linear(self.output))


class TwoScaleNet(nn.Module):
    """Two-scale network v(x) = N_0(x) + eps N_1(x, x/eps): the form of the two-scale expansion
    u_0(x) + eps u_1(x, x/eps), u_1 a Fourier series in the fast variable y = x/eps
    (paper 001 §2 and §4, whose approximation of u_eps is built the same way).

    N_0 is a tanh MLP of the slow variable 2x - 1; N_1 a tanh MLP of the slow variable and of the
    fast variable on its torus: for each fast wave vector k_j (units of 1/eps: e_i / p_i for a
    period cell p, the axes for a locally periodic a(x, x/eps), incommensurate ones for a
    quasi-periodic medium; :attr:`Problem.waves`) and harmonic h = 1..H, cos and sin of
    2 pi h k_j . x / eps. The waves are not learned, and the fast part starts O(eps) in value
    and O(1) in gradient, as in the expansion.
    """

    def __init__(self, dim: int, eps: float, waves: Sequence[Sequence[float]],
                 harmonics: int = 1, width: int = 64, depth: int = 2, out: int = 1) -> None:
        super().__init__()
        k = torch.as_tensor(waves, dtype=torch.float64).reshape(-1, dim)
        h = torch.arange(1, harmonics + 1, dtype=torch.float64)
        omega = 2 * math.pi * (k[:, None, :] * h[None, :, None]).reshape(-1, dim) / eps
        self.register_buffer("omega", omega)  # (m H, d): the fast phases are omega x
        self.eps = eps
        self.slow = MLP(dim, width, depth, out)
        self.fast = MLP(dim + 2 * len(omega), width, depth, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x @ self.omega.to(x.dtype).T
        fast = self.fast(torch.cat([2 * x - 1, torch.cos(z), torch.sin(z)], -1))
        return self.slow(2 * x - 1) + self.eps * fast

    def jet(self, x: torch.Tensor) -> Jet:
        omega = self.omega.to(x.dtype)
        m = x.shape[0]
        slow = Jet.of_input(x).scaled(2.0, -1.0)
        phase = Jet(x @ omega.T, omega.T[:, None, :].expand(x.shape[1], m, omega.shape[0]),
                    torch.zeros(m, omega.shape[0], dtype=x.dtype, device=x.device))
        fast = self.fast.jet_of(slow.concat(phase.sin_cos()))
        return self.slow.jet_of(slow).plus(fast.scaled(self.eps))


class CoefficientEnriched(nn.Module):
    """v(x) = N_0(x) + g(x) N_1(x), g = log(K_eps / alpha) / log(beta / alpha) in [0, 1] the
    normalised log-conductivity (alpha <= K_eps <= beta, the case's bounds) and N_0, N_1 the
    two outputs of ``net``: an input built from the known coefficient, as the cusp-capturing
    PINN adds the level set of an interface (Tseng, Lin, Hu & Lai, J. Comput. Phys. 491, 2023).
    Where K jumps across a thin interface, g does too, and v can follow u's change of slope
    there (N_1 vanishing on the interface) with smooth N_0, N_1; a smooth network cannot resolve
    that layer at the interfaces' width. The jet of g (value, gradient, Laplacian) comes from
    torch.func transforms of the case's formula; it does not depend on the parameters."""

    def __init__(self, net: nn.Module, k: Callable[[torch.Tensor], torch.Tensor],
                 bounds: tuple[float, float], outputs: int = 1) -> None:
        super().__init__()
        self.net, self.k, self.outputs = net, k, outputs
        self.alpha, self.log_ratio = bounds[0], math.log(bounds[1] / bounds[0])

    def enrichment(self, x: torch.Tensor) -> torch.Tensor:
        """g at the points, (M,)."""
        return torch.log(self.k(x) / self.alpha) / self.log_ratio

    @torch.compiler.disable
    def enrichment_jet(self, x: torch.Tensor) -> Jet:
        """(g, grad g, lap g) at the points as a one-feature jet, by torch.func transforms of
        one point (they nest in the transforms over the parameters of a Gauss–Newton step; run
        eagerly under ``jet-compiled``, whose tracing does not take them)."""
        single = lambda y: self.enrichment(y[None])[0]  # noqa: E731
        grad = torch.func.vmap(torch.func.grad(single))(x)
        lap = torch.func.vmap(torch.func.hessian(single))(x).diagonal(dim1=1, dim2=2).sum(-1)
        return Jet(self.enrichment(x)[:, None], grad.T[..., None], lap[:, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, o = self.net(x), self.outputs
        v = n[:, :o] + self.enrichment(x)[:, None] * n[:, o:]
        return v.squeeze(-1)

    def jet(self, x: torch.Tensor) -> Jet:
        n, o = self.net.jet(x), self.outputs
        part = lambda s: Jet(n.value[:, s], n.grad[..., s], n.lap[:, s])  # noqa: E731
        return _squeeze(part(slice(0, o)).plus(self.enrichment_jet(x).times(part(slice(o, None)))))


class HardBoundary(nn.Module):
    """v(x) = l(x) N(x) with l = 0 on the boundary of (0,1)^d:
    l(x) = prod_i 4 x_i (1 - x_i) (the paper's 4x(1-x) in 1D)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @staticmethod
    def factor_jet(x: torch.Tensor) -> Jet:
        j = Jet.of_input(x)
        one_d = [Jet(4 * x[:, i:i + 1] * (1 - x[:, i:i + 1]),
                     j.grad[:, :, i:i + 1] * (4 - 8 * x[:, i:i + 1]),
                     torch.full_like(x[:, i:i + 1], -8.0)) for i in range(x.shape[1])]
        out = one_d[0]
        for f in one_d[1:]:
            out = out.times(f)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net(x)
        factor = torch.prod(4 * x * (1 - x), dim=-1)
        return (factor if n.dim() == 1 else factor[:, None]) * n

    def jet(self, x: torch.Tensor) -> Jet:
        n = self.net.jet(x)
        if n.value.dim() == 1:
            n = Jet(n.value[:, None], n.grad[..., None], n.lap[:, None])
        return _squeeze(self.factor_jet(x).times(n))


def _squeeze(j: Jet) -> Jet:
    return Jet(j.value.squeeze(-1), j.grad.squeeze(-1), j.lap.squeeze(-1))
