"""Hostile input, round 3: what plugins return, edited suites, spreadsheets, error classes, a quiet terminal.

1. a plugin's return value never aborts the suite (numpy scalars are stored; what JSON cannot hold
   fails that job, naming the plugin and the key; both executors agree);
4. re-running an edited suite into the same ``--out`` never pools two configurations;
7. CSV cells that a spreadsheet would run are neutralised, numbers stay numbers;
9. a full disk is an OS error naming the path; a tampered ``job.json`` is exit 2 naming the field;
   the local executor refuses GPUs the machine lacks and says so when it has fewer CPUs than asked;
10. no library warning reaches the terminal; a Ctrl-C after the work is done prints no traceback.

Damaged and hostile run directories (item 6) are in ``test_hardening_run_dirs.py``.
"""

from __future__ import annotations

import csv
import errno
import fractions
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import fakes
import harness.registry as registry_mod
from harness.jsonsafe import MAX_VALUES, NotJSON, reference_rows, safe_result, to_json
from harness.leaderboard import build_leaderboard, safe_cell

ROOT = Path(__file__).resolve().parents[1]
HOSTILE_DIST, HOSTILE_MODULE = "harness-hostile", "harness_hostile"
HOSTILE_SOURCE = textwrap.dedent('''
    """An evaluation that returns what a careless plugin returns (test only)."""
    import numpy as np
    import torch

    from harness import hookimpl
    from harness.types import MetricInfo


    class Careless:
        """Returns numpy and torch scalars, or something JSON cannot hold, by ``mode`` (test only)."""

        metric_info = {"mean": MetricInfo("mean", "downstream", True)}

        def __init__(self, mode: str = "numpy"):
            self.mode = mode

        def evaluate(self, ctx):
            x, y = ctx.sets[1].paired()
            mean = np.mean((x * y).sum(1).numpy().astype(np.float32))  # np.float32
            if self.mode == "numpy":
                return {"mean": mean, "count": np.int64(3), "flag": np.bool_(True), "t": torch.tensor(0.5),
                        "zero_d": np.array(2.0), "per": {"a": np.float16(0.25)}}
            if self.mode == "tuple_key":
                return {"mean": mean, "per_pair": {("red", "blue"): 0.5}}
            if self.mode == "array":
                return {"mean": np.ones(3, np.float32)}
            if self.mode == "set":
                return {"mean": mean, "labels": {"red", "blue"}}
            return {"mean": float(mean)}

        def reference_rows(self, ctx):
            if self.mode == "bad_reference":
                return {"chance": {"mean": "a quarter"}}
            return {"chance": {"mean": np.float32(0.25)}}


    @hookimpl
    def harness_register_evaluations(register):
        register("careless", Careless)
''')


def install_hostile(site: Path) -> Path:
    (site / f"{HOSTILE_MODULE}.py").write_text(HOSTILE_SOURCE)
    info = site / f"{HOSTILE_MODULE}-0.0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {HOSTILE_DIST}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\ncareless = {HOSTILE_MODULE}\n")
    return site


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """The toy plugins and the careless evaluation, on sys.path for this process and for subprocesses."""
    site = install_hostile(fakes.install(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", f"{fakes.DIST},{HOSTILE_DIST}")
    registry_mod.set_registry(registry_mod.Registry())
    yield site
    registry_mod.set_registry(None)
    for module in (fakes.MODULE, HOSTILE_MODULE):
        sys.modules.pop(module, None)


def harness_cli(site: Path, *args: str, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "HARNESS_LOAD_PLUGINS": f"{fakes.DIST},{HOSTILE_DIST}",
            **env}
    full.pop("HARNESS_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=full,
                          timeout=timeout)


def suite_file(path: Path, modes: list[str], steps: int = 2, lr: float = 0.01, seeds=(0,)) -> Path:
    data = fakes.toy_suite(steps=steps, seeds=seeds)
    data["train"]["lr"] = lr
    data["evaluations"] = ["toy_meancos"] + [{"name": "careless", "params": {"mode": m}, "label": f"careless_{m}"}
                                             for m in modes]
    path.write_text(yaml.safe_dump(data))
    return path


def results(out: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "result.json").read_text()) for p in out.iterdir()
            if not p.name.startswith(".") and (p / "result.json").exists()}


