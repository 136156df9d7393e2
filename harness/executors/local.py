"""The default executor: jobs one after another in this process, with progress bars on a TTY."""

from __future__ import annotations

import shutil
import sys

from tqdm.auto import tqdm

from harness.config import workers_of
from harness.errors import printable
from harness.executors.common import Summary, acquire, describe, drop_checkpoint, record, side_dirs
from harness.job import Job
from harness.runner import prepare, run_job, world_key
from harness.store import Store


def run_local(store: Store, jobs: list[Job], summary: Summary, at_once: int = 1) -> None:
    """Jobs here, ``at_once`` at a time: one after another in this process, or in a pool of job
    processes (``harness.executors.pool``). Before the first job of each world that several jobs
    share, the world's model-free reference values are computed into the run's cache
    (``runner.prepare``), so that job costs what the others do. A job with ``resources.workers_per_job`` > 1 runs its Ray
    Train workers on a loopback-only local Ray, started for the first such job
    (``ray_train.LocalWorkers``); a suite with such jobs runs them one at a time."""
    quiet = not sys.stderr.isatty()
    suite_bar = tqdm(total=len(jobs), desc="suite", unit="job", position=0, disable=quiet)
    if at_once > 1 and len(jobs) > 1 and not any(workers_of(job.resources) > 1 for job in jobs):
        from harness.executors.pool import run_pool

        print(f"running {min(at_once, len(jobs))} jobs at once", file=sys.stderr)
        try:
            run_pool(store, jobs, summary, at_once, bar=None if quiet else suite_bar)
        finally:
            suite_bar.close()
        return
    workers = None
    ahead: set[str] = set()  # worlds whose reference values are computed before their first job here
    if jobs:
        from harness.runner import shared_worlds, warm_up

        warm_up()
        ahead = shared_worlds([job for job in jobs if workers_of(job.resources) == 1])
    try:
        for n, job in enumerate(jobs, 1):
            if not acquire(store, job, summary):
                suite_bar.update(1)
                continue
            tmp = None
            try:
                tmp = store.new_tmp(job.id)
                job_bar = tqdm(desc=printable(job.objective.display)[:30], unit="step", position=1, leave=False, disable=quiet)

                def progress(state, bar=job_bar, name=printable(job.objective.display)[:24]):
                    if state.phase != "train":  # training done: say which phase holds the job now
                        bar.set_description(f"{name}: {state.phase}"[:60])
                        return
                    bar.total = state.total
                    bar.update(state.step - bar.n)
                    bar.set_postfix(loss=f"{state.loss:.3f}", sps=f"{state.samples_per_s:.0f}", refresh=False)

                try:
                    if ahead and workers_of(job.resources) == 1 and (key := world_key(job)) in ahead:
                        ahead.discard(key)
                        job_bar.set_description(f"{printable(job.objective.display)[:24]}: references"[:60])
                        prepare(job, store.dir / ".cache")
                    if workers_of(job.resources) > 1:
                        from harness.executors.ray_train import LocalWorkers

                        workers = workers or LocalWorkers(jobs)
                        result = workers.run(job, tmp, side_dirs(store, job))
                    else:
                        result = run_job(job, tmp, progress=progress, cache_dir=store.dir / ".cache", attempt=1,
                                         **side_dirs(store, job))
                finally:
                    job_bar.close()
                store.commit(job.id, tmp)
                tmp = None
                drop_checkpoint(store, job.id)
                record(summary, job, result)
                tqdm.write(f"[{n}/{len(jobs)}] {job.id} {printable(job.display)}: {printable(describe(result))}", file=sys.stderr)
                suite_bar.update(1)  # only a job that ended advances the bar (never a Ctrl-C)
            finally:
                if tmp is not None:  # interrupted mid-job: leave nothing that looks finished
                    shutil.rmtree(tmp, ignore_errors=True)
                store.release(job.id)
    finally:
        suite_bar.close()
        if workers is not None:
            workers.close()
