"""How much memory this node gives the job: the smallest of the available physical memory,
the cgroup limit and SLURM's memory limit (where set)."""
from __future__ import annotations

import os
from pathlib import Path


def _meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2 ** 60:
            return int(text)
    return None


def _slurm_limit() -> int | None:
    """SLURM_MEM_PER_NODE (MiB) where the job set one."""
    value = os.environ.get("SLURM_MEM_PER_NODE")
    return int(value) * 2 ** 20 if value and value.isdigit() else None


def available_memory() -> int:
    """Bytes the ranks on this node may still allocate together."""
    limits = [_meminfo_available(), _cgroup_limit(), _slurm_limit()]
    return min(x for x in limits if x is not None)
