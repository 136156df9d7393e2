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

import os
import sys
from pathlib import Path

from harness import interrupts
from harness.errors import HarnessError, printable
from harness.executors.common import Summary, plan
from harness.job import Job
from harness.store import Store


def run_grid(grid, out: str | Path = "runs", executor: str = "local", address: str | None = None,
             retry_failed: bool = False, force: bool = False, jobs: int | None = None) -> Summary:
    """Run a resolved suite: its jobs, or for a tuned suite the tuning stage, the selection, then the final jobs.

    Both stages are ordinary runs of the same store (resumable, either executor); the selection
    reads the tuning results back from the store (``harness.tuning.select``).
    """
    from harness.tuning import final_jobs, select

    suite = grid.suite
    if not grid.trials:
        return run_suite(suite, grid.jobs, out, executor, address, retry_failed, force, jobs)
    stage1 = grid.tuning_jobs()
    n_trials = len(next(iter(grid.trials.values())))
    print(f"tuning {len(grid.trials)} objective(s), {n_trials} trial(s) each, on the validation split "
          f"(seeds {', '.join(map(str, suite.tune.seeds))})", file=sys.stderr)
    first = run_suite(suite, stage1, out, executor, address, retry_failed, force, jobs)
    from harness.registry import get_registry

    chosen = select(stage1, open_store(out, suite.name), suite.tune.mode)
    for (objective, encoder, dataset), pick in chosen.items():
        values = ", ".join(f"{k}={v}" for k, v in pick["trial"].items())
        print(f"chosen for {printable(objective)} | {printable(encoder)} | {printable(dataset)}: {values} "
              f"(validation {pick['score']:.4f})", file=sys.stderr)
    finals, missing = final_jobs(grid.jobs, grid.trials, grid.objectives, chosen, suite, get_registry())
    second = run_suite(suite, finals, out, executor, address, retry_failed, force, jobs)
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
        probe = store.tmp_dir / f".write-test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise HarnessError(f"--out: cannot write results under {where}: {exc.strerror or exc}") from None
    return store


def run_suite(suite, jobs: list[Job], out: str | Path = "runs", executor: str = "local", address: str | None = None,
              retry_failed: bool = False, force: bool = False, at_once: int | None = None) -> Summary:
    """Run ``jobs`` of ``suite`` into the store under ``out``: ``at_once`` jobs at a time with the local
    executor (default 1: in this process; ``harness run`` defaults to this machine's CPUs over
    ``resources.cpus_per_job``, ``harness.executors.pool.default_jobs``), or as Ray tasks."""
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

                run_local(store, todo, summary, at_once or 1)
        except (KeyboardInterrupt, SystemExit):
            summary.print(interrupted=True)
            raise
    summary.print()
    return summary
