"""Multi-worker jobs: one job as ``resources.workers_per_job`` data-parallel workers on Ray Train.

A job with W > 1 workers runs as one ``ray.train.torch.TorchTrainer`` of W workers (gloo on CPU,
nccl when its workers hold GPUs). Each worker runs ``run_job`` inside the process group Ray Train
sets up: every worker reads the job's whole batch of B pairs and embeds its B / W rows, the loss
sees the global batch (``harness.training.GradCacheStep``), DDP averages the tower gradients. Rank 0
alone embeds the evaluation sets, evaluates and returns ``(result, {path: bytes})``: the same files
a one-process job writes, which the driver commits to its store under the same job id.

- ``cpus_per_job`` is the job's total: each worker holds ``cpus_per_job / W`` CPUs (and as many
  torch threads, at least 1) and ``gpus_per_worker`` GPUs (default ``gpus_per_job / W``).
- The process that drives a trainer holds nothing: the local executor drives it from the harness
  process (on a loopback-only local Ray it starts, ``start_local_cluster``); the Ray executor from a
  task of ``num_cpus=0`` on the cluster it started or joined (``--address``).
- A job that fails on any worker is a failed job like any other: the failing worker raises
  ``WorkerJobFailed`` carrying its result and files, so Ray Train stops the whole group (no worker
  is left waiting in a collective) and the driver stores rank 0's record, else the lowest failing
  rank's.

``ray.train`` is imported only here, and only for such jobs (the ``ray`` extra, ``ray[train]``).
"""

from __future__ import annotations

import math
import math
import shutil
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Any

from harness.config import worker_cpus, worker_gpus, workers_of
from harness.errors import one_line
from harness.executors.ray_cluster import (check_worker_resources, cluster_nodes, import_ray, local_resources,
                                           start_local_cluster, write_files)
from harness.job import Job
from harness.optional import require_ray_train

def backend_for(gpus_per_worker: float) -> str:
    """The ``torch.distributed`` backend of a job's workers: nccl when they hold GPUs, else gloo."""
    return "nccl" if gpus_per_worker > 0 else "gloo"


def scaling(resources: dict[str, Any]) -> dict[str, Any]:
    """``ray.train.ScalingConfig`` arguments of a job: W workers, each with its share of CPUs and its GPUs."""
    gpus = worker_gpus(resources)
    per_worker = {"CPU": worker_cpus(resources)}
    if gpus > 0:
        per_worker["GPU"] = gpus
    return {"num_workers": workers_of(resources), "use_gpu": gpus > 0, "resources_per_worker": per_worker}


class WorkerJobFailed(Exception):
    """Raised by a worker whose ``run_job`` failed, carrying its record, so the group stops."""

    def __init__(self, rank: int, result: dict[str, Any], files: dict[str, bytes]):
        super().__init__(f"worker {rank}: {result.get('error')}")
        self.rank, self.result, self.files = rank, result, files

    def __reduce__(self):
        return (self.__class__, (self.rank, self.result, self.files))


