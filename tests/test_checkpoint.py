"""Long runs: mid-run checkpoints (``train.checkpoint_every``), resume after a kill with the numbers of
an uninterrupted run, refusal of bad checkpoints, and TensorBoard curves (``log: [tensorboard]``)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import fakes
import harness
from harness.executors import run_suite
from harness.executors.common import side_dirs
from harness.job import Job
from harness.runner import run_job
from harness.store import Store
from harness.suite import expand, parse_suite

ROOT = Path(harness.__file__).resolve().parents[1]  # this checkout, also for subprocesses
TIMING = {"train_time_s", "samples_per_s"}
LOG_TIMING = {"samples_per_s", "elapsed_s"}


def toy_job(steps: int = 30, every: int = 5, **train) -> Job:
    data = fakes.toy_suite(steps=steps)
    data["train"].update(checkpoint_every=every, **train)
    return expand(parse_suite(data))[0]


def without_timing(metrics: dict) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk not in TIMING} if isinstance(v, dict) else v)
            for k, v in metrics.items()}


def log_records(job_dir: Path) -> list[dict]:
    """The job's log records without timings (warnings are not training records)."""
    records = [json.loads(line) for line in (job_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in LOG_TIMING} for r in records if "warning" not in r]


def warnings_of(job_dir: Path) -> list[str]:
    records = [json.loads(line) for line in (job_dir / "log.jsonl").read_text().splitlines()]
    return [r["warning"] for r in records if "warning" in r]


def interrupt_at(step: int):
    """A progress callback that stops the run after ``step`` steps, as the user's Ctrl-C would."""

    def progress(state):
        if state.step == step:
            raise KeyboardInterrupt

    return progress


def resumed_run(job: Job, tmp: Path, stop: int) -> dict:
    """Run ``job`` with checkpoints until ``stop`` steps, interrupt it, run it again; the second result."""
    ckpt = tmp / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        run_job(job, tmp / "first", progress=interrupt_at(stop), checkpoint_dir=ckpt)
    assert (ckpt / "checkpoint.pt").is_file()
    return run_job(job, tmp / "second", checkpoint_dir=ckpt)


# ------------------------------------------------------------------ in process


def test_checkpoint_every_and_log_are_not_in_the_job_id(toy):
    a, b, c = toy_job(every=5), toy_job(every=0), toy_job(every=100)
    assert a.id == b.id == c.id
    assert "checkpoint_every" not in c.train and a.train["checkpoint_every"] == 5  # the default is left out
    data = fakes.toy_suite(steps=30)
    data["log"] = ["tensorboard"]
    logged = expand(parse_suite(data))[0]
    assert logged.log == ["tensorboard"] and logged.id == c.id
    assert "log" not in c.to_dict() and logged.to_dict()["log"] == ["tensorboard"]


@pytest.mark.parametrize("train", [{}, {"micro_batch": 8}, {"grad_clip": 1.0, "warmup": 7}],
                         ids=["plain", "gradcache", "clip-warmup"])
def test_an_interrupted_job_resumes_with_every_number_of_an_uninterrupted_run(toy, tmp_path, train):
    job = toy_job(steps=23, every=5, **train)
    whole = run_job(job, tmp_path / "whole")
    result = resumed_run(job, tmp_path, stop=13)
    assert result["status"] == "ok", result["traceback"]
    assert result["env"]["resumed_from_step"] == 10 and whole["env"]["resumed_from_step"] == 0
    assert result["env"]["checkpoints_written"] == 2  # at 15 and 20 (never at the last step)
    assert without_timing(result["metrics"]) == without_timing(whole["metrics"])
    assert log_records(tmp_path / "second") == log_records(tmp_path / "whole")
    assert warnings_of(tmp_path / "second") == []


@pytest.mark.parametrize("objective", [{"name": "albef_itc", "params": {"queue_size": 64}}, {"name": "sogclr"}],
                         ids=["albef_itc-ema-queues", "sogclr-setup-per-pair-state"])
