"""The Ray executor: loopback-only local cluster, resource checks, retries, interrupts, same numbers as local.

The slow tests start real Ray clusters on this machine (2 CPUs): one in a CLI process for the
ray-vs-local comparison, one in this process (module fixture) for the rest. Plugins reach the Ray
workers the way a third party's do: a distribution on ``PYTHONPATH`` (``fakes.install``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import fakes
from harness.errors import HarnessError
from harness.executors import Summary, run_suite
from harness.job import Job, PluginSpec
from harness.registry import Registry, set_registry
from harness.store import Store
from harness.suite import expand, load_suite, parse_suite

ray = pytest.importorskip("ray", reason="the Ray executor tests need the ray extra: pip install 'contrastive-harness[ray]'")

from harness.executors import ray_cluster, ray_executor  # noqa: E402  (after the skip: it is only usable with ray)

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "suites" / "smoke.yaml"
TIMING = {"train_time_s", "samples_per_s"}
def without_timing(metrics: dict) -> str:
    """Metrics minus wall-clock ones, as canonical JSON (so NaN compares equal to NaN)."""
    clean = {k: ({kk: vv for kk, vv in v.items() if kk not in TIMING} if isinstance(v, dict) else v) for k, v in metrics.items()}
    return json.dumps(clean, sort_keys=True)


def job(**over) -> Job:
    fields = dict(suite="s", objective=PluginSpec("clip"), encoder=PluginSpec("e"), dataset=PluginSpec("d"),
                  train={"steps": 1}, seed=0, evaluations=[])
    fields.update(over)
    return Job(**fields)


# ------------------------------------------------------------------ fast: no cluster


def test_resource_check_names_the_field_and_what_the_cluster_has():
    one_cpu_box = [{"CPU": 2.0}]
    with pytest.raises(HarnessError) as exc:
        ray_cluster.check_resources({"gpus_per_job": 1, "cpus_per_job": 1}, one_cpu_box)
    msg = str(exc.value)
    assert msg.startswith("resources.gpus_per_job: the suite asks for 1 GPU(s) per job but the Ray cluster has 0 GPU(s);")
    assert "\n" not in msg
    with pytest.raises(HarnessError, match=r"^resources\.cpus_per_job: .* asks for 4 CPU\(s\) .* has 2 CPU\(s\);"):
        ray_cluster.check_resources({"gpus_per_job": 0, "cpus_per_job": 4}, one_cpu_box)
    two_nodes = [{"CPU": 8.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 4.0}]
    ray_cluster.check_resources({"gpus_per_job": 0.5, "cpus_per_job": 8}, two_nodes)  # fits on node 1
    ray_cluster.check_resources({"gpus_per_job": 4, "cpus_per_job": 2}, two_nodes)  # fits on node 2
    with pytest.raises(HarnessError, match=r"has 5 GPU\(s\) \(at most 4 on one node\)"):
        ray_cluster.check_resources({"gpus_per_job": 5, "cpus_per_job": 1}, two_nodes)
    with pytest.raises(HarnessError, match=r"^resources: no node .* both 4 CPU\(s\) and 2 GPU\(s\)"):
        ray_cluster.check_resources({"gpus_per_job": 2, "cpus_per_job": 4}, two_nodes)


def test_missing_ray_is_a_one_line_harness_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes ``import ray`` raise ImportError
    with pytest.raises(HarnessError) as exc:
        ray_executor.run_ray(None, [job()], Summary())  # fails before touching the store
    assert str(exc.value) == "--executor ray needs the ray extra: pip install 'contrastive-harness[ray]'"


def test_local_executor_path_never_imports_ray():
    code = ("import sys, harness.cli, harness.executors, harness.executors.local, harness.runner; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_failed_result_and_file_writing(tmp_path):
    j = job()
    result = ray_executor.failed_task_result(j, ray.exceptions.WorkerCrashedError())
    assert result["status"] == "failed" and result["job"]["id"] == j.id and result["metrics"] == {}
    assert result["error"].startswith("WorkerCrashedError: the Ray task of this job failed (tried 3 time(s)): ")
    assert result["env"]["attempts"] == 3
    assert "\n" not in result["error"] and "WorkerCrashedError" in result["traceback"]
    ray_cluster.write_files(tmp_path, {"result.json": b"{}", "embeddings/a.npz": b"xy"})
    assert (tmp_path / "embeddings" / "a.npz").read_bytes() == b"xy"
    for bad in ("../escape", "/abs/path", "a/../../b"):
        with pytest.raises(ValueError, match="unsafe path"):
            ray_cluster.write_files(tmp_path, {bad: b""})


def test_address_parsing_and_an_unreachable_cluster():
    assert ray_cluster._host_port("127.0.0.1:6379") == ("127.0.0.1", 6379)
    assert ray_cluster._host_port("[::1]:6379") == ("::1", 6379)
    assert ray_cluster._host_port("auto") is None and ray_cluster._host_port("ray://head:10001") is None
    assert [ray_cluster._is_loopback_host(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "10.0.0.1", "head")] \
        == [True, True, True, True, False, False]
    with pytest.raises(HarnessError, match=r"^--address: cannot reach a Ray cluster at '127\.0\.0\.1:1' \(.*\); is it running\?$"):
        ray_cluster.join_cluster(ray, "127.0.0.1:1")  # port 1: nothing listens, refused at once
    assert not ray.is_initialized()


def test_gpu_request_on_a_machine_without_gpus_exits_2_through_the_cli(tmp_path, monkeypatch, cli):
    """Checked against this machine before any Ray process starts: one line, exit code 2, nothing left."""
    if ray_cluster.local_resources()["GPU"] > 0:
        pytest.skip("this machine has a GPU")
    site = fakes.install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", fakes.DIST)
    set_registry(Registry())
    try:
        data = fakes.toy_suite(steps=2)
        data["resources"] = {"gpus_per_job": 1}
        suite_file = tmp_path / "gpu.yaml"
        suite_file.write_text(yaml.safe_dump(data))
        code, out, err = cli("run", str(suite_file), "--executor", "ray", "--out", str(tmp_path / "runs"))
    finally:
        set_registry(None)
        sys.modules.pop(fakes.MODULE, None)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: resources.gpus_per_job: the suite asks for 1 GPU(s) per job but this machine has 0 GPU(s); "
        "set resources.gpus_per_job: 0 to train on CPU, or join a cluster with GPUs (--address)"
    ]
    assert "Traceback" not in err and "ray:" not in err  # no cluster was started
    store_dir = tmp_path / "runs" / "toy"
    assert [p.name for p in store_dir.iterdir() if not p.name.startswith(".")] == []
    assert list((store_dir / ".locks").iterdir()) == []


# ------------------------------------------------------------------ slow: the CLI starts a cluster


@pytest.mark.slow
def test_ray_and_local_executors_store_the_same_metrics(tmp_path, monkeypatch):
    """``harness run --executor ray`` (a CLI process starting its own cluster) and the local
    executor (in this process) store equal metrics, bit for bit.

    Uses ``suites/smoke.yaml`` when it exists, else the toy suite (test plugins on PYTHONPATH, so
    this also checks that Ray workers load third-party plugins). Same job record, seed and torch
    thread count (run_job sets ``cpus_per_job``) on the same CPU give identical floats; only the
    wall-clock metrics (train time, samples/s) differ and are left out.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_LOAD_PLUGINS", "RAY_ADDRESS")}
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    if SMOKE.exists():
        suite_file = SMOKE
    else:
        site = fakes.install(tmp_path / "site")
        env["PYTHONPATH"] = str(site)
        env["HARNESS_LOAD_PLUGINS"] = fakes.DIST
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.setenv("HARNESS_LOAD_PLUGINS", fakes.DIST)
        suite_file = tmp_path / "toy.yaml"
        suite_file.write_text(yaml.safe_dump(fakes.toy_suite(steps=10, objectives=[
            {"name": "toy_dot"}, {"name": "toy_dot", "params": {"temperature": 0.5}},
            {"name": "toy_dot", "params": {"mode": "nan"}, "label": "nan"}])))
    ray_out, local_out = tmp_path / "runs-ray", tmp_path / "runs-local"
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite_file), "--out", str(ray_out),
                          "--executor", "ray"], capture_output=True, text=True, env=env, timeout=300)
    assert "ray: a local cluster on 127.0.0.1: 1 node(s)" in res.stderr
    set_registry(Registry())
    try:
        suite = load_suite(suite_file)
        summary = run_suite(suite, expand(suite), out=local_out)
    finally:
        set_registry(None)
        sys.modules.pop(fakes.MODULE, None)
    assert res.returncode == (1 if summary.failed else 0), res.stderr
    assert res.stderr.count(": ok:") == len(summary.ok) >= 1
    ray_dir, local_dir = ray_out / suite.name, local_out / suite.name
    ids = sorted(p.name for p in local_dir.iterdir() if not p.name.startswith("."))
    assert ids and sorted(p.name for p in ray_dir.iterdir() if not p.name.startswith(".")) == ids
    for job_id in ids:
        a = json.loads((ray_dir / job_id / "result.json").read_text())
        b = json.loads((local_dir / job_id / "result.json").read_text())
        assert (a["status"], a["error"]) == (b["status"], b["error"])
        assert without_timing(a["metrics"]) == without_timing(b["metrics"])
        assert a["metric_info"] == b["metric_info"]
        assert sorted(p.relative_to(ray_dir / job_id) for p in (ray_dir / job_id).rglob("*")) == \
            sorted(p.relative_to(local_dir / job_id) for p in (local_dir / job_id).rglob("*"))
    assert list((ray_dir / ".locks").iterdir()) == [] and list((ray_dir / ".tmp").iterdir()) == []


