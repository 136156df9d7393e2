"""Several jobs at once on this machine: the local executor's pool of job processes (``--jobs N``).

Each job runs in a worker process of a ``ProcessPoolExecutor`` (spawned, reused from job to job),
pinned to the job's threads: the children start with ``harness.threads.thread_env`` (BLAS and
OpenMP pools born at that size) and ``run_job`` pins torch and every loaded BLAS pool. A job's
numbers are the same as when it runs alone: same record, same threads, same seeds. Each world that
several jobs share is prepared once (``runner.prepare``: its reference values into the run's cache)
in a worker of its own, submitted just before the world's first job, so that job trains while the
references are computed instead of paying for them.

The driver (this process) owns the store as in the one-at-a-time path: it claims each job's lock,
hands the worker a fresh temporary directory, commits it when the worker returns, and records the
result. At most N jobs are in flight. Workers ignore SIGINT: the user's Ctrl-C (or a SIGTERM to the
driver) stops the driver, which terminates the workers, removes the unfinished temporary
directories and releases their locks; finished jobs stay committed. A worker that dies (killed for
memory, a crash in native code) breaks the pool: the jobs in flight are run again once, alone (from
their checkpoints; ``env.attempts`` says 2); a job whose process dies again is recorded as failed and
keeps its checkpoint, so ``--retry-failed`` resumes it.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import shutil
import signal
import sys
import time
from typing import Any, Callable

from harness.errors import one_line, printable
from harness.executors.common import Summary, acquire, describe, drop_checkpoint, record, side_dirs
from harness.job import Job
from harness.store import Store, write_json_atomic
from harness.threads import cpu_count, job_threads, thread_environment


def default_jobs(resources: dict[str, Any] | None) -> int:
    """How many jobs fit on this machine at once: its CPUs over each job's ``cpus_per_job``."""
    cpus = float((resources or {}).get("cpus_per_job") or 1)
    return max(1, cpu_count() // max(1, math.ceil(cpus)))


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the driver dies (a SIGKILLed driver leaves no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_PHASES = None  # in a worker: the driver's queue of (job id, phase text) for its progress line


def _init_worker(phases=None) -> None:
    global _PHASES
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles the user's Ctrl-C and stops us
    _die_with_parent()
    _PHASES = phases
    from harness.runner import warm_up

    warm_up()


def _reporter(job_id: str) -> Callable[[Any], None] | None:
    """The progress callback of a job in a worker: its phase ("train 120/600", "evaluate gap") sent
    to the driver at most twice a second, dropped rather than ever blocking the job."""
    if _PHASES is None:
        return None
    last = [0.0, ""]

    def report(state) -> None:
        text = f"train {state.step}/{state.total}" if state.phase == "train" else state.phase
        now = time.monotonic()
        if state.phase == "train" and now - last[0] < 0.5 or text == last[1]:
            return
        last[:] = [now, text]
        try:
            _PHASES.put_nowait((job_id, text))
        except Exception:  # a full or closed queue: the progress line misses one update
            pass

    return report


def _run_in_worker(job_dict: dict[str, Any], tmp: str, cache_dir: str | None = None,
                   dirs: dict[str, str | None] | None = None, attempt: int = 1) -> dict[str, Any]:
    """Worker body: one job into ``tmp``; whatever it raises is that job's failed result."""
    from harness.runner import failed_result, run_job

    job = Job.from_dict(job_dict)
    try:
        return run_job(job, tmp, progress=_reporter(job.id), cache_dir=cache_dir, attempt=attempt, **(dirs or {}))
    except BaseException as exc:  # noqa: BLE001 - a plugin's KeyboardInterrupt is one job's failure here
        import traceback

        return failed_result(job, one_line(exc), traceback.format_exc(), env={"executor": "local"})


def _prepare_in_worker(job_dict: dict[str, Any], cache_dir: str) -> float | None:
    """Worker body of a world's preparation (``runner.prepare``): best effort, never raises."""
    from harness.runner import prepare

    try:
        return prepare(Job.from_dict(job_dict), cache_dir)
    except BaseException:  # noqa: BLE001 - the world's jobs compute what is missing themselves
        return None


class JobPool:
    """Up to ``n`` jobs at once in worker processes; ``finished`` is called in the driver for each."""

    def __init__(self, store: Store, n: int, threads: int, summary: Summary,
                 finished: Callable[[Job, dict[str, Any]], None], shown: Callable[[dict[str, str]], None] | None = None):
        self.store, self.n, self.threads, self.summary, self.finished = store, n, threads, summary, finished
        self.pool: cf.ProcessPoolExecutor | None = None
        self.flight: dict[cf.Future, tuple[Job, Any]] = {}
        self.prep: set[cf.Future] = set()  # worlds being prepared (``runner.prepare``): no job, no result
        self.shown = shown  # called with {job display: phase} of the jobs in flight, as phases change
        self.phases = multiprocessing.get_context("spawn").Queue(maxsize=1000) if shown is not None else None
        self.current: dict[str, str] = {}

    def _start(self, n: int) -> cf.ProcessPoolExecutor:
        with thread_environment(self.threads):  # inherited by the workers as they spawn
            return cf.ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                          initializer=_init_worker, initargs=(self.phases,))

    def _submit(self, pool: cf.ProcessPoolExecutor, job: Job, attempt: int = 1) -> cf.Future | None:
        if not acquire(self.store, job, self.summary):
            return None
        tmp = self.store.new_tmp(job.id)
        try:
            future = pool.submit(_run_in_worker, job.to_dict(), str(tmp), str(self.store.dir / ".cache"),
                                 side_dirs(self.store, job), attempt)
        except BaseException:  # BrokenProcessPool: a worker died since the last wait; the job never started
            shutil.rmtree(tmp, ignore_errors=True)
            self.store.release(job.id)
            raise
        self.flight[future] = (job, tmp)
        return future

    def _land(self, future: cf.Future) -> None:
        job, tmp = self.flight.pop(future)
        try:
            result = future.result()
            self.store.commit(job.id, tmp)
            drop_checkpoint(self.store, job.id)
            self.finished(job, result)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone after a commit; an unfinished one never looks finished
            self.store.release(job.id)

    def run(self, jobs: list[Job]) -> None:
        from harness.runner import shared_worlds, world_key

        queue = list(jobs)
        ahead = shared_worlds(jobs)  # each prepared in a worker of its own just before its first job starts
        retry: list[Job] = []
        try:
            while queue or self.flight:
                self.pool = self.pool or self._start(self.n)
                refused = False
                while queue and len(self.flight) + len(self.prep) < self.n:
                    try:
                        key = world_key(queue[0]) if ahead else None
                        if key in ahead:
                            self.prep.add(self.pool.submit(_prepare_in_worker, queue[0].to_dict(), str(self.store.dir / ".cache")))
                            ahead.discard(key)
                            continue
                        self._submit(self.pool, queue[0])
                    except cf.process.BrokenProcessPool:  # the jobs in flight will show it; this one waits
                        refused = True
                        break
                    queue.pop(0)
                if not self.flight and not self.prep:
                    if refused:  # nothing in flight to surface the break: a fresh pool for the queue
                        self._close(kill=True)
                    continue
                done, _ = cf.wait([*self.flight, *self.prep], timeout=0.5, return_when=cf.FIRST_COMPLETED)
                self._show()
                self.prep -= done  # a preparation leaves only cache entries behind
                done = {f for f in done if f in self.flight}
                broken = [f for f in done if isinstance(f.exception(), cf.process.BrokenProcessPool)]
                for future in done:
                    if future not in broken:  # finished before the pool broke: kept
                        self._land(future)
                if broken:
                    retry += self._drop_in_flight()
                if retry and not self.flight:
                    self._close(kill=True)
                    for job in retry:
                        self._alone(job)
                    retry = []
        except BaseException:
            self._close(kill=True)
            self._drop_in_flight()
            raise
        finally:
            self._close(kill=False)

    def _show(self) -> None:
        """Drain the workers' phase reports and pass the in-flight jobs' phases to ``shown``."""
        if self.phases is None:
            return
        changed = False
        try:
            while True:
                job_id, text = self.phases.get_nowait()
                self.current[job_id] = text
                changed = True
        except Exception:  # queue.Empty (or a closed queue)
            pass
        if changed:
            flying = {job.id: job for job, _ in self.flight.values()}
            self.shown({flying[i].objective.display: t for i, t in self.current.items() if i in flying})

    def _drop_in_flight(self) -> list[Job]:
        """The jobs in flight (when a worker died, or the run stops), their temporary directories
        removed and their locks released; returned to run again alone after a worker's death."""
        jobs = []
        self.prep.clear()
        for future in list(self.flight):
            job, tmp = self.flight.pop(future)
            shutil.rmtree(tmp, ignore_errors=True)
            self.store.release(job.id)
            jobs.append(job)
        return jobs

    def _alone(self, job: Job) -> None:
        """A job whose pool broke, once more in a pool of its own; a second death is its failure."""
        from harness.runner import failed_result

        pool = self._start(1)
        try:
            future = self._submit(pool, job, attempt=2)
            if future is None:
                return
            cf.wait([future])
            if not isinstance(future.exception(), cf.process.BrokenProcessPool):
                self._land(future)
                return
            _, tmp = self.flight.pop(future)
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                error = "its worker process died (killed for memory, or a crash in native code), again when run alone"
                result = failed_result(job, error, error + "\n", env={"executor": "local", "attempts": 2})
                write_json_atomic(tmp / "job.json", job.to_dict())
                write_json_atomic(tmp / "result.json", result)
                self.store.commit(job.id, tmp)
                self.finished(job, result)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                self.store.release(job.id)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _close(self, kill: bool) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        if kill:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def run_pool(store: Store, jobs: list[Job], summary: Summary, n: int, bar=None) -> None:
    """Run ``jobs`` ``n`` at a time in worker processes, committing and recording each as it ends."""
    threads = job_threads(jobs[0].resources) if jobs else 1
    count = [0]

    def finished(job: Job, result: dict[str, Any]) -> None:
        count[0] += 1
        record(summary, job, result)
        line = f"[{count[0]}/{len(jobs)}] {job.id} {printable(job.display)}: {printable(describe(result))}"
        (bar.write if bar is not None else print)(line, file=sys.stderr)
        if bar is not None:
            bar.update(1)

    def shown(phases: dict[str, str]) -> None:
        if bar is not None:
            bar.set_postfix_str(" | ".join(f"{printable(k)[:20]}: {v}" for k, v in phases.items())[:100])

    JobPool(store, n, threads, summary, finished, shown if bar is not None else None).run(jobs)
