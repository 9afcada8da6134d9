"""The CPU container image, built for real with buildah and checked inside (info, a 2-rank
hybrid run). Minutes and several GB: marked slow (RUN_SLOW=1 scripts/test.sh runs it)."""
import os
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_container_builds_and_runs_a_two_rank_hybrid_run():
    if os.geteuid() != 0:
        pytest.skip("scripts/build-container.sh needs root (buildah chroot isolation)")
    out = subprocess.run([ROOT / "scripts" / "build-container.sh"], capture_output=True,
                         text=True, timeout=3600, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "torch.distributed all-reduce of 1..2 = 3 (MPI: 3)" in out.stdout
    assert "done: 200 steps" in out.stdout and "status: completed" in out.stdout
