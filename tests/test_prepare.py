"""A world's model-free reference values are computed once, before its first job (``runner.prepare``):
by each executor of this machine, once per world that several jobs share, never changing a number."""

from __future__ import annotations

import dataclasses
import os

import pytest

import fakes
import harness
from harness.builtin.evaluations import reference_cache as rc
from harness.builtin.evaluations.references import PIXELS
from harness.testing import synthetic_context


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(rc, "_MEMO", {})


def toy_jobs(seeds=(0, 1, 2), datasets=None, evaluation="toy_prepared", steps=4, sleep=0.0):
    from harness.suite import expand, parse_suite

    data = fakes.toy_suite(steps=steps, seeds=seeds, sleep=sleep)
    data["evaluations"] = [evaluation]
    if datasets is not None:
        data["datasets"] = datasets
    return expand(parse_suite(data))


def notes(cache, pids: bool = False) -> list[tuple]:
    path = cache / "toy-prepare.log"
    if not path.exists():
        return []
    rows = [(what, int(pid), float(t)) for what, pid, t in (line.split() for line in path.read_text().splitlines())]
    return rows if pids else [(what, t) for what, _, t in rows]


def test_jobs_of_one_world_share_its_key_and_other_worlds_do_not(toy):
    from harness.runner import shared_worlds, world_key

    one = toy_jobs(seeds=(0, 1, 2))
    assert len({world_key(j) for j in one}) == 1 and shared_worlds(one) == {world_key(one[0])}
    two = toy_jobs(seeds=(0, 1), datasets=[{"name": "toy", "params": {"seed": 0}}, {"name": "toy", "params": {"seed": 1}}])
    assert len({world_key(j) for j in two}) == 2 and len(shared_worlds(two)) == 2
    assert shared_worlds(toy_jobs(seeds=(0,))) == set()  # one job: nothing to share
    other_eval = toy_jobs(seeds=(0,), evaluation="toy_meancos")
    assert world_key(other_eval[0]) != world_key(one[0])  # the evaluations are part of the world
    assert shared_worlds(toy_jobs(seeds=(0, 1, 2), evaluation="toy_meancos")) == set()  # nothing to prepare
    threads = dataclasses.replace(one[0], resources={"cpus_per_job": 2})
    assert world_key(threads) != world_key(one[0]) or harness.threads.cpu_count() < 2  # a probe's key has threads


def test_prepare_calls_the_hook_with_the_jobs_sets_and_is_best_effort(toy, tmp_path):
    from harness.runner import prepare

    job = toy_jobs(seeds=(0,))[0]
    assert prepare(job, tmp_path) >= 0
    assert [w for w, _ in notes(tmp_path)] == ["prepare"]
    assert prepare(toy_jobs(seeds=(0,), evaluation="toy_meancos")[0], tmp_path / "none") is None  # no hook
    broken = toy_jobs(seeds=(0,), datasets=[{"name": "toy", "params": {"fail": True}}])[0]
    assert prepare(broken, tmp_path / "broken") is None  # the job itself meets the error and records it


def test_a_preparations_library_warnings_are_logged_in_the_cache(toy, tmp_path, monkeypatch):
    import json
    import warnings

    from harness.runner import PREPARE_LOG, prepare

    job = toy_jobs(seeds=(0,))[0]
    import harness_testplugins as plugins

    monkeypatch.setattr(plugins.PreparedMeanCos, "prepare", lambda self, records, cache: warnings.warn("did not converge"))
    assert prepare(job, tmp_path) is not None
    (record,) = [json.loads(line) for line in (tmp_path / PREPARE_LOG).read_text().splitlines()]
    assert record["warning"] == "did not converge" and record["count"] == 1


def test_one_at_a_time_prepares_each_shared_world_once_before_its_first_job(toy, tmp_path):
    from harness.executors.common import Summary, plan
    from harness.executors.local import run_local
    from harness.runner import world_key
    from harness.store import Store

    jobs = toy_jobs(seeds=(0, 1), datasets=[{"name": "toy", "params": {"seed": 0}}, {"name": "toy", "params": {"seed": 1}}])
    store = Store(tmp_path / "runs", "toy")
    summary = Summary()
    run_local(store, plan(store, jobs, False, False, summary), summary)
    assert len(summary.ok) == 4
    seen = [w for w, _ in notes(store.dir / ".cache")]
    expected, worlds = [], set()
    for job in jobs:  # in the order the jobs ran: each world prepared just before its first job
        if world_key(job) not in worlds:
            worlds.add(world_key(job))
            expected.append("prepare")
        expected.append("evaluate")
    assert seen == expected and len(worlds) == 2


@pytest.mark.slow
def test_the_pool_prepares_a_world_in_a_worker_while_another_trains(toy, tmp_path):
    from harness.executors.common import Summary, plan
    from harness.executors.pool import JobPool
    from harness.store import Store

    jobs = toy_jobs(seeds=(0, 1, 2), steps=20, sleep=0.05)
    store = Store(tmp_path / "runs", "toy")
    summary, done = Summary(), []
    JobPool(store, 2, 1, summary, lambda job, result: done.append(result["status"])).run(plan(store, jobs, False, False, summary))
    assert done == ["ok"] * 3
    seen = notes(store.dir / ".cache", pids=True)
    assert [w for w, _, _ in seen].count("prepare") == 1
    (_, pid, prepared), = [row for row in seen if row[0] == "prepare"]
    assert pid != os.getpid()  # in a worker of the pool, not in the driver
    assert all(t > prepared for w, _, t in seen if w == "evaluate")  # ready before any job evaluated


def test_a_builtin_evaluation_prepares_what_its_reference_rows_then_read(tmp_path, monkeypatch):
    ctx = dataclasses.replace(synthetic_context(), cache_dir=tmp_path)
    records = [es.record for es in ctx.sets]
    names = {"linear_probe": {}, "zeroshot_classification": {}, "arithmetic": {"lambdas": [1.0]}}
    plain = {n: harness.create_evaluation(n, **p).reference_rows(dataclasses.replace(ctx, cache_dir=None))
             for n, p in names.items()}
    rc._MEMO.clear()
    for n, p in names.items():
        harness.create_evaluation(n, **p).prepare(records, tmp_path)
    kinds = sorted(p.name.split("-")[0] for p in (tmp_path / rc.SUBDIR).glob("*.json"))
    assert kinds == ["arithmetic", "pixel"]
    rc._MEMO.clear()
    import harness.builtin.evaluations.linear_probe as lp
    import harness.builtin.evaluations.references as refs

    monkeypatch.setattr(lp, "probe_accuracy", lambda *a, **k: pytest.fail("recomputed the pixel probe"))
    monkeypatch.setattr(refs, "arithmetic_rows", lambda *a, **k: pytest.fail("recomputed the arithmetic oracle"))
    again = {n: harness.create_evaluation(n, **p).reference_rows(ctx) for n, p in names.items()}
    assert again == plain and PIXELS in again["linear_probe"]
