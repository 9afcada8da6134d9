"""The plain-PINN step of step_cost.py in DeepXDE (PyTorch backend): run by the DeepXDE
environment's Python (benchmarks/setup-deepxde.sh), not by the project's.

    benchmarks/.venv-deepxde/bin/python benchmarks/deepxde_step.py --network msff --points N

Same problem (paper 2D case, lifted form (4.8)), points (N interior, N/10 boundary), float32,
Adam, and the same network: DeepXDE's own FNN for the MLP (8 x 64 tanh, Glorot normal); for
Ms-FF (2 maps, sigma = 1, 1/eps, 64 features, 2 x 128 tanh), whose PyTorch version DeepXDE
lacks, parallel_ms's MsFourierNet inside a DeepXDE network (deepxde_train.ProjectNet; DeepXDE
computes its derivatives). Prints one JSON line: seconds per ``model.train``
iteration after warm-up, as a DeepXDE user would see it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ["DDE_BACKEND"] = "pytorch"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import deepxde as dde  # noqa: E402
import torch  # noqa: E402

from deepxde_peer import network  # noqa: E402
from deepxde_train import ProjectNet, lifted_residual  # noqa: E402
from parallel_ms.problems import get_case  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network", choices=("msff", "mlp"), required=True)
    p.add_argument("--points", type=int, required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    problem = get_case("paper-2d")
    geom = dde.geometry.Rectangle([0, 0], [1, 1])
    bc = dde.icbc.DirichletBC(geom, lambda x: 0, lambda x, on: on)
    data = dde.data.PDE(geom, lifted_residual(problem), bc, num_domain=args.points,
                        num_boundary=args.points // 10, train_distribution="pseudo")
    net = ProjectNet(network(problem, 128, 64, 0, hard_bc=False, dtype="float32")) \
        if args.network == "msff" else dde.nn.FNN([2] + [64] * 8 + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    model.compile("adam", lr=1e-3)
    model.train(iterations=args.warmup, display_every=10 ** 9, verbose=0)
    t0 = time.perf_counter()
    model.train(iterations=args.steps, display_every=10 ** 9, verbose=0)
    print(json.dumps({"deepxde": dde.__version__, "torch": torch.__version__,
                      "threads": torch.get_num_threads(),
                      "seconds_per_step": (time.perf_counter() - t0) / args.steps}))


if __name__ == "__main__":
    main()
