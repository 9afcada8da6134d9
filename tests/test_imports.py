"""A GPU node may have a CUDA torch long before it has PETSc and Firedrake: the fine-scale half
(``fine/``) and the optimizers with their matrix-free and sample-space curvature solvers import
with only torch, numpy, scipy and mpi4py (Firedrake and PETSc are imported where the coarse
problem, the reference or the ScaLAPACK solver is used), and so does ``benchmarks/gpu_check.py``
(its run under the same blocker: tests/test_benchmarks.py)."""
import subprocess
import sys

from conftest import ROOT, mpi_env

BLOCKED = ("firedrake", "petsc4py", "pyop2", "ufl", "finat", "FIAT", "tsfc")
LIGHT = ["parallel_ms.config", "parallel_ms.parallel", "parallel_ms.fine.jet",
         "parallel_ms.fine.networks", "parallel_ms.fine.derivatives", "parallel_ms.fine.model",
         "parallel_ms.fine.residual", "parallel_ms.fine.sampling",
         "parallel_ms.training.optimizers.registry", "parallel_ms.training.optimizers.adam",
         "parallel_ms.training.optimizers.lbfgs", "parallel_ms.training.optimizers.switching",
         "parallel_ms.training.optimizers.collectives",
         "parallel_ms.training.optimizers.curvature",
         "parallel_ms.training.optimizers.curvature_sample_space",
         "parallel_ms.training.optimizers.gauss_newton"]
BLOCKER = f"""
import importlib, os, runpy, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {BLOCKED!r}:
            raise ImportError('not installed here: ' + name)
sys.meta_path.insert(0, Blocker())
"""
#: imports the modules named by its arguments
PROGRAM = BLOCKER + """
for name in sys.argv[1:]:
    importlib.import_module(name)
print('imported', len(sys.argv) - 1)
"""
#: runs the script named by its first argument with the others as its arguments
SCRIPT = BLOCKER + """
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def blocked(program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``program`` (:data:`PROGRAM` or :data:`SCRIPT`) with ``args``, Firedrake and PETSc
    blocked."""
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True,
                          text=True, cwd=ROOT, env=mpi_env(), timeout=timeout)


def test_the_fine_half_and_the_optimizers_import_without_firedrake_or_petsc():
    out = blocked(PROGRAM, *LIGHT)
    assert out.returncode == 0 and f"imported {len(LIGHT)}" in out.stdout, out.stderr


def test_the_gpu_check_imports_without_firedrake_or_petsc():
    out = blocked(SCRIPT, "benchmarks/gpu_check.py", "--help")
    assert out.returncode == 0 and "--quick" in out.stdout, out.stderr


def test_the_blocker_does_block():
    """The check can fail: a module that needs Firedrake is refused under the same blocker."""
    out = blocked(PROGRAM, "parallel_ms.coarse.mesh")
    assert out.returncode != 0 and "not installed here: firedrake" in out.stderr
