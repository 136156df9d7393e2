"""The Ray executor: one Ray task per job, finished jobs streamed back with ``ray.wait``.

The driver (this process) keeps the store: it claims each job's lock, submits one task per job
with the suite's ``resources`` (``num_cpus=cpus_per_job``, ``num_gpus=gpus_per_job``,
``max_retries=1``: a worker that dies is retried once), and as each task ends writes the job's files
into a temporary directory of the store and commits it. A task runs ``run_job`` into a fresh local
temporary directory and returns ``(result, {relative path: bytes})``, so workers need no shared
filesystem with the driver. A task that Ray itself fails (worker crashed twice, killed for memory)
is stored as a failed result like any other job failure. A crash of the driver loses at most the
jobs in flight: their locks go stale and the next run takes them over.

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
re-raises.

A job with ``resources.workers_per_job`` > 1 is one task of ``num_cpus=0`` that drives the job's Ray
Train workers (``harness.executors.ray_train``); each worker holds its share of the job's resources,
and the resource check asks that each worker fits on a node.

``import ray`` happens only here, when ``--executor ray`` is asked for (the ``ray`` extra).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from harness import interrupts
from harness.config import workers_of
from harness.errors import HarnessError, one_line, printable
from harness.executors import Summary, acquire, describe, record
from harness.job import Job
from harness.store import Store, write_json_atomic

RAY_MISSING = "--executor ray needs the ray extra: pip install 'contrastive-harness[ray]'"
LOOPBACK = "127.0.0.1"
# Environment of the processes of a cluster we start: single-machine mode (loopback only) and no
# usage-stats reporting to the Ray project.
LOCAL_CLUSTER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def import_ray():
    """``ray``, or a one-line ``HarnessError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise HarnessError(RAY_MISSING) from None
    return ray


# ------------------------------------------------------------------------------------ resources


def local_resources() -> dict[str, float]:
    """What a local cluster started here gets: every CPU, and the GPUs torch can use."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def _count(x: float) -> str:
    return f"{x:g}"


def check_resources(resources: dict[str, Any], nodes: list[dict[str, float]], where: str = "the Ray cluster") -> None:
    """Fail up front (``HarnessError`` naming the suite field) when no node can run one job.

    ``nodes`` are the alive nodes' resource dicts (Ray's ``{"CPU": .., "GPU": ..}``). A job is one
    task, so it must fit on a single node; a request no node can satisfy would wait forever.
    """
    from harness.config import workers_of

    if workers_of(resources) > 1:  # a job of several workers: each must fit on a node, not the whole job
        from harness.executors.ray_train import check_worker_resources

        check_worker_resources(resources, nodes, where)
        return
    gpus = float(resources.get("gpus_per_job") or 0)
    cpus = float(resources.get("cpus_per_job") or 1)
    total_gpus = sum(n.get("GPU", 0.0) for n in nodes)
    total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
    max_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    max_cpus = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    many = len(nodes) > 1
    if gpus > max_gpus:
        largest = f" (at most {_count(max_gpus)} on one node)" if many else ""
        raise HarnessError(
            f"resources.gpus_per_job: the suite asks for {_count(gpus)} GPU(s) per job but {where} has "
            f"{_count(total_gpus)} GPU(s){largest}; set resources.gpus_per_job: 0 to train on CPU, or join a "
            f"cluster with GPUs (--address)"
        )
    if cpus > max_cpus:
        largest = f" (at most {_count(max_cpus)} on one node)" if many else ""
        raise HarnessError(
            f"resources.cpus_per_job: the suite asks for {_count(cpus)} CPU(s) per job but {where} has "
            f"{_count(total_cpus)} CPU(s){largest}; lower resources.cpus_per_job"
        )
    if not any(n.get("GPU", 0.0) >= gpus and n.get("CPU", 0.0) >= cpus for n in nodes):
        raise HarnessError(
            f"resources: no node of {where} has both {_count(cpus)} CPU(s) and {_count(gpus)} GPU(s) for one job; "
            f"lower resources.cpus_per_job or resources.gpus_per_job"
        )


def cluster_nodes(ray) -> list[dict[str, float]]:
    """The alive nodes' resources (``ray.nodes()``), or the cluster totals if that is unavailable."""
    try:
        nodes = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive", True)]
    except Exception:  # an older/newer API shape: fall back to the totals
        nodes = []
    return nodes or [dict(ray.cluster_resources())]


# ------------------------------------------------------------------------------------ the cluster


@contextlib.contextmanager
def _local_cluster_mode(ray) -> Iterator[None]:
    """Ray's single-machine mode while the cluster starts: node address 127.0.0.1, no usage stats.

    The environment is inherited by the processes ``ray.init`` spawns (and the workers they spawn);
    ``ENABLE_RAY_CLUSTER`` is also set on the already-imported constants module, which is what
    ``ray.init`` reads in this process. Both are restored afterwards.
    """
    from ray._private import ray_constants

    saved_env = {k: os.environ.get(k) for k in LOCAL_CLUSTER_ENV}
    has_flag = hasattr(ray_constants, "ENABLE_RAY_CLUSTER")  # if a later Ray drops it, the env var remains
    saved_flag = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ.update(LOCAL_CLUSTER_ENV)
    if has_flag:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if has_flag:
            ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_local_cluster(ray, num_cpus: int | None = None, num_gpus: int | None = None, log_to_driver: bool = True) -> None:
    """Start a NEW single-node cluster in this process, every port bound to loopback only.

    ``log_to_driver=False`` keeps the cluster's processes' output off this terminal (the local
    executor's cluster for multi-worker jobs: their records land in the store).
    """
    import logging

    have = local_resources()
    with _local_cluster_mode(ray):
        ray.init(
            address="local",  # never join a stray cluster (RAY_ADDRESS, /tmp/ray/ray_current_cluster)
            num_cpus=int(have["CPU"]) if num_cpus is None else num_cpus,
            num_gpus=int(have["GPU"]) if num_gpus is None else num_gpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            logging_level=logging.WARNING,
            log_to_driver=log_to_driver,
        )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:  # a Ray whose internals moved: refuse to run exposed
        ray.shutdown()
        raise HarnessError(
            f"--executor ray: the local Ray cluster came up on {node_ip}, not {LOOPBACK}; refusing to run it "
            f"outside loopback (start one yourself and pass --address)"
        )


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` / ``[v6]:port`` address, else None (``auto``, ``ray://...``)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return None
    return host.strip("[]"), int(port)


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def join_cluster(ray, address: str) -> None:
    """Connect this driver to the running cluster at ``address`` (one-line errors when it cannot).

    A loopback address (a cluster started loopback-only on this machine) is joined in Ray's
    single-machine mode too; otherwise Ray would rewrite 127.0.0.1 to this machine's routable IP,
    where that cluster does not listen.
    """
    import logging

    hp = _host_port(address)
    if hp is not None:
        try:
            socket.create_connection(hp, timeout=5).close()
        except OSError as exc:
            raise HarnessError(f"--address: cannot reach a Ray cluster at {address!r} ({exc.strerror or exc}); "
                               f"is it running?") from None
    loopback = hp is not None and _is_loopback_host(hp[0])
    try:
        with _local_cluster_mode(ray) if loopback else contextlib.nullcontext():
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        hint = "" if os.environ.get("RAY_AUTH_MODE") else " (a cluster with token authentication needs RAY_AUTH_MODE=token)"
        raise HarnessError(f"--address: cannot join the Ray cluster at {address!r}: {one_line(exc)}{hint}") from None


def connect(ray, address: str | None) -> bool:
    """Join ``address`` or start a local cluster; True when this call did it (so we shut it down)."""
    if ray.is_initialized():  # embedded use: a connection made by the caller is the caller's
        return False
    if address:
        join_cluster(ray, address)
    else:
        start_local_cluster(ray)
    return True


# ------------------------------------------------------------------------------------ the task


def run_job_task(job_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Ray task body: run one job into a fresh local temporary directory and return its files.

    Returns ``(result, {relative posix path: bytes})`` for every file ``run_job`` wrote; the
    directory is removed before returning.
    """
    from harness.runner import run_job

    tmp = Path(tempfile.mkdtemp(prefix=f"harness-{job_dict.get('id', 'job')}-"))
    try:
        result = run_job(Job.from_dict(job_dict), tmp)
        files = {p.relative_to(tmp).as_posix(): p.read_bytes() for p in sorted(tmp.rglob("*")) if p.is_file()}
        return result, files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def failed_task_result(job: Job, exc: BaseException) -> dict[str, Any]:
    """The result of a job whose Ray task failed (worker died after its retry, OOM kill, ...)."""
    from harness.runner import failed_result

    detail = one_line(exc).partition(": ")[2]
    error = f"{type(exc).__name__}: the Ray task of this job failed (retried once): {detail}".rstrip(": ")
    tb = "".join(traceback.format_exception(exc)).rstrip() + "\n"
    return failed_result(job, error, tb, env={"executor": "ray"})


def write_files(tmp: Path, files: dict[str, bytes]) -> None:
    """Write a task's returned files under ``tmp``, refusing paths that would leave it."""
    for rel, data in files.items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise ValueError(f"a Ray task returned an unsafe path: {rel!r}")
        path = tmp.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


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
        with interrupts.signals():  # ray.init replaced the handlers: ours again
            _submit_and_collect(ray, store, jobs, summary, address, resources, claimed, pending)
    except BaseException:  # KeyboardInterrupt, SystemExit (SIGTERM), or a store error
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        signum = interrupts.received()
        if signum == signal.SIGTERM:  # Ray turns a signal inside ray.wait into SystemExit(1)
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
    print(f"ray: {where}: {len(nodes)} node(s), {_count(cpus)} CPU(s), {_count(gpus)} GPU(s)", file=sys.stderr)

    options: dict[str, Any] = {
        "num_cpus": resources.get("cpus_per_job") or 1,
        "num_gpus": resources.get("gpus_per_job") or 0,
        "max_retries": 1,
    }
    plugins = os.environ.get("HARNESS_LOAD_PLUGINS")
    if plugins is not None and address:  # a joined cluster's workers do not inherit our environment
        options["runtime_env"] = {"env_vars": {"HARNESS_LOAD_PLUGINS": plugins}}
    task = ray.remote(run_job_task)
    workers_task = None
    for job in jobs:
        if not acquire(store, job, summary):
            continue
        claimed.add(job.id)
        if workers_of(job.resources) > 1:  # a Ray Train job: its driving task holds nothing, its workers do
            from harness.executors.ray_train import require_ray_train, run_workers_task

            require_ray_train()
            workers_task = workers_task or ray.remote(run_workers_task)
            ref = workers_task.options(name=f"harness-{job.id}", **{**options, "num_cpus": 0, "num_gpus": 0}).remote(job.to_dict())
        else:
            ref = task.options(name=f"harness-{job.id}", **options).remote(job.to_dict())
        pending[ref] = job

    total, n = len(pending), 0
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # wakes for signals each second
        for ref in done:
            job = pending.pop(ref)
            try:
                result, files = ray.get(ref)
            except Exception as exc:  # RayTaskError, WorkerCrashedError, OutOfMemoryError, ...
                result, files = failed_task_result(job, exc), {}
            _store_result(store, job, result, files)
            record(summary, job, result)
            store.release(job.id)
            claimed.discard(job.id)
            n += 1
            print(f"[{n}/{total}] {job.id} {printable(job.display)}: {printable(describe(result))}", file=sys.stderr)
