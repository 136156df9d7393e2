"""Ray executor overhead: cluster start-up and seconds per job on trivial jobs, beside the local executor.

    .venv/bin/python benchmarks/ray_overhead.py [--jobs 12] [--cpus-per-job N]

The suite: ``--jobs`` untrained jobs (``steps: 0``, one per seed) of the tiny open_clip model on a
small ``shapes`` split with only the ``gap`` evaluation, so almost all of a job's time is the
executor's. Each executor runs the suite twice into a fresh store: pass 1 "cold" (first imports of
torch/open_clip in each process or Ray worker), pass 2 "warm" (``force``: same processes again).
Ray's start-up (``ray.init`` of a loopback-only local cluster) and shutdown are timed apart.
By default ``cpus_per_job`` = all CPUs, so Ray runs one job at a time like the local executor and
the per-job difference is Ray's overhead (task submission, worker scheduling, returning the files,
writing them into the store). Because the machine may be shared, the time spent inside ``run_job``
(each result's ``env.wall_time_s``) is reported too, and "overhead per job" = wall / jobs - that:
what the executor adds around the job. Target: < 1 s per job after start-up (the warm pass).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from harness.executors import run_suite
from harness.store import Store
from harness.suite import expand, parse_suite


def suite_data(jobs: int, cpus_per_job: int) -> dict:
    return {
        "name": "ray-overhead",
        "objectives": [{"name": "clip", "train": {"steps": 0}}],
        "encoders": [{"name": "open_clip", "params": {"model": "harness-tiny-vit"}}],
        "datasets": [{"name": "shapes", "params": {"train_size": 64, "eval_size": 32}}],
        "train": {"steps": 0, "batch_size": 32},
        "seeds": list(range(jobs)),
        "evaluations": ["gap"],
        "resources": {"cpus_per_job": cpus_per_job},
    }


def timed_pass(suite, jobs, out: Path, executor: str, force: bool) -> tuple[float, float]:
    """(wall seconds of one ``run_suite``, seconds spent inside ``run_job`` summed over the jobs)."""
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        summary = run_suite(suite, jobs, out=out, executor=executor, force=force)
    wall = time.perf_counter() - start
    if summary.failed or len(summary.ok) != len(jobs):
        raise SystemExit(f"{executor}: {len(summary.ok)} ok, failed: {summary.failed}")
    store = Store(out, suite.name)
    inside = sum(store.result(job.id)["env"]["wall_time_s"] for job in jobs)
    return wall, inside


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=12, help="number of trivial jobs (default 12)")
    parser.add_argument("--cpus-per-job", type=int, default=os.cpu_count() or 1,
                        help="resources.cpus_per_job (default: all CPUs, one job at a time)")
    args = parser.parse_args(argv)

    import ray

    from harness.executors.ray_cluster import start_local_cluster

    suite = parse_suite(suite_data(args.jobs, args.cpus_per_job))
    jobs = expand(suite)
    n = len(jobs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as tmp:
        local = [timed_pass(suite, jobs, Path(tmp) / "local", "local", force=i > 0) for i in range(2)]

        start = time.perf_counter()
        start_local_cluster(ray)
        startup = time.perf_counter() - start
        try:
            remote = [timed_pass(suite, jobs, Path(tmp) / "ray", "ray", force=i > 0) for i in range(2)]
        finally:
            start = time.perf_counter()
            ray.shutdown()
            shutdown = time.perf_counter() - start

    for label, passes, up, down in (("local", local, 0.0, 0.0), ("ray", remote, startup, shutdown)):
        for name, (wall, inside) in zip(("cold", "warm"), passes):
            rows.append([label, name, f"{up:.1f}" if name == "cold" else "", f"{down:.1f}" if name == "warm" else "",
                         n, f"{wall:.1f}", f"{wall / n:.2f}", f"{inside / n:.2f}", f"{(wall - inside) / n:.2f}"])
    print(f"# Ray executor overhead: {n} trivial jobs (steps 0, gap only), cpus_per_job={args.cpus_per_job}")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, ray {ray.__version__}, "
          f"python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(tabulate(rows, headers=["executor", "pass", "start-up (s)", "shutdown (s)", "jobs", "wall (s)",
                                  "per job (s)", "in run_job (s/job)", "overhead (s/job)"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
