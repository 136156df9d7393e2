"""What every executor shares: the run's summary, which jobs to run, a job's lock, its console line,
and where a job keeps what outlives its temporary directory.

A job's checkpoint lives in ``<runs>/<suite>/.checkpoints/<job-id>/`` and its TensorBoard curves
(suite ``log: [tensorboard]``) in ``<runs>/<suite>/tensorboard/<job-id>/``: both are written while
the job runs, so neither can be inside the job's atomic directory, which appears only when the job
is done and is removed when a run is interrupted. The checkpoint directory is removed once the
job's result is committed (``drop_checkpoint``); the curves stay. With Ray, workers write both
directly: on a cluster ``--out`` must be on storage every node shares for a job to resume on
another node (a node that cannot see it resumes from its own copy, or from step 0).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

from harness.columns import pattern_values
from harness.errors import printable
from harness.job import Job
from harness.store import Store


@dataclass
class Summary:
    ok: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job display, error)
    skipped: list[str] = field(default_factory=list)  # already finished
    busy: list[str] = field(default_factory=list)  # locked by, or finished by, another run
    stamps: dict[str, int | None] = field(default_factory=dict, repr=False)  # result stamp at plan time

    def print(self, out=None, interrupted: bool = False) -> None:
        out = out or sys.stderr
        head = "suite interrupted" if interrupted else "suite done"
        print(
            f"{head}: {len(self.ok)} ok, {len(self.failed)} failed, {len(self.skipped)} already finished, "
            f"{len(self.busy)} running elsewhere",
            file=out,
        )
        for display, error in self.failed:
            print(f"  FAILED {printable(display)}: {printable(error)}", file=out)


def plan(store: Store, jobs: list[Job], retry_failed: bool, force: bool, summary: Summary) -> list[Job]:
    """The jobs to run now; the rest are recorded in ``summary``."""
    todo = []
    for job in jobs:
        status = store.status(job.id)
        if status == "ok" and not force:
            summary.skipped.append(job.display)
            drop_checkpoint(store, job.id)  # left by a run killed between its commit and its cleanup
        elif status == "failed" and not (retry_failed or force):
            error = (store.result(job.id) or {}).get("error") or "unknown error"
            summary.failed.append((job.display, f"{error} (failed in an earlier run; --retry-failed re-runs it)"))
        else:
            summary.stamps[job.id] = store.stamp(job.id)
            todo.append(job)
    return todo


CHECKPOINTS, CURVES = ".checkpoints", "tensorboard"


def side_dirs(store: Store, job: Job) -> dict[str, str | None]:
    """``run_job``'s ``checkpoint_dir`` and ``curves_dir`` of ``job`` (absolute: Ray workers run
    elsewhere); ``curves_dir`` is None unless the job logs to TensorBoard."""
    root = store.dir.resolve()
    curves = str(root / CURVES / job.id) if "tensorboard" in (job.log or []) else None
    return {"checkpoint_dir": str(root / CHECKPOINTS / job.id), "curves_dir": curves}


def drop_checkpoint(store: Store, job_id: str) -> None:
    """Remove a finished job's checkpoint directory (a job kept with ``save: [checkpoint]`` has its
    final weights in its own ``checkpoint.pt``)."""
    path = store.dir / CHECKPOINTS / job_id
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def acquire(store: Store, job: Job, summary: Summary) -> bool:
    """Take the job's lock; False (and noted as busy) when another run holds it or finished it since we planned."""
    if not store.claim(job.id):
        summary.busy.append(job.display)
        return False
    if store.stamp(job.id) != summary.stamps.get(job.id):
        store.release(job.id)
        summary.busy.append(job.display)
        return False
    return True


def record(summary: Summary, job: Job, result: dict[str, Any]) -> None:
    if result.get("status") == "ok":
        summary.ok.append(job.display)
    else:
        summary.failed.append((job.display, result.get("error") or "unknown error"))


def describe(result: dict[str, Any]) -> str:
    """A short line of a finished job's headline numbers: each main score its evaluations declared
    (``result["main_scores"]``, read as the leaderboard reads it) and the wall time."""
    if result.get("status") != "ok":
        return f"failed: {result.get('error')}"
    metrics = result.get("metrics") or {}
    parts = []
    for name, declared in (result.get("main_scores") or {}).items():
        key = declared.get("key") if isinstance(declared, dict) else None
        values = pattern_values({name: metrics.get(name)}, f"{name}.{key}") if isinstance(key, str) else []
        if values:
            parts.append(f"{name} {sum(values) / len(values):.3f}")
    parts.append(f"{(result.get('env') or {}).get('wall_time_s', 0):.0f}s")
    return "ok: " + ", ".join(parts)