def _read_files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def worker_loop(config: dict[str, Any]):
    """The train function of each Ray Train worker: ``run_job`` in the group Ray Train made."""
    import ray.train
    import ray.train.torch
    import torch

    from harness.runner import run_job

    import logging

    logging.getLogger().setLevel(logging.WARNING)  # as in a job's own process: no INFO lines from libraries
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tmp = Path(tempfile.mkdtemp(prefix=f"harness-{config['job'].get('id', 'job')}-w{rank}-"))
    try:
        result = run_job(Job.from_dict(config["job"]), tmp, device=device if device.type == "cuda" else None)
        files = _read_files(tmp) if rank == 0 or result.get("status") != "ok" else {}
        if result.get("status") != "ok":
            raise WorkerJobFailed(rank, result, files)
        return (result, files) if rank == 0 else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def failed_group_result(job: Job, exc: BaseException) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(result, files)`` of a job whose worker group failed: rank 0's record if it sent one, else
    the lowest failing rank's (its error prefixed with the rank), else a record of Ray's error."""
    from harness.runner import failed_result

    failures = dict(getattr(exc, "worker_failures", None) or {})
    sent = {rank: e for rank, e in failures.items() if isinstance(e, WorkerJobFailed)}
    if sent:
        rank = min(sent)
        result, files = sent[rank].result, dict(sent[rank].files)
        if rank != 0:
            result = dict(result, error=f"worker {rank} of {workers_of(job.resources)}: {result.get('error')}")
            files.pop("result.json", None)  # rewritten from ``result`` by the caller
        return result, files
    cause = next(iter(failures.values()), exc) if failures else exc
    error = f"{type(cause).__name__}: the Ray Train workers of this job failed: {one_line(cause)}"
    tb = "".join(traceback.format_exception(cause)).rstrip() + "\n"
    return failed_result(job, error, tb, env={"executor": "ray-train", "workers_per_job": workers_of(job.resources)}), {}


def run_workers(job: Job) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Run ``job`` as its Ray Train workers on the connected Ray cluster: rank 0's ``(result, files)``."""
    require_ray_train(full=True)
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = dict(job.resources)
    storage = tempfile.mkdtemp(prefix=f"harness-train-{job.id}-")
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"job": job.to_dict()},
        torch_config=TorchConfig(backend=backend_for(worker_gpus(resources))),
        scaling_config=ScalingConfig(**scaling(resources)),
        run_config=RunConfig(name=f"harness-{job.id}-{uuid.uuid4().hex[:8]}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=0)),
    )
    try:
        out = trainer.fit()
        if not isinstance(out.return_value, tuple):
            raise RuntimeError("rank 0 of the job's workers returned no result")
        return out.return_value
    except TrainingFailedError as exc:
        return failed_group_result(job, exc)
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def run_workers_task(job_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Ray task body (``num_cpus=0``) of the Ray executor for a job with workers."""
    return run_workers(Job.from_dict(job_dict))


def write_job(tmp: Path, job: Job, result: dict[str, Any], files: dict[str, bytes]) -> None:
    """A job's files into ``tmp`` (a store temporary directory), ``job.json`` and ``result.json``
    written from ``job`` and ``result`` when the workers did not send them."""
    from harness.store import write_json_atomic

    write_files(tmp, files)
    if "job.json" not in files:
        write_json_atomic(tmp / "job.json", job.to_dict())
    if "result.json" not in files:
        write_json_atomic(tmp / "result.json", result)


class LocalWorkers:
    """The local executor's Ray for jobs with workers: started on first use, loopback only.

    ``run(job, tmp)`` runs the job's workers and writes its files into ``tmp``; ``close()`` shuts
    down the cluster if this object started it (a Ray the caller already connected is left alone).
    """

    def __init__(self, jobs: list[Job]):
        self.cpus = max([float((j.resources or {}).get("cpus_per_job") or 1) for j in jobs if workers_of(j.resources) > 1],
                        default=1.0)
        self.ray = None
        self.started = False

    def _connect(self, job: Job):
        if self.ray is None:
            require_ray_train(full=True)
            ray = import_ray()
            have = local_resources()
            # logical CPUs: at least the largest job's total, so a job never waits for CPUs it asked
            # for on a smaller machine (its threads are still capped at what the machine has)
            cpus = max(int(have["CPU"]), math.ceil(self.cpus))
            if not ray.is_initialized():
                check_worker_resources(job.resources, [{"CPU": float(cpus), "GPU": have["GPU"]}], "this machine")
                start_local_cluster(ray, num_cpus=cpus, log_to_driver=False)
                self.started = True
            self.ray = ray
        check_worker_resources(job.resources, cluster_nodes(self.ray), "the Ray cluster")

    def run(self, job: Job, tmp: Path) -> dict[str, Any]:
        from harness import interrupts

        self._connect(job)
        with interrupts.signals():  # ray.init replaced the handlers: ours again
            result, files = run_workers(job)
        write_job(tmp, job, result, files)
        return result

    def close(self) -> None:
        if self.started and self.ray is not None:
            self.ray.shutdown()
        self.started, self.ray = False, None


def uses_workers(job: Job) -> bool:
    return workers_of(job.resources) > 1
