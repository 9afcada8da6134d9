"""Train a case's PINN with DeepXDE (PyTorch backend) for a fixed wall-clock budget, saving the
network every --every seconds: the peer of the time-to-accuracy comparison (results §4.3, "The
paper's network"). Run by the DeepXDE environment's Python (benchmarks/setup-deepxde.sh), not
by the project's; benchmarks/deepxde_peer.py drives it and measures the saved networks'
errors against the project's reference.

    benchmarks/.venv-deepxde/bin/python benchmarks/deepxde_train.py --optimizer lbfgs \\
        --budget 1800 --out runs/deepxde-peer/lbfgs [--case paper-2d --width 128 --features 64]
    ... --optimizer nncg --resume runs/deepxde-peer/lbfgs/snap-0900.pt --out ...

The problem is the lifted form (4.8) of the case, -div(K grad u) = q + d_1 K, with the
project's own formulas (parallel_ms.problems) and the project's network (Ms-FF with the hard
boundary factor, same initialisation for the same seed) wrapped as a DeepXDE network, so that
DeepXDE computes the derivatives and runs its optimizers: ``lbfgs`` is Adam (--adam iterations,
lr 1e-3) then torch's L-BFGS through DeepXDE (its defaults, float64 as its docs advise);
``nncg`` is DeepXDE's NysNewton-CG (Rathore et al. 2024, its defaults but at most
--cg-iterations CG iterations a step: with its 1000 and its tolerance 1e-16, every step takes
1000 Hessian-vector products, so a few steps fill the budget) continued from an L-BFGS
snapshot (their recipe: Adam, L-BFGS, then NNCG), its clock continuing the snapshot's; where
NNCG stops with an error (its Cholesky of the sketched Hessian fails when the Hessian is
indefinite), the error and its time go to ``failure.txt`` and the network of that moment is
saved.
Each snapshot ``snap-SSSS.pt`` holds the network's state, the training seconds, iterations and
DeepXDE's training loss; the points are a fixed DeepXDE set (its default Hammersley sampling).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["DDE_BACKEND"] = "pytorch"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import deepxde as dde  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from deepxde_peer import add_run_arguments, network  # noqa: E402
from parallel_ms.problems import Problem, get_case  # noqa: E402


class ProjectNet(dde.nn.NN):
    """A parallel_ms network (x -> v of shape (M,)) as a DeepXDE network (M, 1)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[:, None] if out.dim() == 1 else out


def lifted_residual(problem: Problem):
    """DeepXDE's pde(x, u) for (4.8): -K lap u - grad K . grad u - (q + d_1 K)."""

    def pde(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        lap = sum(dde.grad.hessian(u, x, i=j, j=j) for j in range(problem.dim))
        grad_u = torch.cat([dde.grad.jacobian(u, x, i=0, j=j) for j in range(problem.dim)], 1)
        flux_k = (problem.grad_k(x) * grad_u).sum(1, keepdim=True)
        return -problem.k(x)[:, None] * lap - flux_k - problem.lifted_source(x)[:, None]

    return pde


class Snapshots(dde.callbacks.Callback):
    """Saves the network every ``every`` seconds of training and stops at ``budget``; the
    clock excludes the saving; time and iterations continue ``start`` and ``iterations``."""

    def __init__(self, out: Path, every: float, budget: float, start: float = 0.0,
                 iterations: int = 0) -> None:
        super().__init__()
        self.out, self.every, self.budget, self.iterations = out, every, budget, iterations
        self.elapsed, self.next_save = start, (start // every + 1) * every
        self.t0 = time.perf_counter()

    def on_train_begin(self) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self) -> None:
        now = time.perf_counter()
        self.elapsed += now - self.t0
        if self.elapsed >= self.next_save or self.elapsed >= self.budget:
            self.save()
            self.next_save = (self.elapsed // self.every + 1) * self.every
        if self.elapsed >= self.budget:
            self.model.stop_training = True
        self.t0 = time.perf_counter()

    def on_train_end(self) -> None:
        self.elapsed += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()

    def save(self) -> None:
        state = self.model.train_state
        torch.save({"state": self.model.net.net.state_dict(), "train_time": self.elapsed,
                    "iteration": self.iterations + state.iteration,
                    "optimizer": self.model.opt_name, "loss": float(sum(state.loss_train))},
                   self.out / f"snap-{int(round(self.elapsed)):05d}.pt")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizer", choices=("lbfgs", "nncg"), required=True)
    add_run_arguments(p)
    p.add_argument("--adam", type=int, default=1000, help="Adam iterations before L-BFGS")
    p.add_argument("--budget", type=float, default=1800.0, help="training seconds")
    p.add_argument("--every", type=float, default=90.0, help="seconds between snapshots")
    p.add_argument("--resume", type=Path, default=None, help="nncg: the L-BFGS snapshot")
    p.add_argument("--cg-iterations", type=int, default=100,
                   help="nncg: most CG iterations per step (DeepXDE's default 1000)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.optimizer == "nncg" and args.resume is None:
        p.error("--optimizer nncg continues an L-BFGS snapshot: give --resume SNAPSHOT")
    torch.set_num_threads(args.threads)
    dde.config.set_default_float("float64")
    dde.config.set_random_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    problem = get_case(args.case)
    geom = dde.geometry.Hypercube([0.0] * problem.dim, [1.0] * problem.dim)
    data = dde.data.PDE(geom, lifted_residual(problem), [], num_domain=args.points,
                        num_boundary=0)
    net = ProjectNet(network(problem, args.width, args.features, args.seed))
    model = dde.Model(data, net)
    if args.optimizer == "lbfgs":
        clock = Snapshots(args.out, args.every, args.budget)
        model.compile("adam", lr=1e-3)
        model.train(iterations=args.adam, display_every=args.adam, verbose=0, callbacks=[clock])
        dde.optimizers.set_LBFGS_options(maxiter=10 ** 7)
        dde.optimizers.config.LBFGS_options["iter_per_step"] = 50
        model.compile("L-BFGS")
        model.train(display_every=10 ** 9, verbose=0, callbacks=[clock])
    else:
        snap = torch.load(args.resume)
        net.net.load_state_dict(snap["state"])
        clock = Snapshots(args.out, args.every, args.budget, start=snap["train_time"],
                          iterations=snap["iteration"])
        dde.optimizers.set_NNCG_options(cgmaxiter=args.cg_iterations)
        model.compile("NNCG")
        try:
            model.train(iterations=10 ** 7, display_every=10 ** 9, verbose=0,
                        callbacks=[clock])
        except torch.linalg.LinAlgError as err:  # its Nystrom sketch of an indefinite Hessian
            clock.on_train_end()
            (args.out / "failure.txt").write_text(f"{clock.elapsed:.0f} s: {err}\n")
    clock.save()


if __name__ == "__main__":
    main()
