"""Jobs and the run store: run_job output, determinism, failure isolation, resume, kill, locks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fakes
from harness.executors import run_suite
from harness.runner import run_job
from harness.store import Store
from harness.suite import expand, parse_suite

TIMING = {"train_time_s", "samples_per_s"}





def jobs_of(data: dict):
    suite = parse_suite(data)
    return suite, expand(suite)


def cli(args: list[str], site: Path, cwd: Path, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HARNESS_LOAD_PLUGINS": fakes.DIST}
    cmd = [sys.executable, "-m", "harness.cli", *args]
    if kw.pop("background", False):
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=kw.get("timeout", 180))


def write_suite(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def without_timing(metrics: dict) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk not in TIMING} if isinstance(v, dict) else v) for k, v in metrics.items()}


def test_run_job_writes_every_file(toy, tmp_path):
    _, jobs = jobs_of(fakes.toy_suite(steps=20, save=["embeddings", "checkpoint"]))
    out = tmp_path / "job"
    result = run_job(jobs[0], out)
    assert result["status"] == "ok", result["traceback"]
    assert json.loads((out / "result.json").read_text()) == json.loads(json.dumps(result))
    assert json.loads((out / "job.json").read_text())["id"] == jobs[0].id
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [5, 10, 15, 20]
    assert set(log[0]) >= {"step", "loss", "terms", "lr", "samples_per_s", "temperature", "elapsed_s"}
    assert log[-1]["loss"] < log[0]["loss"]  # training lowers the loss
    train = result["metrics"]["train"]
    assert train["steps"] == 20 and train["temperature"] == pytest.approx(0.1)
    assert -1 <= result["metrics"]["toy_meancos"]["mean_cos"] <= 1
    assert result["metric_info"]["toy_meancos"]["mean_cos"]["group"] == "gap"
    assert {"torch", "device", "torch_threads", "git_commit", "wall_time_s", "samples_per_s"} <= set(result["env"])
    with np.load(out / "embeddings" / "retrieval.npz") as emb:
        assert emb["image_emb"].shape == (64, 8) and emb["pair_emb"].shape == (128, 8)
        assert np.allclose(np.linalg.norm(emb["image_emb"], axis=1), 1, atol=1e-5)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert set(state["model"]) == {"image.weight", "image.bias", "text.weight", "text.bias"}


def test_untrained_row_evaluates_at_step_zero(toy, tmp_path):
    _, jobs = jobs_of(fakes.toy_suite(objectives=[{"name": "toy_dot", "label": "untrained", "train": {"steps": 0}}]))
    result = run_job(jobs[0], tmp_path / "job")
    assert result["status"] == "ok"
    assert result["metrics"]["train"]["steps"] == 0
    assert not (tmp_path / "job" / "log.jsonl").exists()


def test_same_job_twice_gives_identical_metrics(toy, tmp_path):
    _, jobs = jobs_of(fakes.toy_suite(steps=15))
    a = run_job(jobs[0], tmp_path / "a")
    b = run_job(jobs[0], tmp_path / "b")
    assert without_timing(a["metrics"]) == without_timing(b["metrics"])
    _, other_seed = jobs_of(fakes.toy_suite(steps=15, seeds=[1]))
    c = run_job(other_seed[0], tmp_path / "c")
    assert without_timing(c["metrics"]) != without_timing(a["metrics"])


def test_failures_only_fail_their_job(toy, tmp_path):
    data = fakes.toy_suite(objectives=[
        {"name": "toy_dot"},
        {"name": "toy_dot", "params": {"mode": "nan"}},
        {"name": "toy_dot", "params": {"mode": "raise"}},
    ])
    data["datasets"].append({"name": "toy", "params": {"fail": True}})
    suite, jobs = jobs_of(data)
    summary = run_suite(suite, jobs, out=tmp_path / "runs")
    assert len(summary.ok) == 1 and len(summary.failed) == 5
    results = {j.id: Store(tmp_path / "runs", "toy").result(j.id) for j in jobs}
    assert all(r is not None for r in results.values())
    errors = sorted(r["error"] for r in results.values() if r["status"] == "failed")
    assert sum("NonFiniteLoss: loss is nan at step 1 of 20 " in e for e in errors) == 1  # steps count from 1
    assert sum("dot loss asked to raise" in e for e in errors) == 1
    assert sum("toy dataset asked to fail" in e for e in errors) == 3
    assert all("\n" not in e for e in errors)
    assert all("Traceback" in r["traceback"] for r in results.values() if r["status"] == "failed")


def test_resume_skips_finished_and_retries_failed_only_on_request(toy, tmp_path):
    suite, jobs = jobs_of(fakes.toy_suite(objectives=[{"name": "toy_dot"}, {"name": "toy_dot", "params": {"mode": "nan"}}]))
    store = Store(tmp_path / "runs", "toy")
    first = run_suite(suite, jobs, out=tmp_path / "runs")
    assert (len(first.ok), len(first.failed)) == (1, 1)
    stamp = {j.id: (store.job_dir(j.id) / "result.json").stat().st_mtime_ns for j in jobs}

    again = run_suite(suite, jobs, out=tmp_path / "runs")
    assert again.ok == [] and len(again.skipped) == 1 and "--retry-failed" in again.failed[0][1]
    assert stamp == {j.id: (store.job_dir(j.id) / "result.json").stat().st_mtime_ns for j in jobs}

    retried = run_suite(suite, jobs, out=tmp_path / "runs", retry_failed=True)
    assert len(retried.skipped) == 1 and len(retried.failed) == 1 and "earlier" not in retried.failed[0][1]
    ok_id = next(j.id for j in jobs if store.status(j.id) == "ok")
    assert (store.job_dir(ok_id) / "result.json").stat().st_mtime_ns == stamp[ok_id]

    forced = run_suite(suite, jobs, out=tmp_path / "runs", force=True)
    assert len(forced.ok) == 1 and forced.skipped == []
    assert (store.job_dir(ok_id) / "result.json").stat().st_mtime_ns != stamp[ok_id]
    assert sorted(p.name for p in store.dir.iterdir() if not p.name.startswith(".")) == sorted(j.id for j in jobs)


def test_locks_and_stale_locks(tmp_path):
    store = Store(tmp_path, "s")
    assert store.claim("abc")
    assert not store.claim("abc")  # held by a live process (this one)
    store.release("abc")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (store.lock_dir / "abc.lock").write_text(json.dumps({"pid": int(dead.stdout), "host": store.host, "since": 0}))
    assert store.claim("abc")  # stale: its process is gone


def test_commit_replaces_atomically(tmp_path):
    store = Store(tmp_path, "s")
    tmp = store.new_tmp("j1")
    (tmp / "result.json").write_text('{"status": "failed"}')
    assert store.status("j1") is None  # nothing visible before the commit
    store.commit("j1", tmp)
    assert store.status("j1") == "failed"
    tmp2 = store.new_tmp("j1")
    (tmp2 / "result.json").write_text('{"status": "ok"}')
    store.commit("j1", tmp2)
    assert store.status("j1") == "ok"
    assert list(store.tmp_dir.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_resumes_and_each_job_ends_once(toy, tmp_path, sig):
    suite_file = write_suite(tmp_path / "toy.yaml", fakes.toy_suite(steps=30, sleep=0.03, seeds=[0, 1, 2]))
    out = tmp_path / "runs"
    proc = cli(["run", str(suite_file), "--out", str(out)], toy, tmp_path, background=True)
    suite_dir = out / "toy"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until one job finished and the next is in progress
        done = [p for p in suite_dir.glob("*/result.json")] if suite_dir.exists() else []
        running = list((suite_dir / ".tmp").glob("*")) if (suite_dir / ".tmp").exists() else []
        if done and running:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the run never reached the second job")
    first = {p.parent.name: p.stat().st_mtime_ns for p in suite_dir.glob("*/result.json")}
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    finished = [p for p in suite_dir.iterdir() if not p.name.startswith(".")]
    assert all((p / "result.json").exists() and json.loads((p / "result.json").read_text())["status"] == "ok" for p in finished)
    assert len(finished) < 3

    again = cli(["run", str(suite_file), "--out", str(out)], toy, tmp_path)
    assert again.returncode == 0, again.stderr
    finished = sorted(p.name for p in suite_dir.iterdir() if not p.name.startswith("."))
    assert len(finished) == 3
    assert all(json.loads((suite_dir / j / "result.json").read_text())["status"] == "ok" for j in finished)
    assert {j: (suite_dir / j / "result.json").stat().st_mtime_ns for j in first} == first  # not run twice
    assert list((suite_dir / ".tmp").iterdir()) == [] and list((suite_dir / ".locks").iterdir()) == []
    assert f"{3 - len(first)} to run" in again.stderr


@pytest.mark.slow
def test_two_runs_at_once_never_run_a_job_twice(toy, tmp_path):
    suite_file = write_suite(tmp_path / "toy.yaml", fakes.toy_suite(steps=20, sleep=0.02, seeds=[0, 1, 2, 3]))
    out = tmp_path / "runs"
    procs = [cli(["run", str(suite_file), "--out", str(out)], toy, tmp_path, background=True) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    ran = sum(err.count(": ok:") for _, err in outputs)
    finished = [p for p in (out / "toy").iterdir() if not p.name.startswith(".")]
    assert len(finished) == 4
    assert ran == 4  # every job ran exactly once across both runs


def test_cli_exit_code_and_summary_on_failure(toy, tmp_path):
    data = fakes.toy_suite(objectives=[{"name": "toy_dot"}, {"name": "toy_dot", "params": {"mode": "nan"}, "label": "nanloss"}])
    suite_file = write_suite(tmp_path / "toy.yaml", data)
    res = cli(["run", str(suite_file), "--out", str(tmp_path / "runs")], toy, tmp_path)
    assert res.returncode == 1
    assert "1 ok, 1 failed" in res.stderr
    assert "FAILED nanloss" in res.stderr and "NonFiniteLoss" in res.stderr
    assert "Traceback" not in res.stderr


def test_evaluate_reruns_from_saved_embeddings(toy, tmp_path):
    suite, jobs = jobs_of(fakes.toy_suite(steps=10, save=["embeddings"]))
    run_suite(suite, jobs, out=tmp_path / "runs")
    job_dir = tmp_path / "runs" / "toy" / jobs[0].id
    before = json.loads((job_dir / "result.json").read_text())
    data = json.loads((job_dir / "result.json").read_text())
    data["metrics"]["toy_meancos"]["mean_cos"] = 123.0
    (job_dir / "result.json").write_text(json.dumps(data))
    from harness.reevaluate import reevaluate

    assert reevaluate(tmp_path / "runs" / "toy") == ([], [])  # (bad input, failed)
    after = json.loads((job_dir / "result.json").read_text())
    assert after["metrics"]["toy_meancos"] == before["metrics"]["toy_meancos"]
    assert not math.isclose(after["metrics"]["toy_meancos"]["mean_cos"], 123.0)


def test_progress_line_shows_the_main_scores_the_evaluations_declare():
    """The console line quotes each evaluation's declared main score, read as the leaderboard reads
    it (a ``*`` pattern is the mean of its matches), not a metric the executor names itself."""
    from harness.executors import describe

    metrics = {
        "gap": {"centroid_distance": 0.25},
        "zeroshot_classification": {"shape": {"top1": 0.8}, "colour": {"top1": 1.0},
                                    "shape_colour": {"top1": 0.3}, "mean_top1": 0.9},
        "retrieval": {"a": {"image_to_text_r1": 0.2}, "b": {"image_to_text_r1": 0.4}},
    }
    declared = {"zeroshot_classification": {"key": "mean_top1"}, "retrieval": {"key": "*.image_to_text_r1"}}
    line = describe({"status": "ok", "metrics": metrics, "main_scores": declared, "env": {"wall_time_s": 12.4}})
    assert line == "ok: zeroshot_classification 0.900, retrieval 0.300, 12s"
    del metrics["zeroshot_classification"]["mean_top1"]  # a declared score that is missing is left out
    assert describe({"status": "ok", "metrics": metrics, "main_scores": declared, "env": {}}) == "ok: retrieval 0.300, 0s"
    assert describe({"status": "ok", "metrics": metrics, "main_scores": {"x": "junk"}, "env": {}}) == "ok: 0s"
    assert describe({"status": "failed", "error": "boom"}) == "failed: boom"