def test_loss_state_ema_towers_and_setup_resume_exactly(toy, tmp_path, monkeypatch, objective):
    """harness-objectives' losses with state: ALBEF's momentum towers (``LoopState.ema``) and queues
    sized at the first batch, SogCLR's per-pair estimates sized by ``setup(dataset_size)``."""
    pytest.importorskip("harness_objectives")
    from harness.registry import Registry, set_registry

    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", f"{fakes.DIST},harness-objectives")
    set_registry(Registry())
    data = fakes.toy_suite(steps=23, objectives=[objective])
    data["train"]["checkpoint_every"] = 5
    job = expand(parse_suite(data))[0]
    whole = run_job(job, tmp_path / "whole")
    result = resumed_run(job, tmp_path, stop=13)
    assert whole["status"] == result["status"] == "ok", result["traceback"]
    payload_ema = torch.load(tmp_path / "ckpt" / "checkpoint.pt", weights_only=True)["ema"]
    assert (payload_ema is not None) == (objective["name"] == "albef_itc")
    assert result["env"]["resumed_from_step"] == 10 and warnings_of(tmp_path / "second") == []
    assert without_timing(result["metrics"]) == without_timing(whole["metrics"])
    assert log_records(tmp_path / "second") == log_records(tmp_path / "whole")


def test_checkpoint_holds_everything_a_resume_needs(toy, tmp_path):
    job = toy_job(steps=12, every=4)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, tmp_path / "j", progress=interrupt_at(10), checkpoint_dir=tmp_path / "ck")
    payload = torch.load(tmp_path / "ck" / "checkpoint.pt", weights_only=True)
    assert payload["key"] == job.id and payload["step"] == 8 and payload["steps"] == 12
    assert set(payload) >= {"model", "loss", "ema", "optimizer", "scaler", "data", "rng", "diagnostics", "log"}
    assert set(payload["rng"]) == {"torch", "cuda", "python", "numpy"}
    assert set(payload["data"]) == {"rng", "order", "pos"}
    assert [json.loads(line)["step"] for line in payload["log"]["text"].splitlines()] == [5]
    assert list((tmp_path / "ck").iterdir()) == [tmp_path / "ck" / "checkpoint.pt"]  # no temporary left


