"""Networks and the two derivative paths (fast forward jets vs double-backward autograd)."""
import pytest
import torch

from parallel_ms.fine.derivatives import derivatives
from parallel_ms.fine.networks import (MLP, CoefficientEnriched, HardBoundary, MsFourierNet,
                                       TwoScaleNet)
from parallel_ms.problems import get_case
from parallel_ms.problems.problem import axis_waves

PERIOD = {1: (1.0,), 2: (2.0, 1.0)}  # of K_eps in units of eps: paper-1d, paper-2d
WAVES = {d: axis_waves(p) for d, p in PERIOD.items()}

NETWORKS = {
    "mlp": lambda d: MLP(d, 24, 4),
    "msff": lambda d: MsFourierNet(d, (1.0, 10.0), 16, 32, 2),
    "hard-msff": lambda d: HardBoundary(MsFourierNet(d, (1.0, 5.0), 16, 32, 2)),
    "hard-mlp": lambda d: HardBoundary(MLP(d, 24, 3)),
    "two-scale": lambda d: TwoScaleNet(d, 0.05, WAVES[d], 2, 16, 2),
    "hard-two-scale": lambda d: HardBoundary(TwoScaleNet(d, 0.1, WAVES[d], 3, 16, 2)),
    "hard-enriched-msff": lambda d: HardBoundary(_enriched(MsFourierNet(d, (1.0, 5.0), 16, 32, 2,
                                                                        out=2), d)),
}


def _enriched(net: torch.nn.Module, dim: int) -> CoefficientEnriched:
    """``net`` (two outputs) enriched with the conductivity of the high-contrast case (a
    contrast of 10 and wide interfaces: derivatives of g of O(10^2), not O(10^6))."""
    problem = get_case(f"high-contrast-{dim}d", contrast=10.0, width=0.5)
    return CoefficientEnriched(net, problem.k, problem.bounds)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("name", list(NETWORKS))
def test_fast_derivatives_agree_with_autograd(name, dim, dtype, tol):
    torch.manual_seed(3)
    net = NETWORKS[name](dim).to(dtype)
    x = torch.rand(300, dim, dtype=dtype)
    ref = derivatives(net, x, "autograd")
    fast = derivatives(net, x, "jet")
    for a, b, what in zip(ref, fast, ("v", "grad v", "lap v")):
        assert a.shape == b.shape, what
        rel = torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a)  # over all points
        assert rel < tol, (what, float(rel))


def test_fast_path_backpropagates_like_autograd():
    torch.manual_seed(0)
    net = MsFourierNet(2, (1.0, 10.0), 8, 16, 2).double()
    x = torch.rand(50, 2, dtype=torch.float64)
    grads = []
    for mode in ("autograd", "jet"):
        net.zero_grad()
        v, g, lap = derivatives(net, x, mode)
        ((lap + g.sum(1)) ** 2 + v ** 2).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-11, atol=1e-11 * grads[0].abs().max())


def test_msff_shares_hidden_layers_across_maps():
    """K maps through the SAME hidden layers: parameters independent of K except the output."""
    two = MsFourierNet(2, (1.0, 10.0), features=64, width=128, depth=2)
    three = MsFourierNet(2, (1.0, 10.0, 30.0), features=64, width=128, depth=2)
    hidden = 128 * 128 + 128 + 128 * 128 + 128
    assert sum(p.numel() for p in two.parameters()) == hidden + 2 * 128 + 1
    assert sum(p.numel() for p in three.parameters()) == hidden + 3 * 128 + 1
    assert two.B.shape == (2, 64, 2) and not two.B.requires_grad


