"""Hostile input, round 3, item 6: a damaged or hostile run directory never crashes, hangs or
exhausts ``harness run`` (resume), ``harness evaluate`` or ``harness leaderboard``.

Every file of a run directory is data someone may have edited, replaced or planted: JSON of the
wrong shape or nested thousands deep, a symbolic link to ``/dev/zero``, a FIFO (opening it would
wait forever), a file far larger than any result, results with hundreds of thousands of keys,
non-finite or 1e308 values in metrics and environment fields, corrupt or inconsistent ``.npz``
files. Each is skipped or refused with one line naming the file, in bounded time and memory.
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import fakes
from harness.errors import HarnessError
from harness.leaderboard import build_leaderboard
from harness.leaderboard.plotdata import pca2, read_log, read_probes
from harness.safefiles import Refused, load_npz, npz_rows, open_regular, read_bytes, read_json

ROOT = Path(__file__).resolve().parents[1]
EXTREME = [1e308, -1e308, float("inf"), float("-inf"), float("nan"), 5e-324, 0.5, -0.5, 1e-300, 1e300]
LABELS = ["clip", "=cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\x1b[31mred\x1b[0m", "\tx", "siglip"]


@contextmanager
def watchdog(seconds: float):
    """Kill the test process with a traceback if the block hangs (a FIFO opened for reading would)."""
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


class Victim:
    """Something outside the run directory that a planted link points at: it must stay untouched."""

    def __init__(self, tmp: Path):
        self.file = tmp / "victim.txt"
        self.file.write_text("precious")

    def intact(self) -> bool:
        return self.file.read_text() == "precious"


class _Touch:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ------------------------------------------------------------------ the safe readers themselves


def test_safe_readers_never_follow_links_or_open_fifos(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": 1}')
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "link.json").symlink_to(tmp_path / "ok.json")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    with open(tmp_path / "sparse", "wb") as fh:
        fh.truncate(2**30)
    with watchdog(30):
        assert read_json(tmp_path / "ok.json", 100) == {"a": 1}
        for name, says in (("zero", "a symbolic link, never followed"), ("link.json", "a symbolic link"),
                           ("fifo", "a FIFO, not a regular file"), ("dir", "a directory, not a regular file"),
                           ("sparse", "larger than 1 MiB")):
            with pytest.raises(Refused, match=says):
                read_bytes(tmp_path / name, 2**20)
        with pytest.raises(Refused, match="a character device"):
            open_regular("/dev/null")
        with pytest.raises(FileNotFoundError):
            read_bytes(tmp_path / "missing", 10)
    for text, says in (("[" * 100_000, "nested too deep"), ('{"a": 1e400}', "out of range"), ("1" * 40, "40 digits"),
                       ("\xff", "not UTF-8 text at byte 0"), ("{", "invalid JSON"), ('{"a": ' * 70 + "1" + "}" * 70, "nested too deep")):
        (tmp_path / "bad.json").write_text(text, encoding="latin-1")
        with pytest.raises(Refused, match=says):
            read_json(tmp_path / "bad.json", 2**20)


def _zip(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def _header(shape: tuple, descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_npz_files_are_read_bounded_and_never_unpickled(tmp_path):
    pwned = tmp_path / "PWNED"
    cases = {
        "pickle": {"image_emb.npy": _npy(np.array([_Touch(pwned)], dtype=object))},
        "liar": {"image_emb.npy": _header((2**40, 4)) + bytes(64)},
        "short": {"image_emb.npy": _header((10, 4)) + bytes(64)},
        "notnpy": {"image_emb.npy": b"hello"},
        "many": {f"a{i}.npy": _npy(np.zeros(1)) for i in range(100)},
    }
    for name, members in cases.items():
        _zip(tmp_path / f"{name}.npz", members)
    (tmp_path / "bomb.npz").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("image_emb.npy", "w", force_zip64=True) as m:
            m.write(_header((2**22, 16)))
            for _ in range(64):
                m.write(bytes(2**22))
    expected = {"pickle": "holds Python objects", "liar": "more than", "short": "bytes of data for shape",
                "notnpy": "not a .npy array", "many": "an archive of 100 members", "bomb": "(at most 64 MiB)"}
    for name, says in expected.items():
        with pytest.raises(Refused, match=says):
            load_npz(tmp_path / f"{name}.npz", ["image_emb"], 64 * 2**20)
    assert not pwned.exists()
    rows, n = npz_rows(tmp_path / "bomb.npz", "image_emb", max_values=2**16, limit=2**30, rng=np.random.default_rng(0))
    assert n == 2**22 and rows.shape == (2**12, 16)  # 256 MiB read 4 MiB at a time, 256 KiB kept


def test_plot_inputs_survive_extreme_values_and_damaged_logs(tmp_path):
    image = np.full((20, 4), 1e308)
    image[3] = np.nan
    pair = np.full((20, 4), -1e308)
    pair[::2, 1] = 1e308
    xi, xp = pca2(image, pair)
    assert np.isfinite(xi).all() and np.isfinite(xp).all() and len(xi) == 19
    with pytest.raises(ValueError):
        pca2(np.full((1, 4), np.nan), np.full((1, 4), np.inf))
    log = tmp_path / "log.jsonl"
    log.write_text('[1]\n{"step": 1, "loss": 1e308}\n{"step": 2, "loss": 0.5, "probe": {"a": 0.5, "b": "x"}}\n'
                   + "[" * 200_000 + "\n" + '{"step": 3, "loss": NaN}\n{"step": 1e999, "loss": 1}\n')
    steps, losses = read_log(log)
    assert steps.tolist() == [2.0] and losses.tolist() == [0.5]
    assert read_probes(log) == {"a": [(2.0, 0.5)]}
    for name in ("zero", "fifo"):
        bad = tmp_path / name
        bad.symlink_to("/dev/zero") if name == "zero" else os.mkfifo(bad)
        with watchdog(30):
            assert len(read_log(bad)[0]) == 0 and read_probes(bad) == {}


# ------------------------------------------------------------------ the leaderboard of a damaged 100-job directory


def _bomb(rows: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, n in (("image_emb", rows), ("pair_emb", 64)):
            with zf.open(f"{name}.npy", "w", force_zip64=True) as m:
                m.write(_header((n, 4)))
                block = bytes(min(2**22, n * 16))
                for _ in range(n * 16 // len(block)):
                    m.write(block)
    return buf.getvalue()


def damaged_store(root: Path, n: int = 100) -> Path:
    """``n`` jobs of valid but extreme results (1e308, ±inf, NaN, formula-like and escape-laden
    labels, tuning jobs at lr 1e-308 and 1e308), each with a damaged log and a damaged ``.npz``:
    links to ``/dev/zero``, FIFOs, an 80 MiB log line, garbage, zip bombs, inconsistent towers."""
    rng = np.random.default_rng(0)
    bombs = [_bomb(17 * 2**20), _bomb(2**22)]  # 272 MiB (over the limit: never read) and 64 MiB (read sampled)
    spec = lambda name, label=None: {"name": name, "params": {}, "label": label}  # noqa: E731
    for i in range(n):
        lr = [1e308, 1e-308, 0.001, float("nan")][i % 4]
        job = {"id": f"{i:012x}", "suite": "dmg", "objective": spec("clip", LABELS[i % len(LABELS)]),
               "encoder": spec("e", ["tiny", "big\r\nx"][i % 2]), "dataset": spec("d", "shapes"),
               "train": {"steps": 10, "lr": lr}, "seed": i // len(LABELS), "evaluations": [spec("gap"), spec("zs")],
               "save": [], "resources": {}}
        if i % 10 == 9:
            job.update(stage="tune", trial={"train.lr": [1e-308, 1e308, 0.01][i % 3]},
                       tuning={"trials": 3, "seeds": [0], "metric": "zs.*.top1"})
        v, w = EXTREME[i % len(EXTREME)], EXTREME[(i * 3 + 1) % len(EXTREME)]
        result = {
            "status": "ok" if i % 13 else "failed", "job": job,
            "metrics": {"gap": {"centroid_distance": v}, "zs": {"s": {"top1": w}, "t": {"top1": -w}},
                        "train": {"final_loss": v, "steps": 10}},
            "metric_info": {"gap": {"centroid_distance": {"display": "cd\x1b[2J", "group": "gap", "higher_is_better": False}}},
            "main_scores": {"zs": {"key": "*.top1", "higher_is_better": True, "description": "top-1\x1b[5m"}},
            "reference_rows": {"=chance": {"zs.s.top1": 1e308, "zs.t.top1": float("inf")}},
            "skipped": {"x\x1b[1m": "why\x1b[1m"}, "error": "boom\x1b[31m\nline" if i % 13 == 0 else None,
            "env": {"wall_time_s": [1e308, float("inf"), float("nan"), -1e308, 3.0][i % 5], "train_time_s": 1e308,
                    "started_at": "\x1b]0;pwned\x07 2025", "device_name": "cpu\x1b[2J", "torch_threads": 1e308,
                    "harness_version": "=1+1", "git_commit": None, "packages": {"numpy": "\x1b[31m"}},
        }
        d = root / job["id"]
        d.mkdir(parents=True)
        (d / "job.json").write_text(json.dumps(job))
        (d / "result.json").write_text(json.dumps(result))
        log = d / "log.jsonl"
        kind = i % 7
        if kind == 0:
            log.symlink_to("/dev/zero")
        elif kind == 1:
            os.mkfifo(log)
        elif kind == 2:
            with open(log, "wb") as fh:
                fh.truncate(80 * 2**20)
        elif kind == 3:
            log.write_text("".join(json.dumps({"step": s, "loss": EXTREME[s % 10], "probe": {"shape": EXTREME[(s + 1) % 10]}})
                                   + "\n" for s in range(50)))
        elif kind == 4:
            log.write_text('[1,2]\n{"step": "a"}\n' + "[" * 100_000 + '\n{"step": 1e400, "loss": 1}\n')
        elif kind == 5:
            log.write_text("".join(json.dumps({"step": s, "loss": 3 - s / 10, "probe": {"shape": s / 50}}) + "\n"
                                   for s in range(0, 50, 5)))
        else:
            log.symlink_to(d / "result.json")
        emb = d / "embeddings"
        emb.mkdir()
        f = emb / "retrieval.npz"
        kind = i % 9
        if kind == 0:
            f.symlink_to("/dev/zero")
        elif kind == 1:
            os.mkfifo(f)
        elif kind == 2:
            f.write_bytes(b"PK\x03\x04" + rng.bytes(1000))
        elif kind == 3:
            np.savez(f, image_emb=rng.normal(size=(10, 8)), pair_emb=rng.normal(size=(10, 9)), pair_image_index=np.arange(10))
        elif kind == 4:
            np.savez(f, image_emb=np.full((20, 4), 1e308), pair_emb=np.full((20, 4), -1e308), pair_image_index=np.arange(20))
        elif kind == 5:
            a = rng.normal(size=(20, 4))
            a[3], a[5] = np.nan, np.inf
            np.savez(f, image_emb=a, pair_emb=rng.normal(size=(20, 4)), pair_image_index=np.arange(20))
        elif kind == 6:
            f.write_bytes(bombs[i % 2])
        elif kind == 7:
            np.savez(f, image_emb=np.array([1, 2, 3]), pair_emb=np.array(5.0))
        else:
            np.savez(f, image_emb=rng.normal(size=(30, 6)), pair_emb=rng.normal(size=(60, 6)),
                     pair_image_index=np.repeat(np.arange(30), 2))
    # what `harness run` records: these are the suite's current jobs (they differ in train.lr)
    (root / ".suite.json").write_text(json.dumps({"suite": "dmg", "jobs": [f"{i:012x}" for i in range(n)]}))
    return root


MEASURE = """
import sys, time
import harness.leaderboard, harness.leaderboard.plots, harness.leaderboard.html, harness.leaderboard.markdown
import scikit_posthocs, matplotlib.figure


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