def _bad_checkpoints(job: Job, tmp: Path) -> dict[str, callable]:
    """name -> a function that puts that bad checkpoint at ``path``."""
    other = toy_job(steps=30, every=5, lr=0.02)  # another job: same shapes, another id
    good = tmp / "good"
    with pytest.raises(KeyboardInterrupt):
        run_job(other, tmp / "other", progress=interrupt_at(12), checkpoint_dir=good)
    blob = (good / "checkpoint.pt").read_bytes()

    def edited(change):
        def put(path: Path) -> None:
            payload = torch.load(good / "checkpoint.pt", weights_only=True)
            payload["key"] = job.id
            change(payload)
            torch.save(payload, path)
        return put

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp / "pwned"),))

    def moments_of_another_model(d):
        d["optimizer"]["state"][0] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(7), "exp_avg_sq": torch.zeros(7)}

    return {
        "garbage": lambda p: p.write_bytes(b"not a checkpoint at all"),
        "truncated": lambda p: p.write_bytes(blob[: len(blob) // 2]),
        "another job's": lambda p: p.write_bytes(blob),
        "symlink": lambda p: p.symlink_to(good / "checkpoint.pt"),
        "fifo": lambda p: os.mkfifo(p),
        "huge": lambda p: os.truncate(p.write_bytes(b"") or p, 2**34),  # sparse
        "hostile pickle": lambda p: torch.save({"format": Boom()}, p),
        "other shapes": edited(lambda d: d["model"].update({"image.weight": torch.zeros(3, 48)})),
        "step out of range": edited(lambda d: d.update(step=10**6)),
        "bad rng": edited(lambda d: d["rng"].update(python="[3, [1, 2], null]")),
        "not a permutation": edited(lambda d: d["data"].update(order=torch.zeros(256, dtype=torch.int64))),
        "optimizer of another model": edited(moments_of_another_model),
    }


def test_a_bad_checkpoint_is_refused_in_one_line_and_the_job_starts_from_zero(toy, tmp_path):
    job = toy_job(steps=30, every=5)
    whole = run_job(job, tmp_path / "whole")
    bad = _bad_checkpoints(job, tmp_path)
    good = (tmp_path / "good" / "checkpoint.pt").read_bytes()
    for name, put in bad.items():
        ckpt = tmp_path / f"ck-{name.replace(' ', '_')}"
        ckpt.mkdir()
        put(ckpt / "checkpoint.pt")
        out = tmp_path / f"run-{name.replace(' ', '_')}"
        result = run_job(job, out, checkpoint_dir=ckpt)
        assert result["status"] == "ok", (name, result["traceback"])
        assert result["env"]["resumed_from_step"] == 0, name
        assert without_timing(result["metrics"]) == without_timing(whole["metrics"]), name
        assert log_records(out) == log_records(tmp_path / "whole"), name
        refused = [w for w in warnings_of(out) if w.startswith("checkpoint refused: ")]
        assert len(refused) == 1 and "\n" not in refused[0], (name, warnings_of(out))
        assert (ckpt / "checkpoint.pt").is_file() and not (ckpt / "checkpoint.pt").is_symlink(), name
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "good" / "checkpoint.pt").read_bytes() == good  # a symlink's target is never written through


def test_a_finished_job_drops_its_checkpoint_and_save_checkpoint_keeps_the_final_weights(toy, tmp_path):
    data = fakes.toy_suite(steps=12, seeds=[0, 1], save=["checkpoint"])
    data["train"]["checkpoint_every"] = 4
    suite = parse_suite(data)
    jobs = expand(suite)
    store = Store(tmp_path / "runs", "toy")
    leftover = Path(side_dirs(store, jobs[1])["checkpoint_dir"])
    leftover.mkdir(parents=True)
    (leftover / "checkpoint.pt").write_bytes(b"junk")  # refused, then replaced, then dropped
    summary = run_suite(suite, jobs, out=tmp_path / "runs")
    assert len(summary.ok) == 2
    assert not (store.dir / ".checkpoints").exists() or list((store.dir / ".checkpoints").iterdir()) == []
    for job in jobs:
        final = torch.load(store.job_dir(job.id) / "checkpoint.pt", weights_only=True)
        assert set(final) == {"model", "loss", "job"}  # the job's own checkpoint.pt, as before
        assert store.result(job.id)["env"]["resumed_from_step"] == 0
        assert store.result(job.id)["env"]["attempts"] == 1


def test_open_clip_tiny_model_resumes_bit_identically(tmp_path):
    data = {
        "name": "tiny",
        "objectives": ["clip"],
        "encoders": [{"name": "open_clip", "params": {"model": "harness-tiny-cnn"}}],
        "datasets": [{"name": "shapes", "params": {"train_size": 256, "eval_size": 32}}],
        "train": {"steps": 9, "batch_size": 16, "lr": 1e-3, "log_every": 2, "checkpoint_every": 3, "warmup": 2,
                  "gap_curve": 4},
        "evaluations": ["gap"],
    }
    job = expand(parse_suite(data))[0]
    torch.set_num_threads(1)
    whole = run_job(job, tmp_path / "whole", curves_dir=tmp_path / "tb-whole")
    with pytest.raises(KeyboardInterrupt):
        run_job(job, tmp_path / "first", progress=interrupt_at(7), checkpoint_dir=tmp_path / "ck", curves_dir=tmp_path / "tb")
    result = run_job(job, tmp_path / "second", checkpoint_dir=tmp_path / "ck", curves_dir=tmp_path / "tb")
    assert whole["status"] == "ok" and result["status"] == "ok", result["traceback"]
    assert result["env"]["resumed_from_step"] == 6
    assert without_timing(result["metrics"]) == without_timing(whole["metrics"])
    assert log_records(tmp_path / "second") == log_records(tmp_path / "whole")  # probes and gap curve included
    assert [r["step"] for r in log_records(tmp_path / "whole") if "gap" in r] == [0, 3, 6, 9]
    if importlib.util.find_spec("tensorboard"):  # the attribute probes over training as curves too
        curves, resumed = scalars(tmp_path / "tb-whole"), scalars(tmp_path / "tb")
        assert [s for s, _ in curves["probe/shape"]] == [0, 2, 4, 7, 9]
        assert [s for s, _ in curves["gap/centroid_distance"]] == [0, 3, 6, 9]
        assert {"batch/shape_only_rows", "temperature", "lr"} <= set(curves)
        assert all(resumed[tag] == curves[tag] for tag in curves if not tag.startswith("throughput"))


# ------------------------------------------------------------------ TensorBoard


def scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of the event files in ``directory``, as TensorBoard reads them (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_curves_continue_across_a_resume(toy, tmp_path):
    pytest.importorskip("tensorboard")
    job = toy_job(steps=23, every=5)
    run_job(job, tmp_path / "whole", curves_dir=tmp_path / "tb-whole")
    with pytest.raises(KeyboardInterrupt):
        run_job(job, tmp_path / "first", progress=interrupt_at(19), checkpoint_dir=tmp_path / "ck",
                curves_dir=tmp_path / "tb")
    run_job(job, tmp_path / "second", checkpoint_dir=tmp_path / "ck", curves_dir=tmp_path / "tb")
    whole, resumed = scalars(tmp_path / "tb-whole"), scalars(tmp_path / "tb")
    assert {"loss/total", "loss/contrastive", "lr", "temperature", "throughput/samples_per_s", "epoch"} <= set(whole)
    assert [s for s, _ in whole["loss/total"]] == [5, 10, 15, 20, 23]
    for tag in whole:
        if not tag.startswith("throughput"):
            assert resumed[tag] == whole[tag], tag  # same steps, same values, the killed run's tail purged


def test_a_suite_with_log_tensorboard_writes_curves_per_job_outside_the_job_dirs(toy, tmp_path):
    pytest.importorskip("tensorboard")
    data = fakes.toy_suite(steps=10, seeds=[0, 1])
    data["log"] = ["tensorboard"]
    suite = parse_suite(data)
    jobs = expand(suite)
    run_suite(suite, jobs, out=tmp_path / "runs")
    store = Store(tmp_path / "runs", "toy")
    for job in jobs:
        curves = scalars(store.dir / "tensorboard" / job.id)
        assert [s for s, _ in curves["loss/total"]] == [5, 10]
        assert not any(p.name.startswith("events") for p in store.job_dir(job.id).rglob("*"))
    from harness.leaderboard.load import load_runs

    assert len(load_runs(store.dir).runs) == 2  # the curves directory is no job


def test_log_tensorboard_without_tensorboard_is_one_line_at_validate_time(toy, tmp_path, monkeypatch, cli):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    data = fakes.toy_suite(steps=2)
    data["log"] = ["tensorboard"]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    code, _, err = cli("validate", str(path))
    assert code == 2 and err.count("\n") == 1
    assert "log: tensorboard needs the tensorboard package: pip install 'contrastive-harness[tensorboard]'" in err
    data["log"] = []
    path.write_text(yaml.safe_dump(data))
    code, _, err = cli("run", str(path), "--out", str(tmp_path / "runs"), "--log", "tensorboard")
    assert code == 2 and "pip install 'contrastive-harness[tensorboard]'" in err
    if real("tensorboard") is None:
        return
    monkeypatch.setattr(importlib.util, "find_spec", real)
    code, _, err = cli("run", str(path), "--out", str(tmp_path / "runs"), "--log", "tensorboard")
    assert code == 0, err
    job = expand(parse_suite(data))[0]  # --log changes no job id
    assert (tmp_path / "runs" / "toy" / job.id / "result.json").is_file()
    assert [s for s, _ in scalars(tmp_path / "runs" / "toy" / "tensorboard" / job.id)["loss/total"]] == [2]


# ------------------------------------------------------------------ a killed process


def harness_cli(args: list[str], site: Path, cwd: Path, background: bool = False):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "HARNESS_LOAD_PLUGINS": fakes.DIST}
    cmd = [sys.executable, "-m", "harness.cli", *args]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def wait_for_checkpoints(path: Path, count: int, proc, timeout: float = 120) -> None:
    """Until ``path`` has been (re)written ``count`` times (seen by its inode and mtime changing)."""
    seen: set[tuple[int, int]] = set()
    deadline = time.time() + timeout
    while len(seen) < count:
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"saw {len(seen)} checkpoint(s) of {count} before the run ended or timed out")
        try:
            info = os.stat(path)
            seen.add((info.st_ino, info.st_mtime_ns))  # an inode number alone may be reused
        except FileNotFoundError:
            pass
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_killed_run_resumes_each_job_from_its_last_checkpoint(toy, tmp_path, sig):
    data = fakes.toy_suite(steps=60, sleep=0.02)
    data["train"]["checkpoint_every"] = 10
    data["log"] = ["tensorboard"]
    suite_file = tmp_path / "toy.yaml"
    suite_file.write_text(yaml.safe_dump(data))
    job = expand(parse_suite(data))[0]
    whole = run_job(job, tmp_path / "whole")
    out = tmp_path / "runs"
    ckpt = out / "toy" / ".checkpoints" / job.id / "checkpoint.pt"
    proc = harness_cli(["run", str(suite_file), "--out", str(out)], toy, tmp_path, background=True)
    wait_for_checkpoints(ckpt, 3, proc)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode != 0 and not (out / "toy" / job.id).exists() and ckpt.is_file()

    again = harness_cli(["run", str(suite_file), "--out", str(out)], toy, tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    result = json.loads((out / "toy" / job.id / "result.json").read_text())
    assert result["status"] == "ok"
    assert result["env"]["resumed_from_step"] >= 30 and result["env"]["resumed_from_step"] % 10 == 0
    assert without_timing(result["metrics"]) == without_timing(whole["metrics"])
    assert log_records(out / "toy" / job.id) == log_records(tmp_path / "whole")
    assert not (out / "toy" / ".checkpoints" / job.id).exists()
    assert list((out / "toy" / ".tmp").iterdir()) == [] and list((out / "toy" / ".locks").iterdir()) == []
    curves = scalars(out / "toy" / "tensorboard" / job.id)
    assert [s for s, _ in curves["loss/total"]] == list(range(5, 61, 5))


@pytest.mark.slow
def test_a_pool_worker_that_dies_runs_its_jobs_again_from_their_checkpoints(toy, tmp_path):
    """``--jobs 2``: SIGKILL the worker process of job 0 once it has two checkpoints; the pool breaks,
    the jobs in flight run again alone (``env.attempts`` 2) from their checkpoints, with the same
    numbers."""
    marker = tmp_path / "tries.txt"
    data = fakes.toy_suite(steps=60, sleep=0.02, seeds=[0, 1])
    data["datasets"] = [{"name": "toy_marked", "params": {"marker": str(marker), "sleep": 0.02}}]
    data["train"]["checkpoint_every"] = 10
    suite_file = tmp_path / "toy.yaml"
    suite_file.write_text(yaml.safe_dump(data))
    jobs = expand(parse_suite(data))
    assert jobs[0].seed != jobs[1].seed
    out = tmp_path / "runs"
    proc = harness_cli(["run", str(suite_file), "--out", str(out), "--jobs", "2"], toy, tmp_path, background=True)
    wait_for_checkpoints(out / "toy" / ".checkpoints" / jobs[0].id / "checkpoint.pt", 2, proc)
    # each line: pid, node, the seed of the job that built the dataset there; job 0's worker is killed
    # (not the first line's: job 1 may have started later, with no checkpoint yet, on either worker)
    workers = {int(seed): int(pid) for pid, _, seed in (line.split() for line in marker.read_text().splitlines())}
    os.kill(workers[jobs[0].seed], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    results = {j.id: json.loads((out / "toy" / j.id / "result.json").read_text()) for j in jobs}
    assert all(r["status"] == "ok" and r["env"]["attempts"] in (1, 2) for r in results.values()), err[-2000:]
    # job 0 ran again from its second checkpoint or a later one; job 1, in flight on the surviving
    # worker or not yet started, ran again from whatever checkpoint it had (step 0 if none) or once
    killed = results[jobs[0].id]["env"]
    assert killed["attempts"] == 2 and killed["resumed_from_step"] >= 20, err[-2000:]
    assert all(r["env"]["resumed_from_step"] % 10 == 0 for r in results.values())
    for job in jobs:
        whole = run_job(job, tmp_path / f"whole-{job.id}")
        assert without_timing(results[job.id]["metrics"]) == without_timing(whole["metrics"])
    assert not (out / "toy" / ".checkpoints").exists() or list((out / "toy" / ".checkpoints").iterdir()) == []


def _agree_in_group(rank: int, port: int, values: list[int], results) -> None:
    import torch.distributed as dist

    from harness.distributed import agree

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results.put((rank, agree(values[rank])))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_the_workers_of_a_job_resume_only_when_they_all_found_the_same_step():
    """``harness.distributed.agree`` (what ``Checkpoints.load`` asks before any worker resumes): a
    worker on a node that does not see the checkpoint makes every worker start from 0."""
    import multiprocessing
    import socket

    from harness.distributed import agree

    assert agree(7)  # outside a group
    ctx = multiprocessing.get_context("spawn")
    for values, expected in (([30, 30], True), ([30, 0], False)):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        results = ctx.Queue()
        procs = [ctx.Process(target=_agree_in_group, args=(rank, port, values, results)) for rank in range(2)]
        for p in procs:
            p.start()
        got = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert got == {0: expected, 1: expected}
