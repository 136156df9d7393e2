"""Multi-worker jobs on Ray Train (``resources.workers_per_job``), on this CPU with gloo.

2 workers x B/2 must give the parameters of 1 process x B after 3 steps (1e-5) and the same stored
metrics (1e-5 relative, timing fields excluded), with the same job id and files. Each Ray Train run
costs tens of seconds on 2 cores, so there are two tests: the local executor (it starts a
loopback-only Ray), and the Ray executor (driving task of 0 CPUs) with micro-batching inside the
workers and a job that fails on every worker.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

import fakes
from harness.executors import run_suite
from harness.registry import Registry, set_registry
from harness.suite import expand, parse_suite

pytest.importorskip("ray.train.torch", reason="multi-worker jobs need ray[train]: pip install 'contrastive-harness[ray]'")

TIMING = {"train_time_s", "samples_per_s"}


def tiny_suite(name: str, resources: dict, train: dict | None = None) -> dict:
    return {
        "name": name,
        "objectives": [{"name": "clip"}],  # learnable temperature: the loss's own gradient is checked too
        "encoders": [{"name": "open_clip", "params": {"model": "harness-tiny-vit"}}],
        "datasets": [{"name": "shapes", "params": {"train_size": 64, "eval_size": 32}}],
        # lr 1e-4: Adam turns rounding noise in exactly-zero gradients (e.g. attention key biases)
        # into steps of up to ~lr * noise / eps; at 1e-3 that alone reaches ~4e-5 in 3 steps
        "train": {"steps": 3, "batch_size": 16, "lr": 1e-4, "warmup": 1, "log_every": 1, **(train or {})},
        "evaluations": ["gap", "retrieval"],
        "save": ["checkpoint"],
        "resources": resources,
    }


def run(data: dict, out: Path, executor: str = "local") -> dict[str, Path]:
    suite = parse_suite(data)
    jobs = expand(suite)
    summary = run_suite(suite, jobs, out=out, executor=executor)
    assert len(summary.ok) + len(summary.failed) == len(jobs)
    return {j.objective.display: out / suite.name / j.id for j in jobs}


def metrics_close(a: dict, b: dict, rel: float = 1e-5) -> None:
    for key, value in a.items():
        if key in TIMING:
            continue
        if isinstance(value, dict):
            metrics_close(value, b[key], rel)
        elif isinstance(value, float):
            assert math.isclose(value, b[key], rel_tol=rel, abs_tol=1e-7), key
        else:
            assert value == b[key], key
    assert set(a) == set(b)


def params_diff(a: Path, b: Path) -> float:
    ca, cb = torch.load(a / "checkpoint.pt", weights_only=True), torch.load(b / "checkpoint.pt", weights_only=True)
    diffs = [float((ca[part][k].float() - cb[part][k].float()).abs().max()) for part in ("model", "loss") for k in ca[part]]
    return max(diffs)


@pytest.mark.slow
def test_two_workers_match_one_process_and_store_the_same_job(tmp_path):
    one = run(tiny_suite("scale", {"cpus_per_job": 2}), tmp_path / "one")["clip"]
    two = run(tiny_suite("scale", {"cpus_per_job": 2, "workers_per_job": 2}), tmp_path / "two")["clip"]
    assert one.name == two.name  # the same job id
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    r1, r2 = (json.loads((d / "result.json").read_text()) for d in (one, two))
    assert r1["status"] == r2["status"] == "ok", r2.get("error")
    assert params_diff(one, two) <= 1e-5
    metrics_close(r1["metrics"], r2["metrics"])
    assert r2["env"]["workers_per_job"] == 2 and r1["env"]["workers_per_job"] == 1
    assert len(r2["env"]["peak_rss_mb_per_worker"]) == 2 and r2["env"]["torch_threads"] == 1
    assert not any("rss" in k or "worker" in k for k in r2["metrics"]["train"])
    logged = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [rec["step"] for rec in logged] == [1, 2, 3]  # rank 0's log only
    probes = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines() if '"probe"' in line]
    assert [rec["step"] for rec in probes] == [0, 1, 2, 3]  # rank 0 probes (3 steps: 0, 1, 2, 2, 3 -> a set)


@pytest.mark.slow
def test_ray_executor_runs_workers_with_micro_batches_and_records_a_failing_job(tmp_path, monkeypatch):
    """Toy towers with the built-in clip loss: 2 workers x 16 pairs in chunks of 8 (DDP's no_sync
    accumulation) equal one process x 32. ``toy_dot`` never gathers its inputs across workers: each
    worker refuses it, the group stops at once and the driver stores rank 0's failed record."""
    site = fakes.install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", fakes.DIST)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    set_registry(Registry())
    try:
        data = fakes.toy_suite(steps=3, objectives=[{"name": "clip"}, {"name": "toy_dot"}])
        data["train"]["lr"] = 1e-3
        one = run({**data, "resources": {"cpus_per_job": 2}}, tmp_path / "one")
        data["train"]["micro_batch"] = 8
        two = run({**data, "resources": {"cpus_per_job": 2, "workers_per_job": 2}}, tmp_path / "two", executor="ray")
    finally:
        set_registry(None)
    r1, r2 = (json.loads((d["clip"] / "result.json").read_text()) for d in (one, two))
    assert r2["status"] == "ok", r2.get("error")
    metrics_close(r1["metrics"], r2["metrics"])
    assert r2["env"]["workers_per_job"] == 2 and r2["env"]["micro_batch"] == 8
    failed = json.loads((two["toy_dot"] / "result.json").read_text())
    assert failed["status"] == "failed"
    assert failed["error"].startswith("ValueError: loss 'toy_dot' does not gather its inputs across workers")
    assert "\n" not in failed["error"] and (two["toy_dot"] / "job.json").exists()
    assert json.loads((one["toy_dot"] / "result.json").read_text())["status"] == "ok"  # fine in one process