# ------------------------------------------------------------------ slow: a cluster in this process


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(stat.parent.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)  # /proc/net/*: each 32-bit word in host (little-endian) order
    return ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))


def _bound_sockets() -> dict[int, tuple[str, object, int]]:
    """Listening TCP and bound unconnected UDP sockets of this network namespace: inode -> (proto, ip, port)."""
    found = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], int(f[9])
            if (proto.startswith("tcp") and state != "0A") or (proto.startswith("udp") and set(remote) - set("0:")):
                continue
            ip, port = local.split(":")
            found[inode] = (proto, _address(ip), int(port, 16))
    return found


def _listeners(pids: list[int]) -> list[tuple[int, str, str, object, int]]:
    """(pid, process name, proto, ip, port) of every listening socket the given processes hold."""
    sockets, out = _bound_sockets(), []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in sockets:
                out.append((pid, name, *sockets[int(link[8:-1])]))
    return out


def _is_loopback(ip) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local cluster started in this process by ``start_local_cluster``; the toy and crash plugins
    are on the workers' PYTHONPATH. Teardown checks that shutdown leaves no Ray process behind."""
    site = fakes.install(tmp_path_factory.mktemp("ray") / "site")
    fakes.install_crash(site)
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "HARNESS_LOAD_PLUGINS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), saved["PYTHONPATH"]) if p)
    os.environ["HARNESS_LOAD_PLUGINS"] = f"{fakes.DIST},{fakes.CRASH_DIST}"
    sys.path.insert(0, str(site))
    set_registry(Registry())
    if ray.is_initialized():
        ray.shutdown()
    ray_cluster.start_local_cluster(ray, num_cpus=2)
    try:
        yield site
    finally:
        ray.shutdown()
        set_registry(None)
        sys.path.remove(str(site))
        for mod in (fakes.MODULE, fakes.CRASH_MODULE):
            sys.modules.pop(mod, None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        deadline = time.time() + 20
        while _ray_descendants() and time.time() < deadline:
            time.sleep(0.2)
        assert _ray_descendants() == [], "ray.shutdown() left processes behind"


def _ray_descendants() -> list[tuple[int, str]]:
    out = []
    for pid in _descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and ("ray" in cmd or "gcs_server" in cmd or "raylet" in cmd):
            out.append((pid, cmd[:80]))
    return out


@pytest.mark.slow
def test_local_cluster_listens_on_loopback_only(local_ray):
    assert ray.util.get_node_ip_address() == "127.0.0.1"
    nodes = [k for k in ray.cluster_resources() if k.startswith("node:") and k != "node:__internal_head__"]
    assert nodes == ["node:127.0.0.1"]

    @ray.remote(num_cpus=1)
    def pid():
        return os.getpid()

    worker_pids = set(ray.get([pid.remote() for _ in range(2)]))
    time.sleep(1.0)  # let the agents finish binding their ports
    listeners = _listeners([os.getpid(), *(p for p, _ in _ray_descendants())])
    names = {name for _, name, *_ in listeners}
    assert {"gcs_server", "raylet"} <= names, listeners
    assert any(n.startswith("ray::Dashboard") for n in names) and any(n.startswith("ray::RuntimeEnv") for n in names)
    assert worker_pids & {p for p, *_ in listeners}  # the workers' gRPC servers were seen too
    exposed = [entry for entry in listeners if not _is_loopback(entry[3])]
    assert exposed == [], f"Ray components listening beyond loopback: {exposed}"


def _toy_jobs(**kw) -> tuple[object, list[Job]]:
    suite = parse_suite(fakes.toy_suite(**kw))
    return suite, expand(suite)


@pytest.mark.slow
def test_crashed_worker_is_tried_three_times_then_the_job_fails(local_ray, tmp_path):
    marker = tmp_path / "attempts.txt"
    data = fakes.toy_suite(steps=5)
    data["datasets"].append({"name": "ray_crash", "params": {"marker": str(marker)}})
    suite = parse_suite(data)
    jobs = expand(suite)
    summary = run_suite(suite, jobs, out=tmp_path / "runs", executor="ray")
    assert len(summary.ok) == 1 and len(summary.failed) == 1
    attempts = [line.split() for line in marker.read_text().splitlines()]
    assert len(attempts) == 3 and len({a[0] for a in attempts}) == 3  # first try + two retries, each in a fresh worker
    store = Store(tmp_path / "runs", "toy")
    crashed = next(j for j in jobs if j.dataset.name == "ray_crash")
    result = store.result(crashed.id)
    assert result["status"] == "failed" and result["job"]["id"] == crashed.id
    assert result["error"].startswith("WorkerCrashedError: the Ray task of this job failed (tried 3 time(s))")
    assert result["env"]["attempts"] == 3
    assert "\n" not in result["error"]
    assert json.loads((store.job_dir(crashed.id) / "job.json").read_text())["id"] == crashed.id
    ok = next(j for j in jobs if j.dataset.name == "toy")
    assert {p.name for p in store.job_dir(ok.id).iterdir()} == {"job.json", "result.json", "log.jsonl"}
    assert store.result(ok.id)["metrics"]["train"]["steps"] == 5
    assert list(store.lock_dir.iterdir()) == [] and list(store.tmp_dir.iterdir()) == []
    assert ray.is_initialized()  # a connection the caller made is left to the caller


@pytest.mark.slow
def test_cluster_without_gpus_rejects_a_gpu_request_before_claiming(local_ray, tmp_path):
    _, jobs = _toy_jobs(steps=1)
    store = Store(tmp_path / "runs", "toy")
    with pytest.raises(HarnessError, match=r"^resources\.gpus_per_job: .* but the Ray cluster has 0 GPU\(s\);"):
        ray_executor.run_ray(store, jobs, Summary(), resources={"gpus_per_job": 1, "cpus_per_job": 1})
    with pytest.raises(HarnessError, match=r"^resources\.cpus_per_job: .* asks for 3 CPU\(s\) .* has 2 CPU\(s\);"):
        ray_executor.run_ray(store, jobs, Summary(), resources={"gpus_per_job": 0, "cpus_per_job": 3})
    assert list(store.lock_dir.iterdir()) == [] and store.status(jobs[0].id) is None


@pytest.mark.slow
def test_interrupt_cancels_the_rest_releases_locks_and_reraises(local_ray, tmp_path, monkeypatch):
    _, jobs = _toy_jobs(steps=20, sleep=0.05, seeds=[0, 1, 2])
    store = Store(tmp_path / "runs", "toy")
    cancelled = []
    real_cancel = ray.cancel
    monkeypatch.setattr(ray, "cancel", lambda ref, **kw: (cancelled.append(ref), real_cancel(ref, **kw)))

    def interrupted(summary, job, result):
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_executor, "record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ray_executor.run_ray(store, jobs, Summary(), resources={"gpus_per_job": 0, "cpus_per_job": 1})
    assert len(cancelled) == 2  # the two jobs still queued or running
    finished = [j.id for j in jobs if store.status(j.id) is not None]
    assert len(finished) == 1 and store.status(finished[0]) == "ok"  # committed before the interrupt
    assert list(store.lock_dir.iterdir()) == [] and list(store.tmp_dir.iterdir()) == []


@pytest.mark.slow
def test_sigterm_during_ray_wait_exits_143_after_cleanup(local_ray, tmp_path, monkeypatch):
    """A SIGTERM that lands while the driver waits in ``ray.wait`` is raised between Ray calls (never
    inside Ray's core); the driver cleans up and exits with 128 + SIGTERM like the local executor."""
    import signal
    import threading

    _, jobs = _toy_jobs(steps=20, sleep=0.05, seeds=[0, 1, 2, 3])  # >= 1 s each, two at a time
    store = Store(tmp_path / "runs", "toy")

    def not_ours(signum, frame):  # what runs if the executor failed to install its handler
        raise RuntimeError("the Ray executor's SIGTERM handler was not installed")

    timers = []
    real_record = ray_executor.record

    def record_then_terminate(summary, job, result):
        real_record(summary, job, result)
        if len(summary.ok) == 2:  # the last two jobs have about 1 s to go; the handler only records the
            # signal and the driver raises it after its next ray.wait, before it stores anything more
            timers.append(threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)))
            timers[-1].start()

    monkeypatch.setattr(ray_executor, "record", record_then_terminate)
    previous = signal.signal(signal.SIGTERM, not_ours)
    try:
        with pytest.raises(SystemExit) as exc:
            ray_executor.run_ray(store, jobs, Summary(), resources={"gpus_per_job": 0, "cpus_per_job": 1})
        assert exc.value.code == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is not_ours  # put back as it was
    finally:
        for timer in timers:  # never let a late SIGTERM reach the test process's own handler
            timer.cancel()
            timer.join()
        signal.signal(signal.SIGTERM, previous)
    finished = [j.id for j in jobs if store.status(j.id) is not None]
    assert len(finished) == 2 and all(store.status(i) == "ok" for i in finished)
    assert list(store.lock_dir.iterdir()) == [] and list(store.tmp_dir.iterdir()) == []