# ------------------------------------------------------------------ 1: a plugin's value never aborts the suite


@pytest.mark.parametrize("value, expected", [
    (np.mean(np.ones(3, np.float32)), 1.0),
    (np.float64(0.5), 0.5),
    (np.int64(7), 7),
    (np.bool_(True), True),
    (True, True),
    (torch.tensor(0.25), 0.25),
    (torch.tensor(3), 3),
    (np.array(2.5), 2.5),
    (np.array(np.float32(1.5)), 1.5),
    (fractions.Fraction(1, 4), 0.25),
    ((1, np.float32(2)), [1, 2.0]),
    ({"nested": {"x": np.float16(0.5)}}, {"nested": {"x": 0.5}}),
    (np.str_("text"), "text"),
    (None, None),
])
def test_numbers_of_any_library_are_stored_as_plain_json(value, expected):
    out = to_json({"k": value}, "evaluation 'e' returned metrics")
    assert out == {"k": expected} and type(out["k"]) is type(expected)
    json.dumps(out, allow_nan=False)


def test_nan_and_infinity_stay_values():
    out = to_json({"a": np.float32("nan"), "b": float("inf"), "c": torch.tensor(float("-inf"))}, "w")
    assert np.isnan(out["a"]) and out["b"] == float("inf") and out["c"] == float("-inf")


@pytest.mark.parametrize("value, says", [
    ({("red", "blue"): 0.5}, "the key ('red', 'blue') under the top level is a tuple (keys must be strings)"),
    ({"per": {1: 0.5}}, "the key 1 under per is an int (keys must be strings)"),
    ({"labels": {"a", "b"}}, "labels is a set"),
    ({"m": np.ones(3, np.float32)}, "m is a numpy array of shape (3,)"),
    ({"m": torch.ones(2, 2)}, "m is a tensor of shape (2, 2)"),
    ({"m": 1 + 2j}, "m is a complex"),
    ({"m": np.complex64(1)}, "m is a numpy complex64 value"),
    ({"m": b"bytes"}, "m is a bytes"),
    ({"m": [0.5, object()]}, "m[1] is an object"),
    ({"m": 10**40}, "m is an integer of about 41 digits (at most 30)"),
    ({"m": "x" * 200_000}, "m is a string of 200000 characters"),
    ({"m": fractions.Fraction(10**400, 1)}, "m is a Fraction that is no float"),
    ({"k\x1b[31m": {"x": {1}}}, "k\\x1b[31m.x is a set"),
])
def test_what_json_cannot_hold_is_refused_naming_the_key(value, says):
    with pytest.raises(NotJSON) as info:
        to_json(value, "evaluation 'e' returned metrics")
    assert str(info.value).startswith("evaluation 'e' returned metrics: ") and says in str(info.value)
    assert "\x1b" not in str(info.value) and "\n" not in str(info.value)


def test_size_depth_and_cycles_are_bounded():
    with pytest.raises(NotJSON, match=f"more than {MAX_VALUES} values"):
        to_json({str(i): 0.5 for i in range(MAX_VALUES + 1)}, "w")
    deep: dict = {}
    deep["self"] = deep
    with pytest.raises(NotJSON, match="nested deeper than 32 levels .*contains itself"):
        to_json(deep, "w")


def test_reference_rows_must_be_numbers():
    rows = reference_rows({"chance": {"top1": np.float32(0.25), "n": None, "b": True}}, "zs")
    assert rows["chance"]["top1"] == 0.25 and np.isnan(rows["chance"]["n"]) and rows["chance"]["b"] == 1.0
    for bad, says in (([1], "a list, not a mapping"), ({"r": 1}, "row 'r' is an int"),
                      ({"r": {"k": "high"}}, "r.k is a string; reference values must be numbers"),
                      ({("a",): {}}, "the key ('a',) under the top level is a tuple")):
        with pytest.raises(NotJSON, match="evaluation 'zs' returned reference_rows: ") as info:
            reference_rows(bad, "zs")
        assert says in str(info.value)