@pytest.mark.parametrize("dim", [1, 2])
def test_two_scale_network_is_slow_plus_eps_times_periodic_fast(dim):
    """v = N_0(x) + eps N_1(x, x/eps): with the slow network's output and the fast network's
    slow input switched off, v repeats with the period of K_eps (eps p_i along axis i) and is
    eps times a function of O(1); the slow network alone is unchanged by the fast variable."""
    torch.manual_seed(1)
    eps = 0.01
    net = TwoScaleNet(dim, eps, WAVES[dim], harmonics=2, width=16).double()
    x = torch.rand(200, dim, dtype=torch.float64) * 0.5
    with torch.no_grad():
        slow_only = net(x) - eps * net.fast(torch.cat([2 * x - 1, torch.cos(x @ net.omega.T),
                                                       torch.sin(x @ net.omega.T)], -1))
        assert torch.allclose(slow_only, net.slow(2 * x - 1), rtol=0, atol=1e-14)
        net.slow.output.weight.zero_()
        net.slow.output.bias.zero_()
        net.fast.hidden[0].weight[:, :dim] = 0
        v = net(x)
        assert 0.1 * eps < float(v.abs().max()) < 10 * eps
        for i in range(dim):
            shift = torch.zeros(dim, dtype=torch.float64)
            shift[i] = eps * PERIOD[dim][i]
            assert torch.allclose(net(x + shift), v, rtol=0, atol=1e-12)
            if PERIOD[dim][i] > 1:        # half the period is not a period
                shift[i] = eps
                assert not torch.allclose(net(x + shift), v, rtol=0, atol=1e-6)


def test_hard_boundary_vanishes_on_the_boundary():
    net = HardBoundary(MLP(2, 8, 2)).double()
    x = torch.tensor([[0.0, 0.3], [1.0, 0.7], [0.2, 0.0], [0.5, 1.0]], dtype=torch.float64)
    assert torch.all(net(x) == 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["msff", "hard-enriched-msff"])
def test_compiled_jet_agrees_with_autograd(name):
    """torch.compile of the jet path (a ~30 s compile, so marked slow); the enrichment's jet
    runs eagerly inside it."""
    torch.manual_seed(5)
    net = NETWORKS[name](2).double()
    x = torch.rand(200, 2, dtype=torch.float64)
    for a, b in zip(derivatives(net, x, "autograd"), derivatives(net, x, "jet-compiled")):
        assert torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a) < 1e-12


def test_two_scale_network_takes_the_case_s_fast_waves():
    """Periodic: the axes over the period cell; quasi-periodic: the incommensurate waves
    (harmonic-minor); no known fast structure: a one-line error."""
    from parallel_ms.config import NetworkConfig
    from parallel_ms.errors import UserError
    from parallel_ms.fine.model import build_network
    from parallel_ms.problems import get_case
    cfg = NetworkConfig(kind="two-scale", dtype="float64")
    with pytest.raises(UserError, match=r"network.kind = 'two-scale' needs a case with a "
                       r"known fast structure \(a period or fast_waves\); case "
                       r"'random-inclusions-2d' has none") as err:
        build_network(cfg, get_case("random-inclusions-2d"))
    assert err.value.collective and "\n" not in str(err.value)
    net = build_network(cfg, get_case("paper-2d", eps=0.05))
    expected = [[2 * torch.pi / (0.05 * 2), 0], [0, 2 * torch.pi / 0.05]]   # periods 2 eps, eps
    assert torch.allclose(net.omega, torch.tensor(expected, dtype=torch.float64))
    cfg.harmonics = 2
    net = build_network(cfg, get_case("quasi-periodic-2d"))
    s = 2 ** 0.5
    expected = [[1, 0], [2, 0], [s, 0], [2 * s, 0], [0, 1], [0, 2]]
    assert torch.allclose(net.omega, 2 * torch.pi / 0.1 * torch.tensor(expected,
                                                                      dtype=torch.float64))


@pytest.mark.parametrize("dim", [1, 2])
def test_enriched_network_is_n0_plus_normalised_log_k_times_n1(dim):
    """v = N_0 + g N_1 with g = log(K/alpha) / log(beta/alpha): g is 0 where K is the
    background's alpha and 1 where it reaches beta (the inclusions' centres, up to the smoothing)."""
    torch.manual_seed(2)
    net = _enriched(MLP(dim, 16, 2, out=2), dim).double()
    x = torch.rand(100, dim, dtype=torch.float64)
    g = net.enrichment(x)
    with torch.no_grad():
        n = net.net(x)
        assert torch.allclose(net(x), n[:, 0] + g * n[:, 1], rtol=0, atol=1e-15)
    sharp = get_case(f"high-contrast-{dim}d", contrast=10.0)       # the case's own interfaces
    net = CoefficientEnriched(net.net, sharp.k, sharp.bounds)
    centre = torch.full((1, dim), sharp.eps / 2, dtype=torch.float64)
    assert float(net.enrichment(torch.zeros(1, dim, dtype=torch.float64))) < 1e-6
    assert 1 - 1e-6 < float(net.enrichment(centre)) <= 1.0
