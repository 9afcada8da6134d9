"""The resource guard: memory estimates per rank from the settings, refused in one line before
anything large is allocated; a memory limit set for the test (SLURM's) and the setting that
raises it on purpose."""
import subprocess
import sys

import pytest
from mpi4py import MPI

from parallel_ms import config, resources
from parallel_ms.errors import UserError
from conftest import ROOT, mpi_env

TINY = ["problem.case=paper-1d-eps1_15", "network.width=8", "network.features=4",
        "sampling.interior=256", "coarse.cells=16", "reference.degree=1",
        "reference.resolution=512"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "parallel_ms", *args], capture_output=True,
                          text=True, env=mpi_env(), cwd=ROOT, timeout=120)


@pytest.mark.parametrize("args,setting", [
    (["reference", "--case", "paper-2d", "--eps", "1e-6"], "--resolution or --eps"),
    (["run", "--points", "1e10"], "sampling.interior"),
    (["run", "--set", "coarse.cells=100000"], "coarse.cells"),
    (["run", "--paper", "--optimizer", "gauss-newton", "--set",
      "optimizer.gn_solver=cholesky"],
     "optimizer.gn_solver"),
])
def test_what_does_not_fit_is_refused_in_one_line(args, setting, tmp_path):
    out = _cli(*args, *(["--set", f"output.root={tmp_path}"] if args[0] == "run" else []))
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1, out.stderr
    assert "estimated memory" in err[0] and setting in err[0] and "Traceback" not in err[0]
    assert not list(tmp_path.iterdir())           # refused before the run directory


@pytest.mark.mpi
def test_the_limit_is_shared_by_the_ranks_of_a_node_and_can_be_raised(monkeypatch):
    comm = MPI.COMM_WORLD
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "400")          # MiB, for the whole node
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    assert resources.rank_share(comm) == pytest.approx(400 * 2 ** 20 / local.size)
    local.Free()
    cfg = config.load(None, TINY)
    with pytest.raises(UserError, match=r"parallel\.memory_per_rank raises the limit") as err:
        resources.check_run(cfg, comm)           # the process base alone is 0.5 GiB
    assert err.value.collective and "\n" not in str(err.value)
    resources.check_run(config.load(None, [*TINY, "parallel.memory_per_rank=4"]), comm)


@pytest.mark.mpi
def test_estimates_grow_with_the_settings_and_shrink_with_ranks():
    cfg = config.load(None, TINY)
    from parallel_ms.problems import get_case
    problem = get_case("paper-1d-eps1_15")
    one = {e.setting: e.nbytes for e in resources.run_estimates(cfg, problem, 1)}
    two = {e.setting: e.nbytes for e in resources.run_estimates(cfg, problem, 2)}
    sharded = [k for k in one if k.startswith(("sampling", "coarse", "reference"))]
    assert len(sharded) == 3 and all(two[k] == pytest.approx(one[k] / 2) for k in sharded)
    more = config.load(None, [*TINY, "sampling.interior=2560"])
    grown = {e.setting: e.nbytes for e in resources.run_estimates(more, problem, 1)}
    key = "sampling.interior / sampling.boundary"
    assert grown[key] == pytest.approx(one[key] * 2562 / 258)
    gms = config.load(None, ["problem.case=paper-2d", "train.method=hybrid", "coarse.cells=8",
                             "coarse.space=gmsfem", "gmsfem.refinement=4"])
    fine = {e.setting: e.nbytes for e in resources.run_estimates(gms, get_case("paper-2d"), 2)}
    assert fine["gmsfem.refinement / coarse.cells"] == pytest.approx(
        33 ** 2 * resources.REFERENCE_PER_DOF[2, 1] / 2)       # 8 x 4 fine cells per direction
    from parallel_ms.fine.model import build_network
    for kind in ("msff", "mlp", "two-scale"):
        c = config.load(None, [*TINY, f"network.kind={kind}", "network.depth=3",
                               "network.harmonics=3"])
        for case, outputs in ((problem, 1), (problem, 2), (get_case("quasi-periodic-2d"), 1)):
            assert resources.parameter_count(c, case, outputs) == sum(
                p.numel() for p in build_network(c.network, case, outputs).parameters())


@pytest.mark.mpi
@pytest.mark.parametrize("network,memory,picked", [
    ([], 8, "cholesky|scalapack"),           # the default run's network: the cheapest step,
                                             # replicated on 1 rank, distributed on more
    (["network.width=128", "network.features=64"], 8, "woodbury"),   # P x P does not fit
    (["network.width=128", "network.features=64"], 1.5, "cg"),       # no exact solver fits
])
def test_auto_picks_the_curvature_solver_that_fits_and_says_why(network, memory, picked):
    """``optimizer.gn_solver = auto`` is replaced, before the guard's estimate, by the exact
    solver of least modeled time whose memory fits what a rank has left (else CG), the same
    on every rank, and the run is told why in one line."""
    from parallel_ms.problems import get_case
    cfg = config.load(ROOT / "parallel_ms/configs/default.toml",
                      ["optimizer.gn_solver=auto", f"parallel.memory_per_rank={memory}",
                       *network])
    why = resources.resolve_curvature_solver(cfg, get_case("paper-2d"), MPI.COMM_WORLD)
    one, more = (picked.split("|") * 2)[:2]
    picked = one if MPI.COMM_WORLD.size == 1 else more
    assert cfg.optimizer.gn_solver == picked == MPI.COMM_WORLD.bcast(picked)
    assert why.startswith(f"optimizer.gn_solver = auto: {picked}") and "\n" not in why
    assert resources.resolve_curvature_solver(cfg, get_case("paper-2d"), MPI.COMM_WORLD) is None
