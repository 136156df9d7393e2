"""Run a suite's jobs through an executor and keep the store consistent.

The driver decides what to run (resume: finished ``ok`` jobs are skipped, ``failed`` ones only with
``--retry-failed``, everything with ``--force``), takes each job's lock, and commits each finished
job directory as it ends. ``local`` runs jobs in this process; ``ray`` runs them as Ray tasks
(imported only when asked for).

A job's failure, whatever it raises, is recorded and the suite goes on. Only the user's Ctrl-C or
a SIGTERM stops it (``harness.interrupts``): the summary of what finished is printed, then the
interrupt propagates (exit 130 or 143 at the CLI). So does an operating-system error of the store
itself (a full disk): the summary, then the ``OSError`` naming the path.

Each run records the ids of the suite's jobs, as this version of the suite defines them, in
``<out>/<suite>/.suite.json`` (``Store.record_current``): the leaderboard shows those jobs only, so
an edited suite run into the same ``--out`` never pools its old configuration's jobs with the new.
A job whose ``result.json`` is damaged (not JSON, the wrong shape, not a regular file) is not
finished: a warning names the file and the job runs again.
"""

from __future__ import annotations

import logging
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
        open_store(out, suite.name).record_current(suite.name, [job.id for job in grid.jobs],
                                                   {job.id: job.display for job in grid.jobs})
        return run_suite(suite, grid.jobs, out, executor, address, retry_failed, force, jobs)
    stage1 = grid.tuning_jobs()
    open_store(out, suite.name).record_current(suite.name, [job.id for job in stage1])
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
    open_store(out, suite.name).record_current(suite.name, [job.id for job in stage1 + finals],
                                               {job.id: job.display for job in stage1 + finals})
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
    for job_id, why in store.damaged.items():
        print(f"warning: {printable(store.job_dir(job_id) / 'result.json')}: unusable result ({printable(why)[:200]}); "
              f"the job runs again", file=sys.stderr)
    if executor != "ray":
        check_local_resources(todo)
    print(f"suite {suite.name}: {len(jobs)} jobs, {len(todo)} to run, results in {store.dir}", file=sys.stderr)
    with interrupts.signals():
        try:
            if executor == "ray":
                from harness.executors.ray_executor import run_ray

                _quiet_ray_notices()
                run_ray(store, todo, summary, address=address, resources=suite.resources.model_dump())
            else:
                from harness.executors.local import run_local

                run_local(store, todo, summary, at_once or 1)
        except (KeyboardInterrupt, SystemExit, OSError):
            summary.print(interrupted=True)
            raise
    summary.print()
    return summary


def check_local_resources(jobs: list[Job]) -> None:
    """The local executor runs a job in this process: a GPU the machine lacks is refused (one line,
    exit 2), more CPUs than it has are said on one line (the job runs on the CPUs there are)."""
    from harness.config import workers_of
    from harness.executors.ray_cluster import local_resources

    asked = {(float(j.resources.get("gpus_per_job") or 0), int(j.resources.get("cpus_per_job") or 1))
             for j in jobs if workers_of(j.resources) <= 1}  # a job of several workers is checked by ray_train
    if not asked:
        return
    have = local_resources()
    gpus, cpus = max(g for g, _ in asked), max(c for _, c in asked)
    if gpus > have["GPU"]:
        raise HarnessError(
            f"resources.gpus_per_job: the suite asks for {gpus:g} GPU(s) per job but this machine has "
            f"{have['GPU']:g} GPU(s) that torch can use; set resources.gpus_per_job: 0 to train on CPU"
        )
    if cpus > have["CPU"]:
        print(f"warning: resources.cpus_per_job: the suite asks for {cpus} CPU(s) per job but this machine has "
              f"{have['CPU']:g}: each job runs on {have['CPU']:g} thread(s)", file=sys.stderr)


class _DropNotice(logging.Filter):
    """Drops Ray's notice that token authentication is on by default (it is, and stays, on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled for this Ray cluster")


def _quiet_ray_notices() -> None:
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropNotice) for f in logger.filters):
        logger.addFilter(_DropNotice())
