"""Long runs on Ray: a job whose worker process dies, or whose node goes, is tried again from its
checkpoint (on another node if need be) and ends with the numbers of an uninterrupted run.

One local cluster of three nodes on this machine (``ray.cluster_utils.Cluster``): a head without
CPUs, where nothing runs, and two worker nodes of one CPU each, every one bound to 127.0.0.1 (Ray's
single-machine mode, as ``harness.executors.ray_cluster`` starts it). The checkpoint directory is on
this machine's disk, which all three nodes share. No GPU is asked for.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import fakes
import harness
from harness.executors import run_suite
from harness.registry import Registry, set_registry
from harness.runner import run_job
from harness.store import Store
from harness.suite import expand, parse_suite

ray = pytest.importorskip("ray", reason="the Ray tests need the ray extra: pip install 'contrastive-harness[ray]'")

from harness.executors import ray_cluster  # noqa: E402

ROOT = Path(harness.__file__).resolve().parents[1]
TIMING = {"train_time_s", "samples_per_s"}


def without_timing(metrics: dict) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk not in TIMING} if isinstance(v, dict) else v)
            for k, v in metrics.items()}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (0 CPUs) + two 1-CPU nodes on loopback; the toy plugins and this checkout on the workers' path."""
    from ray.cluster_utils import Cluster

    site = fakes.install(tmp_path_factory.mktemp("rayckpt") / "site")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "HARNESS_LOAD_PLUGINS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(ROOT), saved["PYTHONPATH"]) if p)
    os.environ["HARNESS_LOAD_PLUGINS"] = fakes.DIST
    sys.path.insert(0, str(site))
    set_registry(Registry())
    if ray.is_initialized():
        ray.shutdown()
    loopback = {"node_ip_address": ray_cluster.LOOPBACK, "include_dashboard": False}
    with ray_cluster._local_cluster_mode(ray):
        made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, **loopback})
        workers = [made.add_node(num_cpus=1, **loopback) for _ in range(2)]
        ray.init(address=made.address, logging_level="WARNING")
    try:
        assert ray.util.get_node_ip_address() == ray_cluster.LOOPBACK
        yield made, workers
    finally:
        ray.shutdown()
        made.shutdown()
        set_registry(None)
        sys.path.remove(str(site))
        sys.modules.pop(fakes.MODULE, None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def marked_suite(marker: Path, name: str) -> dict:
    data = fakes.toy_suite(name=name, steps=80, sleep=0.03)
    data["datasets"] = [{"name": "toy_marked", "params": {"marker": str(marker), "sleep": 0.03}}]
    data["train"]["checkpoint_every"] = 10
    return data


def run_and_strike(tmp_path: Path, name: str, strike) -> tuple[dict, list[list[str]], dict]:
    """Run a one-job suite on the cluster; once its task has written two checkpoints, ``strike(pid,
    node_id)``. Returns the stored result, the marker's lines (one per try) and an uninterrupted
    run's result."""
    marker = tmp_path / "tries.txt"
    suite = parse_suite(marked_suite(marker, name))
    job = expand(suite)[0]
    out = tmp_path / "runs"
    ckpt = out / name / ".checkpoints" / job.id / "checkpoint.pt"
    struck: list[str] = []

    def watch() -> None:
        seen: set[tuple[int, int]] = set()
        deadline = time.time() + 240
        while len(seen) < 2 and time.time() < deadline:
            try:
                info = os.stat(ckpt)
                seen.add((info.st_ino, info.st_mtime_ns))  # an inode number alone may be reused
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        if len(seen) >= 2:
            pid, node, _ = marker.read_text().split("\n")[0].split()
            strike(int(pid), node)
            struck.append(pid)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    summary = run_suite(suite, [job], out=out, executor="ray")
    watcher.join(timeout=10)
    assert struck, "the job ended before it had written two checkpoints"
    assert len(summary.ok) == 1, summary.failed
    tries = [line.split() for line in marker.read_text().splitlines()]
    whole = run_job(job, tmp_path / "whole")
    return Store(out, name).result(job.id), tries, whole


@pytest.mark.slow
def test_a_killed_worker_process_is_tried_again_from_the_checkpoint(cluster, tmp_path):
    result, tries, whole = run_and_strike(tmp_path, "killproc", lambda pid, node: os.kill(pid, signal.SIGKILL))
    assert result["status"] == "ok", result["error"]
    assert result["env"]["attempts"] == 2 and len(tries) >= 2 and tries[0][0] != tries[1][0]
    assert result["env"]["resumed_from_step"] >= 20 and result["env"]["resumed_from_step"] % 10 == 0
    assert without_timing(result["metrics"]) == without_timing(whole["metrics"])
    assert not (tmp_path / "runs" / "killproc" / ".checkpoints" / result["job"]["id"]).exists()


@pytest.mark.slow
def test_a_job_whose_node_dies_resumes_on_the_other_node(cluster, tmp_path):
    made, workers = cluster

    def remove(pid: int, node_id: str) -> None:
        node = next(n for n in workers if n.node_id == node_id)
        made.remove_node(node, allow_graceful=False)

    result, tries, whole = run_and_strike(tmp_path, "killnode", remove)
    assert result["status"] == "ok", result["error"]
    assert result["env"]["attempts"] == 2 and tries[0][1] != tries[1][1]  # the second try ran on the other node
    assert result["env"]["resumed_from_step"] >= 20
    assert without_timing(result["metrics"]) == without_timing(whole["metrics"])