def test_safe_result_fails_the_job_and_keeps_what_can_be_kept():
    result = {"status": "ok", "job": {"id": "x"}, "metrics": {"e": {"bad": {1, 2}}}, "env": {"device": "cpu"},
              "error": None, "traceback": None}
    out = safe_result(result, 2**20)
    assert out["status"] == "failed" and out["metrics"] == {} and out["env"] == {"device": "cpu"}
    assert out["error"].startswith("NotJSON: the job's result: metrics.e.bad is a set")
    json.dumps(out)
    big = {"status": "ok", "metrics": {"e": {"s": "x" * 60_000}}, "error": None}
    assert safe_result(big, 2**15)["status"] == "failed"
    assert safe_result({"status": "ok", "metrics": {"e": {"v": np.float32(1)}}}, 2**20) == \
        {"status": "ok", "metrics": {"e": {"v": 1.0}}}


def test_careless_evaluations_fail_only_their_job_and_resume_runs_nothing_twice(plugins, tmp_path):
    """With the local executor: numpy/torch scalars are stored as numbers; a tuple key, an array, a
    set or a non-number reference row fails that job, naming the evaluation and the key; the other
    jobs run; a resume (the CLI) skips every job instead of an internal error at the same job."""
    from harness.executors import run_suite
    from harness.suite import expand, load_suite

    out = tmp_path / "runs"
    modes = ("numpy", "tuple_key", "array", "set", "bad_reference")
    summaries = {}
    for mode in modes:  # an evaluation applies to every job of its suite: one suite per mode, one store
        data = yaml.safe_load(suite_file(tmp_path / f"{mode}.yaml", [mode]).read_text())
        data["objectives"] = [{"name": "toy_dot", "label": mode}]
        (tmp_path / f"{mode}.yaml").write_text(yaml.safe_dump(data))
        suite = load_suite(tmp_path / f"{mode}.yaml")
        summaries[mode] = run_suite(suite, expand(suite), out=out)
    assert [len(summaries[m].ok) for m in modes] == [1, 0, 0, 0, 0]
    stored = {r["job"]["objective"]["label"]: r for r in results(out / "toy").values()}
    ok = stored["numpy"]
    assert ok["status"] == "ok"
    careless = ok["metrics"]["careless_numpy"]
    assert isinstance(careless["mean"], float) and careless["count"] == 3 and careless["flag"] is True
    assert careless["t"] == 0.5 and careless["zero_d"] == 2.0 and careless["per"] == {"a": 0.25}
    assert ok["reference_rows"]["chance"]["careless_numpy.mean"] == 0.25
    errors = {label: r["error"] for label, r in stored.items() if label != "numpy"}
    assert errors["tuple_key"] == ("NotJSON: evaluation 'careless_tuple_key' returned metrics: the key ('red', 'blue') "
                                   "under per_pair is a tuple (keys must be strings)")
    assert "evaluation 'careless_array' returned metrics: mean is a numpy array of shape (3,)" in errors["array"]
    assert "evaluation 'careless_set' returned metrics: labels is a set" in errors["set"]
    assert "evaluation 'careless_bad_reference' returned reference_rows: chance.mean is a string" in errors["bad_reference"]
    assert all(r["metrics"]["toy_meancos"] for r in stored.values())  # the evaluations before it are kept
    before = {k: (out / "toy" / k / "result.json").stat().st_mtime_ns for k in results(out / "toy")}
    again = harness_cli(plugins, "run", str(tmp_path / "tuple_key.yaml"), "--out", str(out))
    assert again.returncode == 1 and "0 ok, 1 failed, 0 already finished" in again.stderr, again.stderr
    assert "failed in an earlier run" in again.stderr and "internal error" not in again.stderr
    assert {k: (out / "toy" / k / "result.json").stat().st_mtime_ns for k in results(out / "toy")} == before


