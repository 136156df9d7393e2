"""Hostile input (issue 11): no suite or data file runs code, bad input is one line and exit 2,
resources stay bounded, and no finished result is lost or computed twice.

The malformed suites themselves are fixtures under ``fixtures/bad_suites`` (checked by test_cli);
this file covers what needs data files, processes, signals or timing.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import fakes
import harness
from conftest import FIXTURES, write_tar
from harness.env import git_commit
from harness.executors import run_suite
from harness.store import Store
from harness.suite import expand, parse_suite

ROOT = Path(__file__).resolve().parents[1]


class _Touch:
    """Unpickling this creates ``path``: the proof that a decoder ran code from a data file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((10, 10, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()





# ------------------------------------------------------------------ 1-2: nothing in a file runs code


def test_shards_with_pickle_and_torch_members_never_run_them(tmp_path):
    pwned = tmp_path / "PWNED"
    payload = pickle.dumps(_Touch(pwned))
    members = {}
    for i in range(4):
        members.update({f"s{i}.png": _png(50 * i), f"s{i}.cls": str(i % 2).encode(), f"s{i}.txt": b"grey square",
                        f"s{i}.pyd": payload, f"s{i}.pickle": payload, f"s{i}.pkl": payload, f"s{i}.pth": payload})
    root = tmp_path / "wds"
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("1")
    (root / "classnames.txt").write_text("dark\nlight\n")
    (root / "zeroshot_classification_templates.txt").write_text("a {c} image\n")
    write_tar(root / "test" / "0.tar", members)
    (cls,) = harness.create_dataset("clip_benchmark", dataset="wds/x", root=str(root), image_size=8).eval_sets()
    assert cls.labels.tolist() == [0, 1, 0, 1]
    files = harness.create_dataset("image_text_files", path=str(root / "test" / "0.tar"), image_size=8, eval_fraction=0.5)
    assert len(files.train_pairs()) == 2
    assert not pwned.exists()


def test_a_payload_in_clip_benchmark_params_creates_nothing(tmp_path, run_harness):
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent("""\
        name: t
        objectives: [{name: clip, train: {steps: 0}}]
        encoders: [open_clip]
        datasets: [{name: clip_benchmark, params: {dataset: wds/x, root: data, split: "x://';touch PWNED;'"}}]
        train: {steps: 0}
        evaluations: [zeroshot_classification]
    """))
    for command in ("validate", "run"):
        proc = run_harness(command, str(suite), "--out", str(tmp_path / "runs"), plugins="", cwd=tmp_path) \
            if command == "run" else run_harness(command, str(suite), plugins="", cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "datasets[0].params.split" in proc.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "runs").exists()


def test_data_files_are_bounded_and_local(tmp_path):
    from harness.builtin.datasets.files import expand_braces, load_image

    with pytest.raises(ValueError, match="more than 100,000 files"):
        expand_braces("x/{0..99999999}.tar")
    with pytest.raises(ValueError, match="no such file"):
        load_image("/dev/zero", 8)  # a device could block or never end: regular files only
    (tmp_path / "t.csv").write_text("filepath,title\n/dev/zero,zeros\n/etc/hostname,not an image\n")
    with pytest.warns(UserWarning, match="unreadable image: 2"), pytest.raises(ValueError, match="0 usable"):
        harness.create_dataset("image_text_files", path=str(tmp_path / "t.csv")).train_pairs()
    (tmp_path / "n" / "test").mkdir(parents=True)
    (tmp_path / "n" / "test" / "nshards.txt").write_text("999999999")
    with pytest.raises(ValueError, match=r"nshards\.txt must hold a shard count in \[1, 100000\]"):
        harness.create_dataset("clip_benchmark", dataset="wds/x", root=str(tmp_path / "n")).eval_sets()


# ------------------------------------------------------------------ 3: bad input is refused fast and small


def _validate_cost(path: Path) -> tuple[int, str, float, int]:
    """(exit code, stderr, seconds, peak RSS in KiB) of `harness validate PATH` in a fresh process."""
    code = ("import resource, sys, time\nfrom harness.cli import main\nt = time.perf_counter()\n"
            f"rc = main(['validate', {str(path)!r}])\n"
            "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    env = {**os.environ, "PYTHONPATH": str(FIXTURES / "fakeplugins"), "HARNESS_LOAD_PLUGINS": "harness-fake"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    rc, seconds, rss = proc.stdout.split()
    return int(rc), proc.stderr, float(seconds), int(rss)


@pytest.mark.slow
def test_billion_laughs_is_refused_within_5_s_and_128_mib():
    bad = FIXTURES / "bad_suites"
    base_rc, _, _, base_rss = _validate_cost(bad / "empty.yaml")
    rc, err, seconds, rss = _validate_cost(bad / "billion_laughs.yaml")
    assert base_rc == rc == 2 and "expands to more than 100,000 values" in err
    assert seconds < 5 and rss - base_rss < 128 * 1024, (seconds, rss - base_rss)


def test_100k_seeds_validate_in_linear_time():
    data = {"name": "s", "objectives": "a", "encoders": "b", "datasets": "c", "train": {"steps": 1},
            "seeds": list(range(100_000))}
    t = time.perf_counter()
    assert len(parse_suite(data).seeds) == 100_000
    data["seeds"].append(99_999)
    with pytest.raises(harness.errors.HarnessError, match="seeds: entries must be unique; 99999 appears twice"):
        parse_suite(data)
    assert time.perf_counter() - t < 5


# ------------------------------------------------------------------ 4-5: exit codes and the terminal


def test_unwritable_out_is_one_line_and_exit_2(cli, fake_registry, write_suite, tmp_path):
    from conftest import GOOD_SUITE

    path = write_suite(GOOD_SUITE)
    (tmp_path / "a_file").write_text("")
    for out, says in ((tmp_path / "a_file", "exists and is not a directory"), (Path("/dev/null"), "is not a directory"),
                      (tmp_path / "a_file" / "below", "cannot write results under")):
        code, stdout, err = cli("run", str(path), "--out", str(out))
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: --out: ") and says in err, err
    if os.geteuid() != 0:  # root writes anywhere: a read-only directory only stops other users
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        code, _, err = cli("run", str(path), "--out", str(ro))
        assert code == 2 and "cannot write results under" in err


def test_labels_with_control_characters_are_printed_escaped(cli, fake_registry, write_suite):
    path = write_suite("name: ansi\nobjectives: [{name: fake_clip, label: \"red\\e[31m\\nX\"}]\nencoders: fake_tower\n"
                       "datasets: fake_shapes\ntrain: {steps: 1}\nevaluations: [fake_gap]\n")
    code, out, err = cli("validate", str(path))
    assert code == 0 and "\x1b" not in out and "red\\x1b[31m\\nX | fake_tower" in out


# ------------------------------------------------------------------ 7: evaluate never deletes what it cannot recompute





def test_evaluate_keeps_metrics_it_cannot_recompute(toy, tmp_path, cli):
    data = fakes.toy_suite(save=["embeddings"])  # embeddings but no checkpoint: prompts cannot be embedded
    data["evaluations"] = ["zeroshot_classification", "toy_meancos"]
    suite = parse_suite(data)
    run_suite(suite, expand(suite), out=tmp_path / "runs")
    (job_dir,) = [p for p in (tmp_path / "runs" / "toy").iterdir() if not p.name.startswith(".")]
    before = json.loads((job_dir / "result.json").read_text())
    code, _, err = cli("evaluate", str(tmp_path / "runs" / "toy"))
    after = json.loads((job_dir / "result.json").read_text())
    assert code == 0
    assert after["metrics"] == before["metrics"] and after["main_scores"] == before["main_scores"]
    why = after["reevaluated"]["zeroshot_classification"]
    assert why.startswith("kept the stored metrics: not recomputed (no checkpoint saved") and why in err
    assert after["reevaluated"]["toy_meancos"] == "recomputed"
    code, _, err = cli("evaluate", str(tmp_path / "runs" / "toy"), "--evaluation", "zeroshot_clasification")
    assert code == 2 and "did you mean 'zeroshot_classification'" in err
    (job_dir / "job.json").write_text("{not json")
    code, _, err = cli("evaluate", str(tmp_path / "runs" / "toy"))
    assert code == 2 and "job.json: not a job record" in err


# ------------------------------------------------------------------ 8: a plugin's exit fails its job only


def test_a_plugin_raising_systemexit_or_interrupt_fails_only_its_job(toy, tmp_path, capsys):
    modes = ["exit", "interrupt", "generator_exit", "ok"]
    suite = parse_suite(fakes.toy_suite(objectives=[{"name": "toy_dot", "params": {"mode": m}} for m in modes]))
    summary = run_suite(suite, expand(suite), out=tmp_path / "runs")
    assert len(summary.ok) == 1 and len(summary.failed) == 3
    errors = sorted(e for _, e in summary.failed)
    assert errors == ["GeneratorExit", "KeyboardInterrupt", "SystemExit: 3"]
    assert "suite done: 1 ok, 3 failed" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_ctrl_c_stops_the_suite_with_a_summary(toy, tmp_path):
    suite_file = tmp_path / "toy.yaml"
    suite_file.write_text(yaml.safe_dump(fakes.toy_suite(steps=400, sleep=0.02, seeds=[0, 1, 2])))
    env = {**os.environ, "PYTHONPATH": str(toy), "HARNESS_LOAD_PLUGINS": fakes.DIST}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite_file), "--out", str(tmp_path / "runs")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs" / "toy"
    deadline = time.time() + 60
    while time.time() < deadline and not (runs.exists() and list((runs / ".tmp").glob("*"))):
        time.sleep(0.2)  # until the first job is under way
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "suite interrupted: 0 ok" in err and err.rstrip().endswith("interrupted")
    assert not [p for p in runs.iterdir() if not p.name.startswith(".")]  # nothing that looks finished


# ------------------------------------------------------------------ 9: one holder per job lock, atomically


HOLD = """
import sys, time
from harness.store import Store
store = Store(sys.argv[1], "s")
print("held" if store.claim("job") else "busy", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_job_locks_are_atomic_and_free_themselves_when_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "30"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    store = Store(tmp_path, "s")
    assert not store.claim("job")  # a live process holds it
    holder.kill()
    holder.wait()
    assert store.claim("job")  # the kernel released the dead holder's lock: no stale-lock takeover needed
    store.release("job")
    racers = [subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True)
              for _ in range(6)]
    answers = sorted(p.stdout.readline().strip() for p in racers)
    for p in racers:
        p.wait()
    assert answers == ["busy"] * 5 + ["held"]


def test_a_claim_that_races_a_release_retries_on_the_new_file(tmp_path, monkeypatch):
    """Between our open() and our flock() the holder releases (unlinks) the file and a third run
    creates and locks a new one: we must notice the inode changed and not believe we hold the job."""
    first, second = Store(tmp_path, "s"), Store(tmp_path, "s")
    assert first.claim("job")
    real_flock = __import__("fcntl").flock
    calls = []

    def flock_after_release(fd, op):
        if not calls:
            calls.append(fd)
            first.release("job")  # unlink + unlock while `second` holds a descriptor of the old inode
            assert Store(tmp_path, "s").claim("job")  # a third run takes the new file
        return real_flock(fd, op)

    monkeypatch.setattr("harness.store.fcntl.flock", flock_after_release)
    assert not second.claim("job")


# ------------------------------------------------------------------ 10: git never runs in the user's repository


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_git_commit_reads_only_the_harness_checkout_and_runs_no_fsmonitor(tmp_path, monkeypatch):
    hostile = tmp_path / "user-repo"
    hostile.mkdir()
    _git("init", "-q", cwd=hostile)
    _git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x", cwd=hostile)
    marker = tmp_path / "FSMONITOR_RAN"
    _git("config", "core.fsmonitor", f"touch {marker}; false", cwd=hostile)
    monkeypatch.chdir(hostile)
    ours = git_commit()
    assert ours is None or not ours.startswith(
        subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=hostile, capture_output=True, text=True).stdout.strip())
    package = hostile / "venv" / "lib" / "harness"  # a non-editable install inside the user's repository
    package.mkdir(parents=True)
    assert git_commit(package) is None
    own = hostile / "harness"  # the repository's own harness package: its commit, fsmonitor still off
    own.mkdir()
    assert git_commit(own) is not None
    assert not marker.exists()


def test_evaluate_validates_the_params_of_a_job_record_it_reads(toy, tmp_path, cli):
    """A job.json is a data file: its params go through the same checks as a suite's."""
    suite = parse_suite(fakes.toy_suite(save=["embeddings"]))
    run_suite(suite, expand(suite), out=tmp_path / "runs")
    (job_dir,) = [p for p in (tmp_path / "runs" / "toy").iterdir() if not p.name.startswith(".")]
    record = json.loads((job_dir / "job.json").read_text())
    record["dataset"]["params"]["n"] = "many"
    (job_dir / "job.json").write_text(json.dumps(record))
    code, _, err = cli("evaluate", str(tmp_path / "runs" / "toy"))
    assert code == 2 and "dataset 'toy' params.n: Input should be a valid integer" in err
