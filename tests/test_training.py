"""PINN engine pieces in one process: configuration, schedule, balancing, switch, a short run."""
import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mpi4py import MPI

from parallel_ms import config, parallel
from parallel_ms.__main__ import DEFAULT_RUN
from parallel_ms.errors import UserError
from parallel_ms.training.balancing import GradNormBalancer
from parallel_ms.training.optimizers.switching import Plateau
from parallel_ms.training.optimizers.base import StepRecord, Target
from parallel_ms.training.optimizers.lbfgs import global_loss, make_lbfgs
from parallel_ms.training.optimizers.registry import build_optimizer

JOBS = Path(__file__).resolve().parent.parent / "jobs"


@pytest.mark.parametrize("override,message", [
    ("optimizer.lr=-1", "optimizer.lr = -1.0 (allowed: > 0)"),
    ("foo.bar=1", "config key 'foo.bar' is unknown"),
    ("network.nope=1", "config key 'network.nope' is unknown (allowed in [network]"),
    ("network.width=1.5", "network.width = '1.5' (allowed: an integer, |n| < 2^63)"),
    ("network.kind=cnn", "network.kind = 'cnn' (allowed: msff, mlp, two-scale)"),
    ("problem.case=zzz", "case 'zzz' is unknown"),
    ("train.steps=-3", "train.steps = -3 (allowed: > 0)"),
    ("balancing.alpha=1.5", "balancing.alpha = 1.5 (allowed: 0 <= value < 1)"),
    ("optimizer.gn_momentum=1", "optimizer.gn_momentum = 1.0 (allowed: 0 <= value < 1)"),
    ("train.ema_decay=1", "train.ema_decay = 1.0 (allowed: 0 <= value < 1)"),
    ("network.hard_bc=maybe", "network.hard_bc = 'maybe' (allowed: true or false)"),
    ("sampling.method=halton", "sampling.method = 'halton' (allowed: uniform, sobol, gauss)"),
    ("loss.form=ritz", "loss.form = 'ritz' (allowed: strong, energy)"),
    ("sampling.interior=0", "sampling.interior = 0 (allowed: > 0)"),
    ("problem.eps=0", "problem.eps = 0.0 (allowed: > 0)"),
    ("lr", "--set 'lr' (allowed: section.key=value)"),
])
def test_config_errors_are_one_line(override, message):
    with pytest.raises(UserError) as err:
        config.load(None, [override])
    assert message in str(err.value) and "\n" not in str(err.value)
    assert err.value.collective