@pytest.mark.slow
def test_a_job_of_two_workers_resumes_from_rank_0s_checkpoint(tmp_path, monkeypatch):
    """Rank 0 writes the checkpoint (every 4 of 12 steps; the one of step 8 outlives a finished
    ``run_workers``, whose caller would drop it); both workers of the next run resume from it and end
    with the first run's numbers."""
    from harness.executors.ray_train import LocalWorkers

    root = Path(__file__).resolve().parents[1]
    site = fakes.install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", fakes.DIST)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    set_registry(Registry())
    workers = None
    try:
        data = fakes.toy_suite(steps=12, objectives=[{"name": "clip"}])
        data["train"].update(lr=1e-3, checkpoint_every=4)
        data["resources"] = {"cpus_per_job": 2, "workers_per_job": 2}
        job = expand(parse_suite(data))[0]
        workers = LocalWorkers([job])
        dirs = {"checkpoint_dir": str(tmp_path / "ckpt"), "curves_dir": None}
        first = workers.run(job, tmp_path / "first", dirs)
        assert first["status"] == "ok", first.get("error")
        assert first["env"]["resumed_from_step"] == 0 and first["env"]["checkpoints_written"] == 2
        again = workers.run(job, tmp_path / "again", dirs)
    finally:
        if workers is not None:
            workers.close()
        set_registry(None)
    assert again["status"] == "ok", again.get("error")
    assert again["env"]["resumed_from_step"] == 8 and again["env"]["workers_per_job"] == 2
    def untimed(metrics: dict) -> dict:
        return {k: {kk: vv for kk, vv in v.items() if kk not in TIMING} for k, v in metrics.items()}

    assert untimed(again["metrics"]) == untimed(first["metrics"])  # bit-identical
    logged = [json.loads(line)["step"] for line in (tmp_path / "again" / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert logged == [5, 10, 12]
