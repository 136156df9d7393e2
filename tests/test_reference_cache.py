"""The disk cache of reference rows: computed once per world, safe under concurrent jobs, never trusting a bad file."""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest

import harness
from harness.builtin.evaluations import reference_cache as rc
from harness.builtin.evaluations.references import PIXELS
from harness.testing import synthetic_context


@pytest.fixture(autouse=True)
def fresh_memo(monkeypatch):
    monkeypatch.setattr(rc, "_MEMO", {})


def counting(value, calls: list):
    def compute():
        calls.append(1)
        return value
    return compute


def entry_path(cache: Path, kind: str, key: str) -> Path:
    return cache / rc.SUBDIR / f"{kind}-{key}.json"


def test_computed_once_then_read_from_disk(tmp_path):
    calls: list = []
    key = rc.content_key("demo", {"C": 1.0}, {"labels": np.arange(5)})
    assert rc.cached(tmp_path, "demo", key, counting(0.25, calls), rc.is_rate) == 0.25
    stored = json.loads(entry_path(tmp_path, "demo", key).read_text())
    assert stored["key"] == key and stored["value"] == 0.25 and stored["format"] == rc.FORMAT
    rc._MEMO.clear()  # a new job process: only the disk remains
    assert rc.cached(tmp_path, "demo", key, counting(0.75, calls), rc.is_rate) == 0.25
    assert len(calls) == 1
    assert not [p for p in (tmp_path / rc.SUBDIR).iterdir() if p.name.endswith(".tmp")]


def test_without_a_directory_computes_and_memoises_in_process(tmp_path):
    calls: list = []
    key = rc.content_key("demo", {}, {"x": np.zeros(3)})
    assert rc.cached(None, "demo", key, counting(0.5, calls), rc.is_rate) == 0.5
    assert rc.cached(None, "demo", key, counting(0.9, calls), rc.is_rate) == 0.5
    assert len(calls) == 1 and not any(tmp_path.iterdir())


def test_the_key_follows_content_params_kind_and_version(monkeypatch):
    base = rc.content_key("k", {"C": 1.0}, {"labels": np.array([0, 1, 1])})
    assert base == rc.content_key("k", {"C": 1.0}, {"labels": np.array([0, 1, 1])})
    assert base != rc.content_key("k", {"C": 2.0}, {"labels": np.array([0, 1, 1])})
    assert base != rc.content_key("k", {"C": 1.0}, {"labels": np.array([0, 1, 0])})
    assert base != rc.content_key("k", {"C": 1.0}, {"labels": np.array([0, 1, 1], dtype=np.int32)})
    assert base != rc.content_key("other", {"C": 1.0}, {"labels": np.array([0, 1, 1])})
    assert rc.content_key("k", {}, {"a": ["x", "y"]}) != rc.content_key("k", {}, {"a": ["xy"]})
    monkeypatch.setattr(rc, "VERSION", "references-test")
    assert base != rc.content_key("k", {"C": 1.0}, {"labels": np.array([0, 1, 1])})


def _record(key: str, value) -> str:
    return json.dumps({"format": rc.FORMAT, "key": key, "value": value})


