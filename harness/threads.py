"""How many threads a job computes with, and pinning a process to them.

A job's threads are its ``resources.cpus_per_job`` (a worker's share with ``workers_per_job``), at
most the machine's CPUs. ``pinned`` sets torch's intra-op threads and caps every BLAS/OpenMP pool
the process has loaded (threadpoolctl: OpenBLAS, MKL, OpenMP), so numpy and scikit-learn work in a
job (probes, references) cannot spread over cores that other jobs hold. A process that starts a job
pool also gives the children ``thread_env`` before they start, so pools sized at library load
(OpenMP) are born at the job's size.

The number of threads changes the floating-point order of reductions, so a job's numbers depend on
it (not on how many jobs run beside it).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

#: The environment variables BLAS and OpenMP libraries read for their pool sizes at load time.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS")


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def job_threads(resources: dict[str, Any] | None, workers: int = 1) -> int:
    """The threads of one job (or of one of its ``workers``): its CPUs, at least 1, at most the machine's."""
    cpus = float((resources or {}).get("cpus_per_job") or 1) / max(1, workers)
    return max(1, min(int(cpus), cpu_count()))


def thread_env(threads: int) -> dict[str, str]:
    """``THREAD_ENV`` set to ``threads``: the environment of a child process that runs jobs."""
    return {name: str(threads) for name in THREAD_ENV}


@contextlib.contextmanager
def thread_environment(threads: int) -> Iterator[None]:
    """``thread_env(threads)`` in ``os.environ`` while the block runs, restored afterwards."""
    saved = {name: os.environ.get(name) for name in THREAD_ENV}
    os.environ.update(thread_env(threads))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[None]:
    """torch and every BLAS/OpenMP pool limited to ``threads`` while the block runs: the pools loaded
    already (threadpoolctl) and, through ``thread_env`` in the environment, those a library loads
    during the block (scikit-learn's OpenMP, scipy's OpenBLAS); all restored afterwards."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with thread_environment(threads), threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)