@pytest.mark.parametrize("overrides,message", [
    (["loss.form=energy", "loss.tau_weak=10"],
     "loss.tau_weak = 10.0 (allowed: 0 with loss.form = 'energy'"),
    (["loss.form=energy", "train.method=hybrid", "coupling.upscaling=block-tensor"],
     "loss.form = 'energy' (allowed: 'strong' with coupling.upscaling = 'block-tensor'"),
    (["sampling.method=gauss", "sampling.resample_every=1"],
     "sampling.resample_every = 1 (allowed: 0 with sampling.method = 'gauss'"),
    (["sampling.layer_width=0.01", "sampling.layer_density=0.5"],
     "sampling.layer_density = 0.5 (allowed: >= 1)"),
    (["sampling.layer_width=0.6"], "sampling.layer_width = 0.6 (allowed: <= 0.5)"),
    (["sampling.layer_width=0.01", "train.method=hybrid"],
     "train.method = 'hybrid' (allowed: 'pinn' with sampling.layer_width > 0"),
    (["sampling.layer_width=0.01", "loss.tau_weak=1"],
     "loss.tau_weak = 1.0 (allowed: 0 with sampling.layer_width > 0"),
    (["sampling.resample_every=1", "sampling.interior_milestones=[40, 80]",
      "sampling.interior_counts=[6000]"],
     "sampling.interior_counts = [6000] (allowed: one count per milestone of "
     "sampling.interior_milestones = [40, 80])"),
    (["sampling.resample_every=1", "sampling.interior_milestones=[80, 40]",
      "sampling.interior_counts=[6000, 9000]"],
     "sampling.interior_milestones = [80, 40] (allowed: increasing steps >= 1)"),
    (["sampling.resample_every=1", "sampling.interior_milestones=[80]",
      "sampling.interior_counts=[0]"], "sampling.interior_counts = [0] (allowed: counts >= 1)"),
    (["sampling.interior_milestones=[80]", "sampling.interior_counts=[6000]"],
     "sampling.interior_milestones = [80] (allowed: [] without sampling.resample_every or "
     "sampling.adaptive_every"),
    (["sampling.layer_width=0.01", "sampling.adaptive_every=5"],
     "sampling.adaptive_every = 5 (allowed: 0 with sampling.layer_width > 0"),
])
def test_settings_that_cannot_pair_are_refused_in_one_line(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        config.load(None, overrides)


def test_interior_counts_from_their_milestones_on():
    s = config.load(None, ["sampling.interior=3000", "sampling.resample_every=1",
                           "sampling.interior_milestones=[80, 120]",
                           "sampling.interior_counts=[9000, 6000]"]).sampling
    assert [s.interior_at(k) for k in (1, 79, 80, 119, 120, 500)] == [3000, 3000, 9000, 9000,
                                                                      6000, 6000]
    assert s.most_interior == 9000 and config.SamplingConfig().most_interior == 25000


def test_config_toml_roundtrip(tmp_path):
    cfg = config.load(None, ["optimizer.lr=1e-3", "network.sigmas=1,15", "network.hard_bc=on"])
    path = tmp_path / "run.toml"
    path.write_text(config.to_toml(cfg))
    again = config.load(path)
    assert again == cfg and again.network.sigmas == [1.0, 15.0] and again.network.hard_bc


def _quadratic_target() -> Target:
    p = [torch.nn.Parameter(torch.ones(2, dtype=torch.float64))]

    def local_loss(consistent: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        term = (p[0] ** 2).sum()
        return term, {"residual": term}
    return Target(p, local_loss, lambda: None, MPI.COMM_SELF)


def test_adam_schedule_is_the_papers():
    adam = build_optimizer(_quadratic_target(), config.OptimizerConfig(lr=5e-4))
    records = [adam.step(k) for k in range(1, 2001)]
    assert records[-1].lr == pytest.approx(5e-4 * 0.75 ** 2) and records[-1].optimizer == "adam"
    assert adam.optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_grad_norm_balancing_moves_weights_to_norm_ratios():
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=torch.float64))
    terms = {"a": 100 * (w ** 2).sum(), "b": (w ** 2).sum()}  # gradient norms 100 : 1
    bal = GradNormBalancer(["a", "b"], every=100, alpha=0.0)
    weights = bal.update(terms, [w])
    assert weights["a"] == pytest.approx(101 / 100) and weights["b"] == pytest.approx(101)
    assert bal.due(200) and not bal.due(150)
    bal = GradNormBalancer(["a", "b"], alpha=0.9)
    assert bal.update(terms, [w])["b"] == pytest.approx(0.9 + 0.1 * 101)
    assert not GradNormBalancer(["a"], enabled=False).due(100)


def test_plateau_switch():
    sw = Plateau(window=10, tol=0.05)
    record = lambda norm: StepRecord("adam", {}, norm)  # noqa: E731
    assert not any(sw.after(record(1.0 / (k + 1))) for k in range(40))  # still decreasing fast
    sw = Plateau(window=10, tol=0.05)
    fired = [sw.after(record(1.0)) for _ in range(20)]
    assert fired[-1] and not any(fired[:-1])


@pytest.mark.parametrize("kind,rule", [("adam-lbfgs", ["optimizer.switch_window=2",
                                                       "optimizer.switch_tol=1.0"]),
                                       ("adam-gauss-newton", ["optimizer.gn_warmup=3"])])
def test_switching_optimizer_resumes_in_either_phase(kind, rule):
    """The composite switches once (L-BFGS after a plateau of the window, Gauss-Newton after the
    warm-up), builds its second optimizer only then, and a state_dict taken in either phase
    restores that phase."""
    cfg = config.load(None, [f"optimizer.kind={kind}", *rule]).optimizer
    target = _quadratic_target()
    target.residuals = lambda: pytest.fail("Gauss-Newton built before its warm-up ended")
    opt = build_optimizer(target, cfg)
    names = [opt.step(k).optimizer for k in range(1, 4)]
    assert names == ["adam"] * 3 and opt.second is None
    state = opt.state_dict()
    again = build_optimizer(target, cfg)
    again.load_state_dict(state)
    assert again.second is None and again.name == "adam"
    if kind == "adam-lbfgs":
        assert [opt.step(k).optimizer for k in (4, 5)] == ["adam", "lbfgs"]   # window 2 x 2
        state = opt.state_dict()
        again.load_state_dict(state)
        assert again.name == "lbfgs" and again.consistent and not again.freezes_balancing


