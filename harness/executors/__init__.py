"""Run a suite's jobs through an executor and keep the store consistent.

The driver decides what to run (resume: finished ``ok`` jobs are skipped, ``failed`` ones only with
``--retry-failed``, everything with ``--force``), takes each job's lock, and commits each finished
job directory as it ends. ``local`` runs jobs in this process; ``ray`` runs them as Ray tasks
(imported only when asked for).

A job's failure, whatever it raises, is recorded and the suite goes on. Only the user's Ctrl-C or
a SIGTERM stops it (``harness.interrupts``): the summary of what finished is printed, then the
interrupt propagates (exit 130 or 143 at the CLI).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import interrupts
from harness.errors import HarnessError, printable
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
        elif status == "failed" and not (retry_failed or force):
            error = (store.result(job.id) or {}).get("error") or "unknown error"
            summary.failed.append((job.display, f"{error} (failed in an earlier run; --retry-failed re-runs it)"))
        else:
            summary.stamps[job.id] = store.stamp(job.id)
            todo.append(job)
    return todo


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
    """A short line of headline numbers for a finished job."""
    if result.get("status") != "ok":
        return f"failed: {result.get('error')}"
    m = result.get("metrics", {})
    parts = []
    gap = m.get("gap", {})
    if "centroid_distance" in gap:
        parts.append(f"gap {gap['centroid_distance']:.3f}")
    zs = m.get("zeroshot_classification", {})
    tops = [v["top1"] for v in zs.values() if isinstance(v, dict) and "top1" in v]
    if isinstance(zs.get("mean_top1"), (int, float)):  # the evaluation's main score, as the leaderboard shows it
        parts.append(f"zero-shot {zs['mean_top1']:.3f}")
    elif tops:
        parts.append(f"zero-shot {sum(tops) / len(tops):.3f}")
    parts.append(f"{result.get('env', {}).get('wall_time_s', 0):.0f}s")
    return "ok: " + ", ".join(parts)


def run_grid(grid, out: str | Path = "runs", executor: str = "local", address: str | None = None,
             retry_failed: bool = False, force: bool = False) -> Summary:
    """Run a resolved suite: its jobs, or for a tuned suite the tuning stage, the selection, then the final jobs.

    Both stages are ordinary runs of the same store (resumable, either executor); the selection
    reads the tuning results back from the store (``harness.tuning.select``).
    """
    from harness.tuning import final_jobs, select

    suite = grid.suite
    if not grid.trials:
        return run_suite(suite, grid.jobs, out, executor, address, retry_failed, force)
    stage1 = grid.tuning_jobs()
    n_trials = len(next(iter(grid.trials.values())))
    print(f"tuning {len(grid.trials)} objective(s), {n_trials} trial(s) each, on the validation split "
          f"(seeds {', '.join(map(str, suite.tune.seeds))})", file=sys.stderr)
    first = run_suite(suite, stage1, out, executor, address, retry_failed, force)
    from harness.registry import get_registry

    chosen = select(stage1, open_store(out, suite.name), suite.tune.mode)
    for (objective, encoder, dataset), pick in chosen.items():
        values = ", ".join(f"{k}={v}" for k, v in pick["trial"].items())
        print(f"chosen for {printable(objective)} | {printable(encoder)} | {printable(dataset)}: {values} "
              f"(validation {pick['score']:.4f})", file=sys.stderr)
    jobs, missing = final_jobs(grid.jobs, grid.trials, grid.objectives, chosen, suite, get_registry())
    second = run_suite(suite, jobs, out, executor, address, retry_failed, force)
    second.failed += [(job.display, f"not run: {why}") for job, why in missing]
    if missing:
        second.print()
    return Summary(ok=first.ok + second.ok, failed=first.failed + second.failed,
                   skipped=first.skipped + second.skipped, busy=first.busy + second.busy)


def open_store(out: str | Path, suite: str) -> Store:
    """The run store under ``out`` (``--out``), or a one-line ``HarnessError`` when it cannot be written."""
    where = Path(out)
    if where.exists() and not where.is_dir():
        raise HarnessError(f"--out: {where} exists and is not a directory")
    try:
        store = Store(where, suite)
        probe = store.tmp_dir / f".write-test.{__import__('os').getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise HarnessError(f"--out: cannot write results under {where}: {exc.strerror or exc}") from None
    return store


def run_suite(suite, jobs: list[Job], out: str | Path = "runs", executor: str = "local", address: str | None = None,
              retry_failed: bool = False, force: bool = False) -> Summary:
    store = open_store(out, suite.name)
    store.cleanup()
    summary = Summary()
    todo = plan(store, jobs, retry_failed, force, summary)
    print(f"suite {suite.name}: {len(jobs)} jobs, {len(todo)} to run, results in {store.dir}", file=sys.stderr)
    with interrupts.signals():
        try:
            if executor == "ray":
                from harness.executors.ray_executor import run_ray

                run_ray(store, todo, summary, address=address, resources=suite.resources.model_dump())
            else:
                from harness.executors.local import run_local

                run_local(store, todo, summary)
        except (KeyboardInterrupt, SystemExit):
            summary.print(interrupted=True)
            raise
    summary.print()
    return summary