@pytest.mark.slow
def test_ray_records_the_same_failure_as_local_and_no_token_notice(plugins, tmp_path):
    """The Ray executor stores the careless jobs exactly as the local one (same status, error and
    metrics), and Ray's notice about token authentication never reaches the terminal."""
    pytest.importorskip("ray")
    path = suite_file(tmp_path / "careless.yaml", ["numpy", "tuple_key"])
    ray_run = harness_cli(plugins, "run", str(path), "--out", str(tmp_path / "ray"), "--executor", "ray",
                          RAY_ADDRESS="", timeout=400)
    local_run = harness_cli(plugins, "run", str(path), "--out", str(tmp_path / "local"))
    assert ray_run.returncode == local_run.returncode == 1, ray_run.stderr
    assert "Token authentication" not in ray_run.stderr and "internal error" not in ray_run.stderr
    a, b = results(tmp_path / "ray" / "toy"), results(tmp_path / "local" / "toy")
    assert a.keys() == b.keys() and len(a) == 1
    for job_id in a:
        assert (a[job_id]["status"], a[job_id]["error"]) == (b[job_id]["status"], b[job_id]["error"]) == \
            ("failed", b[job_id]["error"])
        assert "careless_tuple_key" in a[job_id]["error"] and "('red', 'blue')" in a[job_id]["error"]


# ------------------------------------------------------------------ 4: an edited suite is never pooled