def test_lbfgs_with_one_iteration_per_step_searches_its_line():
    """lbfgs_max_iter = 1 (Adam -> L-BFGS in the time-to-accuracy tables): every step's strong
    Wolfe search has evaluations to spend. With torch's default budget (1.25 per iteration)
    it had none, returned a zero step for a larger loss (Rosenbrock: stuck at the start,
    24.2) and the untested unit step for a NaN."""
    x = torch.nn.Parameter(torch.tensor([-1.2, 1.0], dtype=torch.float64))
    opt = make_lbfgs([x], config.OptimizerConfig(lbfgs_max_iter=1))

    def rosenbrock() -> torch.Tensor:
        return 100 * (x[1] - x[0] ** 2) ** 2 + (1 - x[0]) ** 2

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = rosenbrock()
        loss.backward()
        return loss

    losses = []
    for _ in range(60):
        opt.step(closure)
        losses.append(float(rosenbrock().detach()))
    assert all(b <= a for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 1e-10, losses[-1]
    assert float(global_loss(torch.tensor(float("nan")))) == float("inf")


def test_short_run_on_a_smooth_1d_case_reaches_one_percent():
    """paper-1d with eps = 0.5 (smooth), Ms-FF with hard BCs, 20 L-BFGS steps, float64."""
    from parallel_ms.training.loop import Trainer
    cfg = config.load(None, [
        "problem.case=paper-1d-eps1_15", "problem.eps=0.5", "optimizer.kind=lbfgs",
        "train.steps=20", "sampling.interior=500", "network.dtype=float64",
        "network.hard_bc=true", "network.width=32", "network.features=16", "coarse.cells=50",
        "balancing.enabled=false", "train.eval_every=20", "train.log_every=20",
        "reference.degree=1"])
    result = Trainer(cfg, parallel.init("cpu")).run()
    assert result.rel_l2 < 1e-2, result.rel_l2
    assert result.best_step > 10 and np.isfinite(result.rel_h1)
    assert MPI.COMM_WORLD.size == 1


def test_best_iterate_has_the_smallest_fine_loss_with_its_boundary_term():
    """With a soft boundary condition the best iterate minimises residual + tau_1 boundary
    (3.24), not the residual alone: a constant offset of v has no residual."""
    from parallel_ms.training.loop import Trainer
    cfg = config.load(None, [
        "problem.case=paper-1d-eps1_15", "problem.eps=0.5", "train.steps=30",
        "sampling.interior=200", "network.width=16", "network.features=8", "coarse.cells=20",
        "loss.tau1=100", "train.eval_every=30", "reference.degree=1", "train.best_by=loss"])
    trainer = Trainer(cfg, parallel.init("cpu"))
    result = trainer.run()
    fine = [row["residual"] + row["boundary"] for row in result.history]
    assert result.best_criterion == min(fine)
    assert result.best_step == 1 + int(np.argmin(fine))
    r, b = (result.history[result.best_step - 1][n] for n in ("residual", "boundary"))
    assert b > 0
    # a smaller residual with a larger sum is not better; a larger residual with a smaller sum is
    trainer.keep_if_best({"step": 31, "residual": r / 2, "boundary": 10 * (r + b)})
    assert trainer.best[:2] == (r + b, result.best_step)
    trainer.keep_if_best({"step": 32, "residual": r + b / 2, "boundary": 0.0})
    assert trainer.best[:2] == (r + b / 2, 32)


@pytest.mark.parametrize("path", [*sorted(JOBS.glob("*.toml")), DEFAULT_RUN],
                         ids=lambda p: p.name)
def test_job_files_and_the_default_run_load_and_build(path):
    """Every run configuration shipped (jobs/*.toml and the embedded default) is valid and
    builds its network with the parameter count the resource guard expects."""
    from parallel_ms import resources
    from parallel_ms.fine.model import build_network
    from parallel_ms.problems import get_case
    cfg = config.load(path)
    problem = get_case(cfg.problem.case, eps=cfg.problem.eps)
    net = build_network(cfg.network, problem)
    assert sum(p.numel() for p in net.parameters()) == resources.parameter_count(
        cfg, problem, 1)


def test_the_answer_is_the_moving_average_of_the_iterates():
    """train.ema_decay = beta: every step's estimate, errors and best iterate are those of
    a_k = beta a_{k-1} + (1 - beta) v_k (a_1 = v_1), averaged here independently of
    AveragedModel; the optimizer goes on from the iterate v_k."""
    from parallel_ms.training.loop import Callback, Trainer
    cfg = config.load(None, [
        "problem.case=paper-1d-eps1_15", "problem.eps=0.5", "train.steps=8",
        "sampling.interior=200", "network.width=16", "network.features=8", "coarse.cells=20",
        "train.eval_every=1", "estimate.every=1", "reference.degree=1", "train.ema_decay=0.25",
        "network.dtype=float64"])
    trainer = Trainer(cfg, parallel.init("cpu"))

    class Averages(Callback):
        def __init__(self) -> None:
            self.average: dict | None = None
            self.rows: list[tuple[dict, dict, float, float]] = []

        def on_step_end(self, trainer, row) -> None:
            v = {k: t.detach().clone() for k, t in trainer.s.net.state_dict().items()}
            self.average = v if self.average is None else {
                k: 0.25 * self.average[k] + 0.75 * v[k] for k in v}
            net = copy.deepcopy(trainer.s.net)
            net.load_state_dict(self.average)
            self.rows.append((v, self.average, trainer.estimate(net).rel_l2,
                              trainer.errors(net)[0]))

    averages = Averages()
    result = trainer.run(callbacks=[averages])
    for row, (_, _, estimated, rel_l2) in zip(result.history, averages.rows):
        assert row["estimated_rel_l2"] == pytest.approx(estimated, rel=1e-10)
        assert row["rel_l2"] == pytest.approx(rel_l2, rel=1e-10)
    iterate, average = averages.rows[-1][:2]
    assert all(torch.equal(t, iterate[k]) for k, t in trainer.s.net.state_dict().items())
    assert not all(torch.equal(t, average[k]) for k, t in iterate.items())
    best = averages.rows[result.best_step - 1][1]
    assert all(torch.allclose(t, best[k], rtol=1e-12, atol=0)
               for k, t in trainer.best[2].items())
    with pytest.raises(UserError, match="train.ema_decay = 0.5 .allowed: 0 when train.best_by"):
        config.load(None, ["train.ema_decay=0.5", "train.best_by=loss"])


def test_best_iterate_by_the_estimate_is_the_smallest_estimated_error():
    """train.best_by = estimate (the default): the best iterate is the step, among those
    estimated (every estimate.every and the last), with the smallest estimated rel. L2 error;
    its reported errors are that iterate's, and every evaluated row has the errors of the
    best iterate so far (what the run returns if it stops there)."""
    from parallel_ms.training.loop import Trainer
    cfg = config.load(None, [
        "problem.case=paper-1d-eps1_15", "problem.eps=0.5", "train.steps=12",
        "sampling.interior=200", "network.width=16", "network.features=8", "coarse.cells=20",
        "train.eval_every=1", "estimate.every=4", "reference.degree=1"])
    result = Trainer(cfg, parallel.init("cpu")).run()
    estimated = {row["step"]: row["estimated_rel_l2"] for row in result.history
                 if "estimated_rel_l2" in row}
    assert sorted(estimated) == [4, 8, 12]
    assert result.best_step == min(estimated, key=estimated.get)
    assert result.best_criterion == min(estimated.values())
    best = next(row for row in result.history if row["step"] == result.best_step)
    assert result.rel_l2 == best["rel_l2"]
    assert result.estimate["estimated_rel_l2"] == pytest.approx(best["estimated_rel_l2"])
    rel_l2 = {row["step"]: row["rel_l2"] for row in result.history}
    for row in result.history:
        so_far = {s: e for s, e in estimated.items() if s <= row["step"]}
        assert ("best_rel_l2" in row) == bool(so_far)
        if so_far:
            assert row["best_rel_l2"] == pytest.approx(rel_l2[min(so_far, key=so_far.get)],
                                                       rel=1e-12)
