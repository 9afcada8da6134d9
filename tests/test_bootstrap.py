"""The parallel bootstrap: torch.distributed agrees with MPI; reductions; devices."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
from mpi4py import MPI

from parallel_ms import parallel
from parallel_ms.errors import UserError


@pytest.mark.mpi
def test_torch_allreduce_equals_mpi_allreduce():
    ctx = parallel.init("cpu")
    assert (ctx.rank, ctx.size) == (MPI.COMM_WORLD.rank, MPI.COMM_WORLD.size)
    assert dist.get_rank() == ctx.rank and dist.get_world_size() == ctx.size
    rng = np.random.default_rng(1234 + ctx.rank)
    local = rng.standard_normal(1000)
    t = torch.from_numpy(local.copy())
    dist.all_reduce(t)
    expected = MPI.COMM_WORLD.allreduce(local, op=MPI.SUM)
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-14, atol=1e-14)
    assert ctx.backend == "gloo" and ctx.device == torch.device("cpu")


@pytest.mark.mpi
def test_allreduce_sum_helper_types():
    size = MPI.COMM_WORLD.size
    rank = MPI.COMM_WORLD.rank
    assert parallel.allreduce_sum(rank + 1) == size * (size + 1) // 2
    arr = parallel.allreduce_sum(np.full(3, float(rank)))
    np.testing.assert_array_equal(arr, np.full(3, size * (size - 1) / 2))
    ten = parallel.allreduce_sum(torch.ones(2, dtype=torch.float64))
    assert ten.dtype == torch.float64 and torch.equal(ten, torch.full((2,), float(size),
                                                                       dtype=torch.float64))


def test_init_is_idempotent_and_rejects_unknown_device():
    ctx = parallel.init("cpu")
    assert parallel.init("cpu") is ctx
    with pytest.raises(UserError, match="'tpu' is unknown"):
        parallel._select_device(0, "tpu")


@pytest.mark.gpu
def test_cuda_device_placement():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: the nccl/cuda path is not exercised")
    dev = parallel._select_device(1, "auto")
    assert dev.type == "cuda" and dev.index == 1 % torch.cuda.device_count()
