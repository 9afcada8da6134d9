"""``reference`` command: cache written on 2 ranks reloads on 1 and 3; HDF5 output layout."""
import re

import h5py
import numpy as np

from parallel_ms.problems import CASES

RELOAD_CHECK = """
import sys
import firedrake as fd
from parallel_ms.problems import get_case
from parallel_ms.reference.cache import load
from parallel_ms.reference.solver import upscaled_k11
ref = load(get_case("paper-2d"), sys.argv[1])
norm = float(fd.assemble(ref.u ** 2 * fd.dx))
k11 = upscaled_k11(ref.problem, ref.u)
if ref.mesh.comm.rank == 0:
    print("RELOAD", ref.mesh.comm.size, repr(ref.k11), repr(k11), repr(norm))
"""


def test_cached_reference_written_on_two_ranks_reloads_on_one_and_three(mpiexec, tmp_path):
    args = ["-m", "parallel_ms", "reference", "--case", "paper-2d", "--resolution", "48",
            "--cache-dir", str(tmp_path), "--out", str(tmp_path / "ref.h5")]
    out = mpiexec(2, args, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "loaded from cache" not in out.stdout
    k11 = float(re.search(r"K~_11 = (\S+)", out.stdout).group(1))
    (cached,) = [p for p in tmp_path.glob("paper-2d-*.h5")]
    again = mpiexec(3, args[:-2], timeout=300)
    assert again.returncode == 0 and "(loaded from cache)" in again.stdout, again.stderr
    printed = [re.search(r"norms of u: L2 (\S+), H1 seminorm (\S+), energy (\S+);",
                         o.stdout).groups() for o in (out, again)]
    assert printed[0] == printed[1]          # 2 ranks solved, 3 ranks loaded: the same norms
    results = []
    for n in (1, 3):
        run = mpiexec(n, ["-c", RELOAD_CHECK, str(cached)], timeout=300)
        assert run.returncode == 0, run.stderr
        (line,) = [ln for ln in run.stdout.splitlines() if ln.startswith("RELOAD")]
        _, size, stored, recomputed, norm = line.split()
        assert int(size) == n
        assert abs(float(stored) - k11) < 1e-9 and abs(float(recomputed) - k11) < 1e-9
        results.append(float(norm))
    assert abs(results[0] - results[1]) < 1e-12 * results[0]
    assert abs(float(printed[0][0]) ** 2 / results[0] - 1) < 1e-4   # printed to 5 digits

    with h5py.File(tmp_path / "ref.h5", "r") as f:
        coords, u, w = f["coordinates"][...], f["u"][...], f["w"][...]
        assert coords.shape == (49 * 49, 2) and u.shape == w.shape == (49 * 49,)
        np.testing.assert_allclose(w, u + coords[:, 0], atol=1e-14)
        boundary = np.any((coords < 1e-12) | (coords > 1 - 1e-12), axis=1)
        assert np.abs(u[boundary]).max() < 1e-12 and np.abs(u).max() > 1e-3
        assert f.attrs["k11"] == k11 or abs(f.attrs["k11"] - k11) < 1e-9
        assert f.attrs["case"] == "paper-2d" and f.attrs["ranks"] == 2


def test_cases_lists_every_case_once(mpiexec):
    out = mpiexec(1, ["-m", "parallel_ms", "cases"], timeout=120)
    assert out.returncode == 0, out.stderr
    for name in CASES:
        assert sum(line.startswith(name + " ") for line in out.stdout.splitlines()) == 1


def test_reference_user_errors_are_one_line(mpiexec):
    out = mpiexec(2, ["-m", "parallel_ms", "reference", "--case", "paper-1d-eps0_01",
                      "--tensor", "--no-cache"], timeout=120)
    assert out.returncode == 2
    message = "parallel_ms: error: --tensor/--blocks need a 2D case; 'paper-1d-eps0_01' is 1D"
    # the first line is ours, printed once; what may follow is mpiexec's note on the exit status
    assert out.stderr.splitlines()[0] == message and out.stderr.count(message) == 1
    assert "Traceback" not in out.stderr


def test_reference_takes_the_case_parameters(mpiexec, tmp_path):
    """``--param`` as in ``gmsfem``: the medium changes, and with it the cache entry."""
    base = ["-m", "parallel_ms", "reference", "--case", "high-contrast-1d", "--cache-dir",
            str(tmp_path)]
    lines = {}
    for extra in ([], ["--param", "contrast=10", "--param", "width=0.2"]):
        out = mpiexec(1, base + extra, timeout=120)
        assert out.returncode == 0, out.stderr
        lines[tuple(extra)] = [ln for ln in out.stdout.splitlines() if ln.startswith("K~_11")]
    assert len(lines) == 2 and lines[()] != lines[("--param", "contrast=10", "--param",
                                                   "width=0.2")]
    names = sorted(f.name for f in tmp_path.glob("*.h5"))
    assert len(names) == 2 and any("-contrast10-width0.2-" in n for n in names), names
