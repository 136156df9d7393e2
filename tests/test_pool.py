"""Several jobs at once (``harness run --jobs N``): the same stored numbers as one at a time, the
store kept consistent, a Ctrl-C that leaves finished jobs and nothing half-written, a worker that
dies, and threads pinned to ``cpus_per_job``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import fakes
from harness.executors.pool import default_jobs
from harness.threads import THREAD_ENV, job_threads, pinned, thread_env

TIMING = {"train_time_s", "samples_per_s"}


def cli(args, site: Path, cwd: Path, background: bool = False):
    env = {**os.environ, "PYTHONPATH": str(site), "HARNESS_LOAD_PLUGINS": fakes.DIST}
    cmd = [sys.executable, "-m", "harness.cli", *args]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def stored(runs: Path) -> dict[str, dict]:
    """job id -> its metrics without timings, for every finished job under ``runs``."""
    out = {}
    for path in sorted(runs.glob("*/result.json")):
        result = json.loads(path.read_text())
        metrics = {k: ({kk: vv for kk, vv in v.items() if kk not in TIMING} if isinstance(v, dict) else v)
                   for k, v in result["metrics"].items()}
        out[path.parent.name] = {"status": result["status"], "metrics": metrics}
    return out


def test_default_jobs_is_the_cpus_over_cpus_per_job(monkeypatch):
    import harness.executors.pool as pool

    monkeypatch.setattr(pool, "cpu_count", lambda: 8)
    assert default_jobs({"cpus_per_job": 1}) == 8
    assert default_jobs({"cpus_per_job": 2}) == 4
    assert default_jobs({"cpus_per_job": 3}) == 2
    assert default_jobs({"cpus_per_job": 16}) == 1  # never 0
    assert default_jobs({}) == 8


def test_a_job_is_pinned_to_its_threads_for_torch_and_blas():
    import torch
    from threadpoolctl import threadpool_info

    assert job_threads({"cpus_per_job": 1}) == 1
    assert job_threads({"cpus_per_job": 4}, workers=2) == min(2, os.cpu_count())
    assert job_threads({"cpus_per_job": 10**6}) == len(os.sched_getaffinity(0))  # never more than the machine
    assert thread_env(3) == {name: "3" for name in THREAD_ENV}
    before = torch.get_num_threads()
    with pinned(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before


@pytest.mark.slow
def test_jobs_at_once_store_the_same_numbers_as_one_at_a_time(tmp_path):
    site = fakes.install(tmp_path / "site")
    data = fakes.toy_suite(steps=30, seeds=(0, 1, 2, 3))
    data["resources"] = {"cpus_per_job": 1}
    suite = tmp_path / "toy.yaml"
    suite.write_text(yaml.safe_dump(data))
    one = cli(["run", str(suite), "--out", "one", "--jobs", "1"], site, tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    assert "jobs at once" not in one.stderr
    two = cli(["run", str(suite), "--out", "two", "--jobs", "2"], site, tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "running 2 jobs at once" in two.stderr and two.stderr.count(": ok: ") == 4
    a, b = stored(tmp_path / "one" / "toy"), stored(tmp_path / "two" / "toy")
    assert len(a) == 4 and a == b  # every stored metric equal, bit for bit
    store = tmp_path / "two" / "toy"
    assert not any((store / ".locks").iterdir()) and not any((store / ".tmp").iterdir())
    again = cli(["run", str(suite), "--out", "two", "--jobs", "2"], site, tmp_path)
    assert again.returncode == 0 and "4 already finished" in again.stderr  # nothing runs twice


@pytest.mark.slow
def test_ctrl_c_with_jobs_in_flight_keeps_finished_jobs_and_leaves_nothing_half_written(tmp_path):
    site = fakes.install(tmp_path / "site")
    data = fakes.toy_suite(steps=40, sleep=0.05, seeds=tuple(range(6)))  # >= 2 s a job
    suite = tmp_path / "toy.yaml"
    suite.write_text(yaml.safe_dump(data))
    proc = cli(["run", str(suite), "--out", "runs", "--jobs", "2"], site, tmp_path, background=True)
    store = tmp_path / "runs" / "toy"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(store.glob("*/result.json"))) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    finished = list(store.glob("*/result.json"))
    assert 2 <= len(finished) < 6
    assert not any((store / ".locks").iterdir()) and not any((store / ".tmp").iterdir())
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True).stdout.split()
    assert not [pid for pid in leftover if _parent(pid) == proc.pid]  # no worker outlives the driver
    rerun = cli(["run", str(suite), "--out", "runs", "--jobs", "2"], site, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished)} already finished" in rerun.stderr and len(list(store.glob("*/result.json"))) == 6


def _parent(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_job_after_one_retry_and_the_others_finish(tmp_path):
    site = fakes.install(tmp_path / "site")
    fakes.install_crash(site)
    marker = tmp_path / "attempts.txt"
    data = fakes.toy_suite(steps=10, seeds=(0, 1, 2))
    data["datasets"].append({"name": "ray_crash", "params": {"marker": str(marker)}})
    suite = tmp_path / "toy.yaml"
    suite.write_text(yaml.safe_dump(data))
    env = {**os.environ, "PYTHONPATH": str(site), "HARNESS_LOAD_PLUGINS": f"{fakes.DIST},{fakes.CRASH_DIST}"}
    run = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite), "--out", "runs", "--jobs", "2"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]  # some job failed
    results = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "toy").glob("*/result.json")]
    assert sorted(r["status"] for r in results) == ["failed"] * 3 + ["ok"] * 3, run.stderr[-3000:]
    crashed = [r for r in results if r["status"] == "failed"]
    assert all(r["error"].startswith("its worker process died (killed for memory, or a crash in native code), "
                                     "again when run alone") for r in crashed)
    # each crash job ran alone once after its pool broke (and at most once before, in the shared pool)
    attempts = marker.read_text().splitlines()
    assert 3 <= len(attempts) <= 6
    store = tmp_path / "runs" / "toy"
    assert not any((store / ".locks").iterdir()) and not any((store / ".tmp").iterdir())


def test_pinned_also_caps_the_pools_a_library_loads_during_the_job(monkeypatch):
    for name in THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    with pinned(1):
        assert all(os.environ[name] == "1" for name in THREAD_ENV)
    assert not any(name in os.environ for name in THREAD_ENV)  # restored


def test_a_job_reports_its_phases_after_training(toy, tmp_path):
    from harness.runner import run_job
    from harness.suite import expand, parse_suite

    job = expand(parse_suite(fakes.toy_suite(steps=4)))[0]
    seen = []
    result = run_job(job, tmp_path / "job", progress=lambda state: seen.append((state.phase, state.step)))
    assert result["status"] == "ok"
    phases = [p for p, _ in seen]
    assert phases[:4] == ["train"] * 4 and [s for _, s in seen[:4]] == [1, 2, 3, 4]
    assert phases[4:] == ["embed", "evaluate toy_meancos"]


@pytest.mark.slow
def test_the_pool_shows_the_phases_of_the_jobs_in_flight(toy, tmp_path):
    from harness.executors.common import Summary
    from harness.executors.pool import JobPool
    from harness.store import Store
    from harness.suite import expand, parse_suite

    jobs = expand(parse_suite(fakes.toy_suite(steps=30, sleep=0.05, seeds=(0, 1))))
    store = Store(tmp_path / "runs", "toy")
    seen, done = [], []
    JobPool(store, 2, 1, Summary(), lambda job, result: done.append(result["status"]), seen.append).run(jobs)
    assert done == ["ok", "ok"]
    texts = [t for phases in seen for t in phases.values()]
    assert any(t.startswith("train ") and t.endswith("/30") for t in texts), texts