BAD = {
    "not json": lambda key: "{not json",
    "truncated": lambda key: _record(key, 0.1)[:20],
    "a list": lambda key: "[1, 2, 3]",
    "another key": lambda key: _record("0" * 64, 0.1),
    "no format": lambda key: json.dumps({"key": key, "value": 0.1}),
    "NaN": lambda key: _record(key, 0.1).replace("0.1", "NaN"),
    "Infinity": lambda key: _record(key, 0.1).replace("0.1", "1e999"),
    "above one": lambda key: _record(key, 1.5),
    "negative": lambda key: _record(key, -0.1),
    "a bool": lambda key: _record(key, True),
    "a string": lambda key: _record(key, "0.1"),
    "nested deep": lambda key: _record(key, 0.1).replace("0.1", "[" * 50000 + "]" * 50000),
    "huge": lambda key: _record(key, 0.1) + " " * (rc.MAX_BYTES + 10),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_entry_is_ignored_recomputed_and_replaced(tmp_path, case):
    key = rc.content_key("demo", {}, {"case": case})
    path = entry_path(tmp_path, "demo", key)
    path.parent.mkdir(parents=True)
    path.write_text(BAD[case](key))
    calls: list = []
    assert rc.cached(tmp_path, "demo", key, counting(0.5, calls), rc.is_rate) == 0.5
    assert calls == [1]
    assert json.loads(path.read_text())["value"] == 0.5  # replaced by a good entry


def test_rows_values_are_checked_too(tmp_path):
    key = rc.content_key("rows", {}, {})
    path = entry_path(tmp_path, "rows", key)
    path.parent.mkdir(parents=True)
    good = {"chance": {"hit1": 0.2}}
    for bad in ({"chance": 0.5}, {"chance": {"hit1": 2.0}}, {"chance": {"hit1": None}}, [0.1], {"chance": {"hit1": "0.1"}}):
        path.write_text(_record(key, bad))
        rc._MEMO.clear()
        assert rc.cached(tmp_path, "rows", key, lambda: good, rc.is_rows) == good
        assert json.loads(path.read_text())["value"] == good
    assert not rc.is_rows({"chance": {f"k{i}": 0.1 for i in range(rc.MAX_KEYS + 1)}})


def test_a_symlink_or_fifo_or_directory_is_never_read(tmp_path):
    secret = tmp_path / "elsewhere.json"
    key = rc.content_key("demo", {}, {"link": 1})
    secret.write_text(_record(key, 0.9))
    path = entry_path(tmp_path, "demo", key)
    path.parent.mkdir(parents=True)
    path.symlink_to(secret)
    assert rc.cached(tmp_path, "demo", key, lambda: 0.1, rc.is_rate) == 0.1
    assert not path.is_symlink() and json.loads(secret.read_text())["value"] == 0.9  # the link replaced, its target untouched

    key = rc.content_key("demo", {}, {"fifo": 1})
    fifo = entry_path(tmp_path, "demo", key)
    os.mkfifo(fifo)
    start = time.monotonic()
    assert rc.cached(tmp_path, "demo", key, lambda: 0.2, rc.is_rate) == 0.2  # no blocking open
    assert time.monotonic() - start < 5

    key = rc.content_key("demo", {}, {"dir": 1})
    entry_path(tmp_path, "demo", key).mkdir()
    for _ in range(2):  # cannot be replaced: computed each time, never an error
        rc._MEMO.clear()
        assert rc.cached(tmp_path, "demo", key, lambda: 0.3, rc.is_rate) == 0.3


def test_an_unwritable_cache_is_skipped(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    key = rc.content_key("demo", {}, {})
    assert rc.cached(blocker, "demo", key, lambda: 0.4, rc.is_rate) == 0.4
    assert rc.cached(tmp_path / "file" / "below", "demo", key, lambda: 0.4, rc.is_rate) == 0.4


def test_non_finite_values_are_returned_but_never_stored(tmp_path):
    key = rc.content_key("demo", {}, {"nan": 1})
    assert math.isnan(rc.cached(tmp_path, "demo", key, lambda: math.nan, rc.is_rate))
    assert not entry_path(tmp_path, "demo", key).exists()


def _slow_entry(cache: str, key: str, log: str) -> float:
    def compute():
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return 0.625
    return rc.cached(cache, "slow", key, compute, rc.is_rate)


def test_concurrent_jobs_compute_an_entry_once_and_all_read_it(tmp_path):
    key = rc.content_key("slow", {}, {})
    log = tmp_path / "computed.log"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        values = pool.starmap(_slow_entry, [(str(tmp_path), key, str(log))] * 4)
    assert values == [0.625] * 4
    assert len(log.read_text().split()) == 1  # the others waited on the lock, then read the file
    assert json.loads(entry_path(tmp_path, "slow", key).read_text())["value"] == 0.625


def test_a_held_lock_is_waited_for_then_given_up(tmp_path, monkeypatch):
    import fcntl

    key = rc.content_key("demo", {}, {"lock": 1})
    (tmp_path / rc.SUBDIR).mkdir()
    holder = os.open(tmp_path / rc.SUBDIR / f".demo-{key}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with rc.entry_lock(tmp_path / rc.SUBDIR / f".demo-{key}.lock", wait_s=0.2) as held:
            assert held is False  # a stuck holder does not stop the job: it computes without the lock
    finally:
        os.close(holder)


def test_evaluations_give_the_same_rows_with_and_without_the_cache(tmp_path, monkeypatch):
    ctx = synthetic_context()
    names = {"linear_probe": {}, "zeroshot_classification": {}, "arithmetic": {"lambdas": [1.0]}}
    plain = {n: harness.create_evaluation(n, **p).reference_rows(ctx) for n, p in names.items()}
    rc._MEMO.clear()
    cached_ctx = dataclasses.replace(ctx, cache_dir=tmp_path)
    first = {n: harness.create_evaluation(n, **p).reference_rows(cached_ctx) for n, p in names.items()}
    assert first == plain
    kinds = sorted(p.name.split("-")[0] for p in (tmp_path / rc.SUBDIR).glob("*.json"))
    assert kinds == ["arithmetic", "pixel"]  # the toy sets' oracles are exact or absent: nothing to cache
    rc._MEMO.clear()
    import harness.builtin.evaluations.linear_probe as lp

    monkeypatch.setattr(lp, "probe_accuracy", lambda *a, **k: pytest.fail("recomputed the pixel probe"))
    again = harness.create_evaluation("linear_probe").reference_rows(cached_ctx)
    assert again == plain["linear_probe"] and PIXELS in again


def test_a_changed_probe_setting_is_another_entry(tmp_path):
    ctx = dataclasses.replace(synthetic_context(), cache_dir=tmp_path)
    harness.create_evaluation("linear_probe").reference_rows(ctx)
    harness.create_evaluation("linear_probe", C=0.5).reference_rows(ctx)
    assert len(list((tmp_path / rc.SUBDIR).glob("pixel-probe-*.json"))) == 2


def test_an_estimated_blind_oracle_is_cached(tmp_path):
    from harness.builtin.evaluations.references import blind_oracle
    from harness.types import ClassificationSet

    labels = np.repeat([0, 1, 2], 20)
    rec = ClassificationSet("s", np.zeros((60, 2, 2, 3), np.uint8), labels, ["a", "b", "c"], ["{c}"],
                            tags={"attributes": {"colour": labels + 5}, "oracle_features": [["colour"]]})
    assert blind_oracle(rec, tmp_path) == 1.0
    (entry,) = (tmp_path / rc.SUBDIR).glob("blind-oracle-*.json")
    assert json.loads(entry.read_text())["value"] == 1.0


def test_the_probe_pins_pools_loaded_after_the_job_pinned_its_own(monkeypatch):
    """scikit-learn and scipy load their BLAS/OpenMP pools inside a job, after ``harness.threads.pinned``;
    the probe caps them itself (the reference probe at 1 thread, the evaluation's at torch's)."""
    import sklearn.linear_model
    from threadpoolctl import threadpool_info

    from harness.builtin.evaluations import linear_probe as lp

    seen = []

    class Recording(sklearn.linear_model.LogisticRegression):
        def fit(self, X, y):
            seen.append({info["num_threads"] for info in threadpool_info()})
            return super().fit(X, y)

    monkeypatch.setattr(sklearn.linear_model, "LogisticRegression", Recording)
    feats, labels = np.random.default_rng(0).normal(size=(40, 5)), np.arange(40) % 2
    lp.probe_accuracy(feats, labels, 0.5, 1.0, 50, 0, threads=1)
    assert seen[-1] == {1}
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    lp.probe_accuracy(feats, labels, 0.5, 1.0, 50, 0)
    assert seen[-1] == {1}