def test_an_edited_suite_run_into_the_same_out_is_not_pooled(plugins, tmp_path):
    out = tmp_path / "runs"
    first = harness_cli(plugins, "run", str(suite_file(tmp_path / "v1.yaml", [], lr=0.01, seeds=(0, 1))), "--out", str(out))
    second = harness_cli(plugins, "run", str(suite_file(tmp_path / "v2.yaml", [], lr=0.02, seeds=(0, 1))), "--out", str(out))
    assert first.returncode == second.returncode == 0, second.stderr
    assert len(results(out / "toy")) == 4  # both configurations' jobs are kept on disk
    board = harness_cli(plugins, "leaderboard", str(out / "toy"), "--out", str(tmp_path / "lb"), "--format", "csv,md")
    assert board.returncode == 0, board.stderr
    assert board.stderr == ("note: left out 2 job(s) of an earlier configuration of suite 'toy' (not among the jobs "
                            "of its last `harness run`, in .suite.json)\n")
    rows = list(csv.DictReader((tmp_path / "lb" / "results.csv").open()))
    assert sorted(r["seed"] for r in rows) == ["0", "1"] and {r["train.lr"] for r in rows} == {"0.02"}
    summary = list(csv.DictReader((tmp_path / "lb" / "summary.csv").open()))
    assert [r["n_ok"] for r in summary] == ["2"]
    assert "| left out | 2 job(s) of an earlier configuration" in (tmp_path / "lb" / "README.md").read_text() or \
        "2 job(s) of an earlier configuration" in (tmp_path / "lb" / "README.md").read_text()
    # back to the first version: its jobs are finished, nothing runs, and the board shows them
    again = harness_cli(plugins, "run", str(tmp_path / "v1.yaml"), "--out", str(out))
    assert "0 ok, 0 failed, 2 already finished" in again.stderr
    build_leaderboard(out / "toy", out=tmp_path / "lb1", formats=["csv"])
    assert {r["train.lr"] for r in csv.DictReader((tmp_path / "lb1" / "results.csv").open())} == {"0.01"}

    (out / "toy" / ".suite.json").unlink()  # a store from before the record existed: two configurations, one line
    refused = harness_cli(plugins, "leaderboard", str(out / "toy"), "--out", str(tmp_path / "lb2"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "has jobs of two configurations (they differ in train.lr" in refused.stderr
    assert "run the suite again" in refused.stderr


@pytest.mark.parametrize("record", ["[1, 2]", '{"jobs": "all"}', '{"jobs": [1]}', "{not json", "dev/zero", "fifo"])
def test_a_damaged_record_of_the_current_jobs_is_one_line(tmp_path, record, capsys):
    from harness.cli import main

    root = tmp_path / "runs" / "s"
    (root / "j0").mkdir(parents=True)
    (root / "j0" / "result.json").write_text(json.dumps({
        "status": "ok", "job": {"suite": "s", "seed": 0, "objective": {"name": "a"}, "encoder": {"name": "e"},
                                "dataset": {"name": "d"}}, "metrics": {"gap": {"x": 0.5}}}))
    manifest = root / ".suite.json"
    if record == "dev/zero":
        manifest.symlink_to("/dev/zero")
    elif record == "fifo":
        os.mkfifo(manifest)
    else:
        manifest.write_text(record)
    assert main(["leaderboard", str(root), "--out", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {manifest}: corrupt record of the suite's current jobs")


# ------------------------------------------------------------------ 7: spreadsheets never run a cell


@pytest.mark.parametrize("cell, written", [
    ("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"), ("+SUM(A1)", "'+SUM(A1)"), ("-2+3", "'-2+3"), ("@SUM(1)", "'@SUM(1)"),
    ("\tx", "'\\tx"), ("\r=1", "'\\r=1"), ("-0.5", "-0.5"), ("+1e-3", "+1e-3"), ("-inf", "-inf"), ("plain", "plain"),
    ("red\x1b[31m", "red\\x1b[31m"), (-0.5, -0.5), (3, 3),
])
def test_safe_cell(cell, written):
    assert safe_cell(cell) == written


def _store_with_formula_labels(root: Path) -> None:
    labels = ["=HYPERLINK(\"http://x\")", "+1+1", "-1+1", "@cmd", "\t=1", "-0.25", "ok\x1b]0;title\x07"]
    for i, label in enumerate(labels * 2):
        job = {"suite": "csv", "objective": {"name": "o", "label": label}, "encoder": {"name": "=e"},
               "dataset": {"name": "-d", "params": {}}, "train": {"steps": 1, "lr": 0.001}, "seed": i // len(labels),
               "evaluations": [{"name": "zs"}]}
        value = -0.25 - i / 100
        result = {"status": "ok", "job": job, "metrics": {"zs": {"@set": {"top1": value}, "+x": {"top1": -1.5}}},
                  "main_scores": {"zs": {"key": "*.top1", "higher_is_better": True, "description": "=1+2"}},
                  "reference_rows": {"=chance": {"zs.@set.top1": -0.1}}, "env": {}}
        (root / f"j{i}").mkdir(parents=True)
        (root / f"j{i}" / "result.json").write_text(json.dumps(result))
        if i < 2:  # a tuning trial of the same objective: tuning.csv
            tuned = dict(job, stage="tune", trial={"train.lr": 0.01, "params.mode": "=1+1"},
                         tuning={"trials": 2, "seeds": [0], "metric": "zs.*.top1"})
            (root / f"t{i}").mkdir()
            (root / f"t{i}" / "result.json").write_text(json.dumps(dict(result, job=tuned)))


def test_csv_files_neutralise_formulas_and_keep_numbers(tmp_path):
    root = tmp_path / "runs" / "csv"
    _store_with_formula_labels(root)
    out = build_leaderboard(root, out=tmp_path / "lb")
    files = sorted(out.glob("*.csv"))
    assert {f.name for f in files} == {"results.csv", "summary.csv", "pairwise.csv", "contrasts.csv", "across.csv",
                                       "tables.csv", "references.csv", "tuning.csv"}
    numbers = 0
    for f in files:
        for row in csv.reader(f.open(newline="")):
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), (f.name, cell)
                if cell.startswith("-"):
                    float(cell)  # a negative number, not text
                    numbers += 1
                assert not any(ord(c) < 32 for c in cell), (f.name, cell)
    assert numbers > 10
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["objective"] for r in rows} >= {"'=HYPERLINK(\"http://x\")", "'+1+1", "'-1+1", "'@cmd", "-0.25",
                                              "ok\\x1b]0;title\\x07"}
    assert "'zs.@set.top1" not in rows[0] and "zs.@set.top1" in rows[0]  # a header that does not start like a formula
    assert float(rows[0]["zs.+x.top1"]) == -1.5
    tuning = list(csv.DictReader((out / "tuning.csv").open()))
    assert {r["trial.params.mode"] for r in tuning} == {"'=1+1"} and {r["trial.train.lr"] for r in tuning} == {"0.01"}
    for text in (out / "README.md", out / "index.html", out / "board.json"):
        assert "\x1b" not in text.read_text() and "\x07" not in text.read_text()


# ------------------------------------------------------------------ 9: the right error class


def test_a_full_disk_is_an_os_error_naming_the_path(plugins, tmp_path, monkeypatch, cli):
    from harness import store

    real = store._write_bytes

    def full_for_results(path, data):
        if "result.json" in path.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(store, "_write_bytes", full_for_results)
    code, out, err = cli("run", str(suite_file(tmp_path / "s.yaml", [])), "--out", str(tmp_path / "runs"))
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "internal error" not in lines[0] and "Traceback" not in err
    assert lines[0].startswith(f"error: {tmp_path / 'runs' / 'toy' / '.tmp'}/") and lines[0].endswith(
        "/result.json: No space left on device (an operating-system error, not a bug in the harness)")
    assert "suite interrupted: 0 ok" in err
    assert not [p for p in (tmp_path / "runs" / "toy").iterdir() if not p.name.startswith(".")]
    assert list((tmp_path / "runs" / "toy" / ".locks").iterdir()) == []


@pytest.mark.parametrize("edit, says", [
    (lambda r: r.update(seed="3"), "seed: expected an integer from 0 to 2147483647 (got '3')"),
    (lambda r: r.update(seed=True), "seed: expected an integer from 0 to 2147483647 (got True)"),
    (lambda r: r.update(seed=-1), "seed: expected an integer"),
    (lambda r: r.pop("seed"), "seed: expected an integer from 0 to 2147483647 (got 'nothing')"),
    (lambda r: r["train"].update(lr="0.01"), "train.lr: Input should be a valid number"),
    (lambda r: r["train"].update(steps=-5), "train.steps: Input should be greater than or equal to 0"),
    (lambda r: r["train"].update(bogus=1), "train.bogus: unknown field"),
    (lambda r: r.update(train=[1]), "train: expected a mapping"),
    (lambda r: r["objective"].pop("name"), "objective.name: expected a plugin name"),
    (lambda r: r["encoder"].update(params=[1]), "encoder.params: expected a mapping"),
    (lambda r: r["dataset"].update(extra=1), "dataset.extra: unknown field"),
    (lambda r: r.update(evaluations={"a": 1}), "evaluations: expected a list of plugin specs"),
    (lambda r: r["evaluations"].append("gap"), "evaluations[1]: expected a mapping"),
    (lambda r: r.update(save="embeddings"), "save: expected a list of strings"),
    (lambda r: r.update(suite=5), "suite: expected a string"),
    (lambda r: r.update(trial=[1]), "trial: expected a mapping"),
])
def test_a_tampered_job_json_is_exit_2_naming_the_file_and_field(toy, tmp_path, cli, edit, says):
    from harness.executors import run_suite
    from harness.suite import expand, parse_suite

    suite = parse_suite(fakes.toy_suite(steps=2, save=["embeddings"]))
    run_suite(suite, expand(suite), out=tmp_path / "runs")
    (job_dir,) = [p for p in (tmp_path / "runs" / "toy").iterdir() if not p.name.startswith(".")]
    record = json.loads((job_dir / "job.json").read_text())
    edit(record)
    (job_dir / "job.json").write_text(json.dumps(record))
    code, _, err = cli("evaluate", str(tmp_path / "runs" / "toy"))
    assert code == 2 and "Traceback" not in err and "validation error" not in err
    line = err.splitlines()[0]
    assert line.startswith(f"{job_dir.name}: ") and f"{job_dir / 'job.json'}" in line and says in line, err


def test_the_local_executor_refuses_gpus_it_lacks_and_says_when_it_has_fewer_cpus(plugins, tmp_path, cli):
    from harness.executors.ray_cluster import local_resources

    have = local_resources()
    data = yaml.safe_load(suite_file(tmp_path / "s.yaml", []).read_text())
    if have["GPU"] == 0:
        data["resources"] = {"gpus_per_job": 1}
        (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(data))
        code, _, err = cli("run", str(tmp_path / "gpu.yaml"), "--out", str(tmp_path / "runs"))
        assert code == 2 and err.splitlines()[-1] == (
            "error: resources.gpus_per_job: the suite asks for 1 GPU(s) per job but this machine has 0 GPU(s) that "
            "torch can use; set resources.gpus_per_job: 0 to train on CPU")
        assert not [p for p in (tmp_path / "runs" / "toy").iterdir() if not p.name.startswith(".")]
    cpus = int(have["CPU"]) * 32
    data["resources"] = {"cpus_per_job": cpus}
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump(data))
    code, _, err = cli("run", str(tmp_path / "cpu.yaml"), "--out", str(tmp_path / "runs2"))
    assert code == 0
    assert (f"warning: resources.cpus_per_job: the suite asks for {cpus} CPU(s) per job but this machine has "
            f"{have['CPU']:g}: each job runs on {have['CPU']:g} thread(s)") in err.splitlines()


# ------------------------------------------------------------------ 10: a quiet terminal


def test_the_leaderboard_prints_no_library_warning(tmp_path):
    """Values that make numpy, scipy and matplotlib warn (inf, NaN, one seed, constant columns)."""
    root = tmp_path / "runs" / "w"
    for i, (label, value) in enumerate([("a", "Infinity"), ("a", "NaN"), ("b", "1e308"), ("b", "-1e308"),
                                        ("c", "0.5"), ("c", "0.5")]):
        (root / f"j{i}").mkdir(parents=True)
        (root / f"j{i}" / "result.json").write_text(
            '{"status": "ok", "job": {"suite": "w", "seed": %d, "objective": {"name": "%s"}, "encoder": {"name": "e"}, '
            '"dataset": {"name": "d"}}, "main_scores": {"zs": {"key": "*.top1", "higher_is_better": true}}, '
            '"metrics": {"zs": {"s": {"top1": %s}}, "gap": {"centroid_distance": %s}}}' % (i, label, value, value))
        (root / f"j{i}" / "log.jsonl").write_text("".join(f'{{"step": {s}, "loss": {value}}}\n' for s in range(3)))
    proc = harness_cli(tmp_path, "leaderboard", str(root), "--out", str(tmp_path / "lb"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.startswith(f"leaderboard written to {tmp_path / 'lb'} (open ")


LATE_CTRL_C = """
import os, signal, sys, threading, time
sys.argv = ["harness", "validate", sys.argv[1]]
from harness.cli import main
code = main()
print("command done", flush=True)
threading.Thread(target=time.sleep, args=(5,)).start()  # a library's non-daemon thread, joined at exit
threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
sys.exit(code)
"""


def test_a_ctrl_c_after_the_work_is_done_prints_no_traceback(tmp_path, fake_on_path):
    from conftest import GOOD_SUITE

    path = tmp_path / "s.yaml"
    path.write_text(GOOD_SUITE)
    env = {**os.environ, "PYTHONPATH": f"{fake_on_path}{os.pathsep}{ROOT}", "HARNESS_LOAD_PLUGINS": "harness-fake"}
    proc = subprocess.run([sys.executable, "-c", LATE_CTRL_C, str(path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert "command done" in proc.stdout
    assert proc.returncode == 130 and "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr
