"""Ray clusters for the executors: import Ray, start a loopback-only local cluster or join one,
read its nodes, check that a job (or each of its workers) fits on them, write a task's files.

Shared by the Ray executor (``harness.executors.ray_executor``: one task per job) and the Ray Train
path (``harness.executors.ray_train``: a job of several workers); neither imports the other for
these. ``import ray`` happens only in the functions here that are handed or asked for it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import socket
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from harness.config import worker_cpus, worker_gpus, workers_of
from harness.errors import HarnessError, one_line

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
    if workers_of(resources) > 1:  # a job of several workers: each must fit on a node, not the whole job
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


def write_files(tmp: Path, files: dict[str, bytes]) -> None:
    """Write a task's returned files under ``tmp``, refusing paths that would leave it."""
    for rel, data in files.items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise ValueError(f"a Ray task returned an unsafe path: {rel!r}")
        path = tmp.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# ------------------------------------------------------------------------------------ workers


def worker_slots(node: dict[str, float], cpus: float, gpus: float) -> int:
    """How many workers of ``cpus`` CPUs and ``gpus`` GPUs one node holds."""
    fits = [math.floor(node.get("CPU", 0.0) / cpus + 1e-9)] if cpus > 0 else []
    if gpus > 0:
        fits.append(math.floor(node.get("GPU", 0.0) / gpus + 1e-9))
    return min(fits) if fits else 10**9


def check_worker_resources(resources: dict[str, Any], nodes: list[dict[str, float]], where: str) -> None:
    """Fail up front (one line naming the suite field) when the cluster cannot hold a job's workers.

    A worker must fit on one node; the W workers of a job may spread over several. A request the
    cluster can never satisfy would otherwise wait forever.
    """
    w, cpus, gpus = workers_of(resources), worker_cpus(resources), worker_gpus(resources)
    room = sum(worker_slots(n, cpus, gpus) for n in nodes)
    if room < w:
        each = f"{cpus:g} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
        raise HarnessError(
            f"resources.workers_per_job: a job's {w} workers of {each} each do not fit on {where} "
            f"(room for {room}); lower workers_per_job, cpus_per_job or gpus_per_worker, or join a larger "
            f"cluster (--address)"
        )
