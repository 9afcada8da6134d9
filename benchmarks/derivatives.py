"""Derivative kernels for the PINN residual: one training step (v, grad v, lap v at M points,
residual loss, backward) with double-backward autograd vs the forward-jet path, on the paper's
2D network (Ms-FF, K = 2 maps, m = 64 features, 2 x 128 tanh), compared with the matmul
roofline of this machine measured in the same run.

    .venv/bin/python benchmarks/derivatives.py [--points 25000] [--dtype float32] [--json F]

FLOPs counted: the matrix products of the jet step (forward, and 2x for the backward); the
roofline time is those FLOPs at the rate torch.matmul reaches here on the same shapes.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from common import best_time, machine, write_json
from parallel_ms.fine.derivatives import derivatives
from parallel_ms.fine.networks import MsFourierNet


def step(net: torch.nn.Module, x: torch.Tensor, mode: str) -> None:
    net.zero_grad(set_to_none=True)
    v, g, lap = derivatives(net, x, mode)
    ((lap + g.sum(1) + v) ** 2).mean().backward()


def jet_flops(net: MsFourierNet, m_points: int) -> float:
    """Matrix-product FLOPs of one jet step: forward GEMMs x 3 (forward + backward)."""
    k, feats, d = net.B.shape
    rows_hidden = k * m_points * (d + 2)
    fwd = sum(2 * rows_hidden * layer.in_features * layer.out_features for layer in net.hidden)
    fwd += 2 * m_points * (d + 2) * net.output.in_features * net.output.out_features
    return 3.0 * fwd


def matmul_rate(rows: int, width: int, dtype: torch.dtype, repeats: int) -> float:
    """FLOP/s of (rows x width) @ (width x width), the shape that dominates the step."""
    a = torch.randn(rows, width, dtype=dtype)
    b = torch.randn(width, width, dtype=dtype)
    t = best_time(lambda: a @ b, repeats)
    return 2.0 * rows * width * width / t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=25000)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads "
                   "(default: all cores; one process)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    net = MsFourierNet(2, (1.0, 10.0), features=64, width=128, depth=2).to(dtype)
    x = torch.rand(args.points, 2, dtype=dtype)
    t_auto = best_time(lambda: step(net, x, "autograd"), args.repeats)
    t_jet = best_time(lambda: step(net, x, "jet"), args.repeats)
    t_comp = best_time(lambda: step(net, x, "jet-compiled"), args.repeats)
    flops = jet_flops(net, args.points)
    rows = net.B.shape[0] * args.points * 4
    rate = matmul_rate(rows, 128, dtype, args.repeats)
    roofline = flops / rate
    mach = machine()
    print(f"machine: {mach['cpu']}, {mach['cores']} cores, torch {mach['torch']} "
          f"({mach['torch_threads']} threads), device {mach['device']}")
    print(f"network: Ms-FF 2 maps x 64 features, 2 x 128 tanh; {args.points} points; {args.dtype}")
    print(f"{'path':<28}{'time/step (s)':>14}{'GFLOP/s':>10}{'vs roofline':>13}")
    print(f"{'autograd (double backward)':<28}{t_auto:>14.4f}{'':>10}{t_auto / roofline:>12.2f}x")
    print(f"{'jet (forward derivatives)':<28}{t_jet:>14.4f}{flops / t_jet / 1e9:>10.1f}"
          f"{t_jet / roofline:>12.2f}x")
    print(f"{'jet + torch.compile':<28}{t_comp:>14.4f}{flops / t_comp / 1e9:>10.1f}"
          f"{t_comp / roofline:>12.2f}x")
    print(f"{'matmul roofline':<28}{roofline:>14.4f}{rate / 1e9:>10.1f}{1.0:>12.2f}x")
    print(f"speed-up over autograd: jet {t_auto / t_jet:.2f}x, jet + torch.compile "
          f"{t_auto / t_comp:.2f}x   (targets: >= 2.5x and <= 1.5x the roofline)")
    write_json(args.json, {"machine": mach, "points": args.points, "dtype": args.dtype,
                           "autograd_s": t_auto, "jet_s": t_jet, "jet_compiled_s": t_comp,
                           "roofline_s": roofline, "jet_compiled_vs_roofline": t_comp / roofline,
                           "jet_gflops": flops / t_jet / 1e9, "matmul_gflops": rate / 1e9,
                           "speedup": t_auto / t_jet, "speedup_compiled": t_auto / t_comp, "jet_vs_roofline": t_jet / roofline})


if __name__ == "__main__":
    main()
