"""Networks and the two derivative paths (fast forward jets vs double-backward autograd)."""
import pytest
import torch

from parallel_ms.fine.derivatives import derivatives
from parallel_ms.fine.networks import MLP, HardBoundary, MsFourierNet

NETWORKS = {
    "mlp": lambda d: MLP(d, 24, 4),
    "msff": lambda d: MsFourierNet(d, (1.0, 10.0), 16, 32, 2),
    "hard-msff": lambda d: HardBoundary(MsFourierNet(d, (1.0, 5.0), 16, 32, 2)),
    "hard-mlp": lambda d: HardBoundary(MLP(d, 24, 3)),
}


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


def test_hard_boundary_vanishes_on_the_boundary():
    net = HardBoundary(MLP(2, 8, 2)).double()
    x = torch.tensor([[0.0, 0.3], [1.0, 0.7], [0.2, 0.0], [0.5, 1.0]], dtype=torch.float64)
    assert torch.all(net(x) == 0)


@pytest.mark.slow
def test_compiled_jet_agrees_with_autograd():
    """torch.compile of the jet path (a ~30 s compile, so marked slow)."""
    torch.manual_seed(5)
    net = MsFourierNet(2, (1.0, 10.0), 16, 32, 2).double()
    x = torch.rand(200, 2, dtype=torch.float64)
    for a, b in zip(derivatives(net, x, "autograd"), derivatives(net, x, "jet-compiled")):
        assert torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a) < 1e-12