t = time.perf_counter()
from harness.cli import main
code = main(["leaderboard", sys.argv[1], "--out", sys.argv[2]])
assert "torch" not in sys.modules, "the leaderboard loaded torch"
print(f"MEASURED {code} {time.perf_counter() - t:.2f} {status('VmHWM:') / 2**20:.0f}", file=sys.stderr)
"""


@pytest.mark.slow
def test_the_leaderboard_of_a_damaged_100_job_directory_takes_under_30_s_and_500_mb(tmp_path):
    """Timed and measured in a fresh process: the whole process's peak resident memory, its imports
    included (the leaderboard never loads torch, which alone would take ~900 MB)."""
    root = damaged_store(tmp_path / "runs" / "dmg")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HARNESS_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(root), str(tmp_path / "lb")], capture_output=True,
                          text=True, env=env, timeout=300)
    lines = proc.stderr.splitlines()
    measured = [line for line in lines if line.startswith("MEASURED ")]
    assert measured, proc.stderr[-3000:]
    code, seconds, mib = measured[0].split()[1:]
    assert int(code) == 0 and proc.stdout.startswith(f"leaderboard written to {tmp_path / 'lb'} (open "), proc.stderr[-3000:]
    assert float(seconds) < 30 and float(mib) < 500, measured
    assert lines == measured, lines  # no warning, no traceback: the damaged files were skipped quietly
    out = tmp_path / "lb"
    for name in ("results.csv", "summary.csv", "pairwise.csv", "tables.csv", "references.csv", "tuning.csv",
                 "README.md", "index.html", "board.json", "gap_vs_score.png", "loss_curves.png", "tuning.png"):
        assert (out / name).is_file(), name
    assert list(out.glob("pca_*.png"))
    for f in out.iterdir():
        if f.suffix in (".csv", ".md", ".html", ".json"):
            text = f.read_text()
            assert "\x1b" not in text and "\x07" not in text and "\r" not in text, f.name


@pytest.mark.parametrize("damage, says", [
    ("dev_zero", "corrupt result (a symbolic link, never followed: expected a regular file)"),
    ("fifo", "corrupt result (a FIFO, not a regular file)"),
    ("huge", "corrupt result (larger than 8 MiB)"),
    ("list", "corrupt result (expected a JSON object, got list)"),
    ("deep", "corrupt result (nested too deep; at most 64 levels)"),
    ("many_keys", "corrupt result (more than 20000 metric values)"),
    ("wide", "the results hold more than 20000 metric columns in all"),
])
def test_a_hostile_result_is_refused_with_one_line_in_bounded_time(tmp_path, capsys, damage, says):
    from harness.cli import main

    root = tmp_path / "runs" / "s"
    good = {"status": "ok", "job": {"suite": "s", "seed": 0, "objective": {"name": "a"}, "encoder": {"name": "e"},
                                    "dataset": {"name": "d"}}, "metrics": {"gap": {"x": 0.5}}}
    for i in range(3):
        (root / f"j{i}").mkdir(parents=True)
        (root / f"j{i}" / "result.json").write_text(json.dumps(dict(good, job=dict(good["job"], seed=i))))
    bad = root / "j1" / "result.json"
    bad.unlink()
    if damage == "dev_zero":
        bad.symlink_to("/dev/zero")
    elif damage == "fifo":
        os.mkfifo(bad)
    elif damage == "huge":
        with open(bad, "wb") as fh:
            fh.truncate(2**34)  # 16 GiB, sparse
    elif damage == "list":
        bad.write_text("[1, 2, 3]")
    elif damage == "deep":
        bad.write_text('{"status": "ok", "metrics": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif damage == "many_keys":
        bad.write_text(json.dumps(dict(good, metrics={"e": {f"k{i}": 0.5 for i in range(300_000)}})))
    else:
        for i in range(3, 25):  # each adds 1000 new columns: together past the limit
            (root / f"j{i}").mkdir()
            (root / f"j{i}" / "result.json").write_text(
                json.dumps(dict(good, job=dict(good["job"], seed=i), metrics={"e": {f"c{i}_{k}": 0.5 for k in range(1000)}})))
        bad.write_text(json.dumps(good))
    t = time.perf_counter()
    with watchdog(60):
        code = main(["leaderboard", str(root), "--out", str(tmp_path / "lb")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    assert damage == "wide" or str(bad) in err
    assert time.perf_counter() - t < 20


# ------------------------------------------------------------------ harness run (resume) over a damaged store


def test_resume_reruns_damaged_results_and_never_follows_planted_links(toy, tmp_path, capsys):
    from harness.executors import run_suite
    from harness.store import Store
    from harness.suite import expand, parse_suite

    victim = Victim(tmp_path)
    suite = parse_suite(fakes.toy_suite(steps=2, seeds=[0, 1, 2, 3, 4]))
    jobs = expand(suite)
    out = tmp_path / "runs"
    run_suite(suite, jobs, out=out)
    store_dir = out / "toy"
    ids = [j.id for j in jobs]
    damage = {ids[0]: "fifo", ids[1]: "dev_zero", ids[2]: "list", ids[3]: "not_a_dir"}
    for job_id, kind in damage.items():
        result = store_dir / job_id / "result.json"
        if kind == "not_a_dir":
            shutil.rmtree(store_dir / job_id)
            (store_dir / job_id).write_text("a file where a job directory was")
            continue
        result.unlink()
        if kind == "fifo":
            os.mkfifo(result)
        elif kind == "dev_zero":
            result.symlink_to("/dev/zero")
        else:
            result.write_text('["ok"]')
    (store_dir / ".locks" / f"{ids[4]}.lock").symlink_to(victim.file)  # a claim must not truncate it
    (store_dir / ".tmp" / f"{ids[4]}.old.x").symlink_to(tmp_path)  # cleanup must not delete through it
    os.mkfifo(store_dir / ".tmp" / f"{ids[4]}.1.y")
    capsys.readouterr()
    with watchdog(120):
        summary = run_suite(suite, jobs, out=out, force=False)
    err = capsys.readouterr().err
    assert len(summary.ok) == 4 and len(summary.skipped) == 1 and not summary.failed
    for job_id, says in ((ids[0], "a FIFO, not a regular file"), (ids[1], "a symbolic link, never followed"),
                         (ids[2], "expected a JSON object, got list"), (ids[3], "is not a directory")):
        assert f"warning: {store_dir / job_id / 'result.json'}: unusable result (" in err and says in err
    assert victim.intact() and tmp_path.is_dir() and (tmp_path / "victim.txt").exists()
    store = Store(out, "toy")
    assert all(store.status(i) == "ok" for i in ids)
    assert store.claim(ids[4])  # the planted link was replaced by a real lock file
    store.release(ids[4])
    assert victim.intact()


# ------------------------------------------------------------------ harness evaluate over damaged job files


@pytest.fixture(scope="module")
def saved_job(tmp_path_factory):
    """One finished toy job with embeddings and a checkpoint (copied by each test, then damaged)."""
    import harness.registry as registry_mod
    from harness.executors import run_suite
    from harness.suite import expand, parse_suite

    tmp = tmp_path_factory.mktemp("saved")
    site = fakes.install(tmp / "site")
    sys.path.insert(0, str(site))
    old = os.environ.get("HARNESS_LOAD_PLUGINS")
    os.environ["HARNESS_LOAD_PLUGINS"] = fakes.DIST
    registry_mod.set_registry(registry_mod.Registry())
    try:
        suite = parse_suite(fakes.toy_suite(steps=2, save=["embeddings", "checkpoint"]))
        run_suite(suite, expand(suite), out=tmp / "runs")
    finally:
        registry_mod.set_registry(None)
        sys.path.remove(str(site))
        sys.modules.pop(fakes.MODULE, None)
        if old is None:
            os.environ.pop("HARNESS_LOAD_PLUGINS", None)
        else:
            os.environ["HARNESS_LOAD_PLUGINS"] = old
    (job_dir,) = [p for p in (tmp / "runs" / "toy").iterdir() if not p.name.startswith(".")]
    return job_dir


def _damage(job: Path, what: str, tmp: Path) -> Path:
    pwned = tmp / "PWNED"
    target = {"job_fifo": "job.json", "job_zero": "job.json", "job_list": "job.json", "job_huge": "job.json",
              "result_list": "result.json", "result_fifo": "result.json", "ckpt_fifo": "checkpoint.pt",
              "ckpt_garbage": "checkpoint.pt", "ckpt_pickle": "checkpoint.pt", "ckpt_foreign": "checkpoint.pt"}.get(
        what, "embeddings/retrieval.npz")
    path = job / target
    old = np.load(job / "embeddings" / "retrieval.npz") if target.endswith(".npz") else None
    path.unlink()
    if what.endswith("fifo"):
        os.mkfifo(path)
    elif what.endswith("zero"):
        path.symlink_to("/dev/zero")
    elif what.endswith("list"):
        path.write_text("[1]")
    elif what == "job_huge":
        with open(path, "wb") as fh:
            fh.truncate(2**33)
    elif what == "npz_garbage" or what == "ckpt_garbage":
        path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 40)
    elif what == "npz_pickle":
        np.savez(path, image_emb=np.array([_Touch(pwned)], dtype=object))
    elif what == "ckpt_pickle":
        path.write_bytes(pickle.dumps(_Touch(pwned)))
    elif what == "ckpt_foreign":
        import torch

        torch.save({"model": {"nonsense": torch.zeros(3)}}, path)
    elif what == "npz_rows":
        np.savez(path, image_emb=old["image_emb"][:-1], pair_emb=old["pair_emb"], pair_image_index=old["pair_image_index"])
    elif what == "npz_width":
        np.savez(path, image_emb=old["image_emb"], pair_emb=old["pair_emb"][:, :-1], pair_image_index=old["pair_image_index"])
    elif what == "npz_index":
        np.savez(path, image_emb=old["image_emb"], pair_emb=old["pair_emb"],
                 pair_image_index=old["pair_image_index"] + 10**6)
    elif what == "npz_dtype":
        np.savez(path, image_emb=old["image_emb"].astype(np.complex64))
    return path


@pytest.mark.parametrize("what, says", [
    ("job_fifo", "not a job record (a FIFO, not a regular file)"),
    ("job_zero", "not a job record (a symbolic link, never followed"),
    ("job_list", "not a job record: (top level): expected a JSON object (got 'list')"),
    ("job_huge", "not a job record (larger than 4 MiB)"),
    ("result_list", "corrupt result (expected a JSON object, got list)"),
    ("result_fifo", "corrupt result (a FIFO, not a regular file)"),
    ("npz_fifo", "corrupt embeddings (a FIFO, not a regular file)"),
    ("npz_zero", "corrupt embeddings (a symbolic link, never followed"),
    ("npz_garbage", "corrupt embeddings (not an .npz archive"),
    ("npz_pickle", "corrupt embeddings (array 'image_emb' holds Python objects"),
    ("npz_rows", "corrupt embeddings (image_emb has 63 rows for the set's 64 images)"),
    ("npz_width", "corrupt embeddings (pair_emb is float32 of shape"),
    ("npz_index", "corrupt embeddings (pair_image_index points outside image_emb)"),
    ("npz_dtype", "corrupt embeddings (image_emb is complex64 of shape (64, 8), not a 2-D float matrix)"),
    ("ckpt_fifo", "not a checkpoint (a FIFO, not a regular file)"),
    ("ckpt_garbage", "corrupt checkpoint ("),
    ("ckpt_pickle", "corrupt checkpoint ("),
    ("ckpt_foreign", "does not fit the job's encoder ("),
])
def test_evaluate_refuses_a_damaged_job_file_with_one_line(saved_job, toy, tmp_path, cli, what, says):
    job = tmp_path / "runs" / "toy" / saved_job.name
    shutil.copytree(saved_job, job)
    path = _damage(job, what, tmp_path)
    before = (job / "result.json").read_bytes() if what[:6] not in ("result",) else None
    with watchdog(120):
        code, _, err = cli("evaluate", str(tmp_path / "runs" / "toy"))
    lines = err.splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert lines[0].startswith(f"{job.name}: {path if not what.startswith('result') else job / 'result.json'}: ")
    assert says in lines[0], lines[0]
    assert lines[-1] == "error: 1 job(s) could not be re-evaluated (bad input, said above)"
    assert not (tmp_path / "PWNED").exists()
    if before is not None:
        assert (job / "result.json").read_bytes() == before  # nothing stored was changed
