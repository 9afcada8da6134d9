"""Failure on one rank ends the whole job promptly, with the message printed once."""
import time

PROGRAM = """
import sys
from mpi4py import MPI
from parallel_ms import parallel
from parallel_ms.errors import UserError

def main():
    parallel.init("cpu")
    if MPI.COMM_WORLD.rank == 1:
        {raise_}
    MPI.COMM_WORLD.barrier()   # rank 0 would wait here forever without abort-all
    return 0

sys.exit(parallel.run_main(main))
"""


def _run(mpiexec, raise_stmt: str):
    t0 = time.monotonic()
    out = mpiexec(2, ["-c", PROGRAM.format(raise_=raise_stmt)], timeout=60)
    return out, time.monotonic() - t0


def test_exception_on_rank_one_ends_all_ranks(mpiexec):
    out, elapsed = _run(mpiexec, "raise RuntimeError('boom on rank one')")
    assert out.returncode != 0
    assert elapsed < 30, elapsed
    assert out.stderr.count("RuntimeError: boom on rank one") == 1, out.stderr


def test_user_error_on_one_rank_is_one_line_and_ends_all_ranks(mpiexec):
    out, elapsed = _run(mpiexec, "raise UserError('bad value x=3 (allowed: 1, 2)')")
    assert out.returncode != 0 and elapsed < 30
    assert "parallel_ms: error: [rank 1] bad value x=3 (allowed: 1, 2)" in out.stderr
    assert "Traceback" not in out.stderr


def test_collective_user_error_printed_once_without_abort(mpiexec):
    prog = """
import sys
from parallel_ms import parallel
from parallel_ms.errors import UserError
def main():
    raise UserError("key 'a.b' = -1 (allowed: > 0)", collective=True)
sys.exit(parallel.run_main(main))
"""
    out = mpiexec(2, ["-c", prog], timeout=60)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stderr.count("parallel_ms: error: key 'a.b' = -1 (allowed: > 0)") == 1
    assert "Traceback" not in out.stderr and "MPI_ABORT" not in out.stderr
