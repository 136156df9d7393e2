"""The Ray executor: one Ray task per job, finished jobs streamed back with ``ray.wait``.

The driver (this process) keeps the store: it claims each job's lock, submits one task per job
with the suite's ``resources`` (``num_cpus=cpus_per_job``, ``num_gpus=gpus_per_job``), and as each
task ends writes the job's files into a temporary directory of the store and commits it. A task runs
``run_job`` into a fresh local temporary directory and returns ``(result, {relative path: bytes})``,
so results need no shared filesystem with the driver. A task whose worker process or node dies
(``RETRYABLE``: crashed, killed for memory, node gone) is submitted again by the driver, up to
``ATTEMPTS`` tries in all, and resumes from the job's checkpoint, which the task writes directly to
``<runs>/<suite>/.checkpoints/<job-id>/`` (``harness.executors.common``): on a cluster, ``--out``
must be on storage the nodes share for a retry on another node to find it. The result records
``env.attempts``. A job whose last try dies too is stored as a failed result like any other job
failure, and keeps its checkpoint (``--retry-failed`` resumes it). A crash of the driver loses at
most the jobs in flight: their locks go stale and the next run takes them over.

Cluster: with ``address`` the driver joins that cluster (its nodes must have the harness and the
suite's plugins installed; ``HARNESS_LOAD_PLUGINS`` is passed on to its workers; a cluster with
Ray's token authentication needs ``RAY_AUTH_MODE=token`` here, as Ray never enables it for an
explicit address). Otherwise it starts a new local cluster with ``os.cpu_count()`` CPUs and the GPUs
torch sees, bound to loopback only, and shuts it down at the end. Ray 2.x's
``resolve_ip_for_localhost`` turns ``_node_ip_address="127.0.0.1"`` back into the machine's
routable address unless Ray runs in its single-machine mode (``ENABLE_RAY_CLUSTER`` false, what
Ray uses on macOS and Windows, env ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``); in that mode the node
address is 127.0.0.1 and every component binds it (gcs_server, raylet, workers and the dashboard
agent, runtime-env agent, minimal dashboard and monitor metrics ports, checked in
``tests/test_ray_executor.py``). A loopback ``address`` is joined in the same mode. Usage-stats
reporting is switched off for the clusters we start; Ray's default token authentication stays on.

Signals: SIGTERM raises ``SystemExit(143)`` and Ctrl-C ``KeyboardInterrupt`` as in the local
executor; either cancels the remaining tasks, releases the locks, shuts the cluster down and
re-raises. The handlers only record the signal; the driver raises it between Ray calls (at most a
second later: ``ray.wait`` wakes each second), never from inside Ray's C++ core.

A job with ``resources.workers_per_job`` > 1 is one task of ``num_cpus=0`` that drives the job's Ray
Train workers (``harness.executors.ray_train``); each worker holds its share of the job's resources,
and the resource check asks that each worker fits on a node.

``import ray`` happens only here, when ``--executor ray`` is asked for (the ``ray`` extra).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from harness import interrupts
from harness.config import workers_of
from harness.errors import one_line, printable
from harness.executors.common import Summary, acquire, describe, drop_checkpoint, record, side_dirs
from harness.executors.ray_cluster import (LOOPBACK, check_resources, cluster_nodes, connect, import_ray, local_resources,
                                           write_files)
from harness.job import Job
from harness.optional import require_ray_train
from harness.store import Store, write_json_atomic

ATTEMPTS = 3  # tries of a job whose worker process or node dies (each resumes from the checkpoint)
RETRYABLE = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "OutOfMemoryError", "ObjectLostError")

# ------------------------------------------------------------------------------------ the task


def run_job_task(job_dict: dict[str, Any], dirs: dict[str, str | None] | None = None,
                 attempt: int = 1) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Ray task body: run one job into a fresh local temporary directory and return its files.

    Returns ``(result, {relative posix path: bytes})`` for every file ``run_job`` wrote; the
    directory is removed before returning.
    """
    from harness.runner import run_job

    tmp = Path(tempfile.mkdtemp(prefix=f"harness-{job_dict.get('id', 'job')}-"))
    try:
        result = run_job(Job.from_dict(job_dict), tmp, attempt=attempt, **(dirs or {}))
        files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}
        return result, files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def failed_task_result(job: Job, exc: BaseException, attempts: int = ATTEMPTS) -> dict[str, Any]:
    """The result of a job whose Ray task failed (worker died at every try, a task Ray refused, ...)."""
    from harness.runner import failed_result

    detail = printable(re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", one_line(exc).partition(": ")[2]))  # Ray colours its text
    error = f"{type(exc).__name__}: the Ray task of this job failed (tried {attempts} time(s)): {detail}".rstrip(": ")
    tb = "".join(traceback.format_exception(exc)).rstrip() + "\n"
    return failed_result(job, error, tb, env={"executor": "ray", "attempts": attempts})


def retryable(ray, exc: BaseException) -> bool:
    """Whether a task failed because its process or node died (not because the job raised)."""
    kinds = tuple(getattr(ray.exceptions, name) for name in RETRYABLE if hasattr(ray.exceptions, name))
    return isinstance(exc, kinds) and not isinstance(exc, ray.exceptions.RayTaskError)


def _store_result(store: Store, job: Job, result: dict[str, Any], files: dict[str, bytes]) -> None:
    tmp = store.new_tmp(job.id)
    try:
        write_files(tmp, files)
        if "result.json" not in files:  # a Ray-level failure: the task wrote nothing
            write_json_atomic(tmp / "job.json", job.to_dict())
            write_json_atomic(tmp / "result.json", result)
        store.commit(job.id, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------ the driver


def run_ray(store: Store, jobs: list[Job], summary: Summary, address: str | None = None,
            resources: dict[str, Any] | None = None) -> None:
    """Run ``jobs`` as Ray tasks, committing each to ``store`` and ``summary`` as it finishes."""
    if not jobs:
        return
    ray = import_ray()
    resources = dict(resources or {})
    if address is None and not ray.is_initialized():  # fail before paying for a cluster start
        check_resources(resources, [local_resources()], where="this machine")
    started = connect(ray, address)
    claimed: set[str] = set()
    pending: dict[Any, Job] = {}
    try:
        # ray.init replaced the handlers: ours again, raised only between Ray calls (``interrupts.check``)
        with interrupts.signals(defer=True):
            _submit_and_collect(ray, store, jobs, summary, address, resources, claimed, pending)
    except BaseException:  # KeyboardInterrupt, SystemExit (SIGTERM), or a store error
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        signum = interrupts.received()
        if signum == signal.SIGTERM:  # 128 + SIGTERM, like the local executor
            raise SystemExit(128 + signum) from None
        raise
    finally:
        for job_id in claimed:
            store.release(job_id)
        if started:
            ray.shutdown()


def _submit_and_collect(ray, store: Store, jobs: list[Job], summary: Summary, address: str | None,
                        resources: dict[str, Any], claimed: set[str], pending: dict[Any, Job]) -> None:
    """Check resources, claim and submit every job, then store each result as its task ends."""
    nodes = cluster_nodes(ray)
    check_resources(resources, nodes)
    cpus = sum(n.get("CPU", 0) for n in nodes)
    gpus = sum(n.get("GPU", 0) for n in nodes)
    where = address or f"a local cluster on {LOOPBACK}"
    print(f"ray: {where}: {len(nodes)} node(s), {cpus:g} CPU(s), {gpus:g} GPU(s)", file=sys.stderr)

    options: dict[str, Any] = {
        "num_cpus": resources.get("cpus_per_job") or 1,
        "num_gpus": resources.get("gpus_per_job") or 0,
        "max_retries": 0,  # the driver retries a job whose worker dies (``ATTEMPTS``), counting the tries
    }
    plugins = os.environ.get("HARNESS_LOAD_PLUGINS")
    if plugins is not None and address:  # a joined cluster's workers do not inherit our environment
        options["runtime_env"] = {"env_vars": {"HARNESS_LOAD_PLUGINS": plugins}}
    job_task, workers_task = ray.remote(run_job_task), None
    attempts: dict[str, int] = {}

    def submit(job: Job, attempt: int) -> None:
        nonlocal workers_task
        if workers_of(job.resources) > 1:  # a Ray Train job: its driving task holds nothing, its workers do
            from harness.executors.ray_train import run_workers_task

            require_ray_train()
            workers_task = workers_task or ray.remote(run_workers_task)
            task, opts = workers_task, {**options, "num_cpus": 0, "num_gpus": 0}
        else:
            task, opts = job_task, options
        ref = task.options(name=f"harness-{job.id}", **opts).remote(job.to_dict(), side_dirs(store, job), attempt)
        pending[ref] = job
        attempts[job.id] = attempt

    for job in jobs:
        interrupts.check()
        if not acquire(store, job, summary):
            continue
        claimed.add(job.id)
        submit(job, 1)

    total, n = len(pending), 0
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # wakes for signals each second
        interrupts.check()
        for ref in done:
            job = pending.pop(ref)
            try:
                result, files = ray.get(ref)
            except Exception as exc:  # RayTaskError, WorkerCrashedError, OutOfMemoryError, ...
                if retryable(ray, exc) and attempts[job.id] < ATTEMPTS:
                    print(f"{job.id} {printable(job.display)}: its worker died ({type(exc).__name__}); trying again "
                          f"from its checkpoint ({attempts[job.id] + 1} of {ATTEMPTS})", file=sys.stderr)
                    submit(job, attempts[job.id] + 1)
                    continue
                result, files = failed_task_result(job, exc, attempts[job.id]), {}
            _store_result(store, job, result, files)
            if files:  # the job itself ran to its end (a Ray-level failure keeps the checkpoint)
                drop_checkpoint(store, job.id)
            record(summary, job, result)
            store.release(job.id)
            claimed.discard(job.id)
            n += 1
            print(f"[{n}/{total}] {job.id} {printable(job.display)}: {printable(describe(result))}", file=sys.stderr)
