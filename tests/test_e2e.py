"""End to end through the CLI with the real built-in plugins: suites/smoke.yaml -> runs -> leaderboard."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "suites").glob("*.yaml"))


def harness(*args: str, cwd: Path, plugins: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_LOAD_PLUGINS": plugins}
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.parametrize("suite", SUITES, ids=[s.stem for s in SUITES])
def test_shipped_suites_validate(suite):
    import importlib.metadata as md

    from harness.suite import expand, load_suite

    parsed = load_suite(suite)
    for dist in parsed.requires:
        try:
            md.version(dist)
        except md.PackageNotFoundError:
            pytest.skip(f"{suite.name} needs {dist} (CI installs every distribution under plugins/)")
    jobs = expand(parsed, source=str(suite))
    assert jobs and len({j.id for j in jobs}) == len(jobs)


def test_default_suite_has_the_required_rows():
    from harness.suite import expand, load_suite

    jobs = expand(load_suite(ROOT / "suites" / "gap.yaml"))
    labels = {j.objective.display for j in jobs}
    assert {"clip", "clip_t0.01", "cua", "cuaxu", "siglip", "cyclip", "dcl", "align_uniform", "untrained"} <= labels
    t001 = next(j for j in jobs if j.objective.display == "clip_t0.01")
    assert t001.objective.params["temperature"] == 0.01 and t001.objective.params["learnable_temperature"] is False
    assert all(j.train["steps"] == 0 for j in jobs if j.objective.display == "untrained")
    trained = [j for j in jobs if j.objective.display != "untrained"]
    assert {(j.encoder.params["model"], j.train["steps"]) for j in trained} == {("harness-tiny-cnn", 800),
                                                                                 ("harness-tiny-convvit", 600)}
    # 36 world draws on the conv tower, the first 5 on the conv-stem ViT; headline shape, size, position
    by_encoder = {}
    for j in jobs:
        by_encoder.setdefault(j.encoder.params["model"], set()).add((j.replicate, j.seed, j.dataset.params["seed"]))
    assert by_encoder == {"harness-tiny-cnn": {(r, r, r) for r in range(36)},
                          "harness-tiny-convvit": {(r, r, r) for r in range(5)}}
    assert {tuple(j.dataset.params["headline"]) for j in jobs} == {("shape", "size", "position")}
    assert {j.dataset.params["composition"] for j in jobs} == {"balanced"} and {j.reference for j in jobs} == {"clip"}


@pytest.mark.slow
def test_smoke_suite_end_to_end(tmp_path):
    out = tmp_path / "runs"
    validate = harness("validate", str(ROOT / "suites" / "smoke.yaml"), cwd=tmp_path)
    assert validate.returncode == 0, validate.stderr
    ids = [line.split()[0] for line in validate.stdout.splitlines()[1:]]
    assert len(ids) == 3

    run = harness("run", str(ROOT / "suites" / "smoke.yaml"), "--out", str(out), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    suite_dir = out / "smoke"
    assert sorted(p.name for p in suite_dir.iterdir() if not p.name.startswith(".")) == sorted(ids)  # ids are stable
    for job_id in ids:
        result = json.loads((suite_dir / job_id / "result.json").read_text())
        assert result["status"] == "ok", result["traceback"]
        assert {"gap", "zeroshot_classification", "retrieval", "arithmetic", "linear_probe", "gap_shift", "train"} <= set(result["metrics"])
        values = dict(leaves(result["metrics"]))
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values()), values
        assert 0 <= result["metrics"]["gap"]["linear_separability"] <= 1
        assert (suite_dir / job_id / "embeddings" / "retrieval.npz").exists()
        log = [json.loads(line) for line in (suite_dir / job_id / "log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in log if "loss" in r] == [2, 4]  # 4 steps, log_every 2
        assert [r["step"] for r in log if "probe" in r] == [0, 1, 2, 3, 4]  # the shapes world's probes
        assert all(set(r) == {"warning", "category", "where", "count"} for r in log if "step" not in r)
    assert "Warning" not in run.stderr  # library warnings go to each job's log, not the terminal

    again = harness("run", str(ROOT / "suites" / "smoke.yaml"), "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0 and "0 to run" in again.stderr

    board = harness("leaderboard", str(suite_dir), "--out", str(tmp_path / "board"), cwd=tmp_path)
    assert board.returncode == 0, board.stderr
    readme = (tmp_path / "board" / "README.md").read_text()
    assert all(label in readme for label in ("clip", "cua", "siglip"))
    assert (tmp_path / "board" / "index.html").exists() and (tmp_path / "board" / "results.csv").exists()


@pytest.mark.parametrize("dataset", [{"name": "digits"}, {"name": "shapes", "params": {"train_size": 256, "eval_size": 64}}])
def test_tiny_encoder_trains_and_its_checkpoint_reloads(tmp_path, dataset):
    import numpy as np
    import torch

    import harness
    from harness.runner import run_job
    from harness.suite import expand, parse_suite

    suite = parse_suite({
        "name": "tiny", "objectives": ["clip"], "encoders": [{"name": "open_clip"}], "datasets": [dataset],
        "train": {"steps": 6, "batch_size": 16, "lr": 1e-3, "log_every": 1},
        "evaluations": ["zeroshot_classification", "retrieval"], "save": ["checkpoint"],
    })
    result = run_job(expand(suite)[0], tmp_path)
    assert result["status"] == "ok", result["traceback"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    log = [r for r in log if "loss" in r]  # training records (the shapes world also logs probes)
    assert len(log) == 6 and all(math.isfinite(r["loss"]) for r in log)
    assert result["metrics"]["zeroshot_classification"]

    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    reloaded = harness.create_encoder("open_clip")
    reloaded.model.load_state_dict(state["model"])
    fresh = harness.create_encoder("open_clip")  # a fresh random init differs ...
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        x = reloaded.preprocess_images(images, train=False)
        again = harness.create_encoder("open_clip")
        again.model.load_state_dict(state["model"])
        assert torch.equal(reloaded.encode_image(x), again.encode_image(x))  # ... the checkpoint reloads exactly
        assert not torch.equal(reloaded.encode_image(x), fresh.encode_image(x))


@pytest.mark.slow
def test_zoo_smoke_runs_every_objective_including_the_third_party_ones(tmp_path):
    """The mission's path: harness-objectives installed as an outside package, then every objective of zoo.yaml."""
    import importlib.metadata as md

    try:
        md.version("harness-objectives")
    except md.PackageNotFoundError:
        pytest.skip("harness-objectives is not installed (pip install ./plugins/harness-objectives; CI installs it)")
    run = harness("run", str(ROOT / "suites" / "zoo-smoke.yaml"), "--out", str(tmp_path / "runs"), cwd=tmp_path,
                  plugins="harness-objectives")
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "zoo-smoke").glob("*/result.json")]
    assert len(results) == 20 and all(r["status"] == "ok" for r in results)
    labels = {r["job"]["objective"]["label"] for r in results}
    assert {"cloob", "dhel", "hn_nce", "ifm", "vicreg", "barlow_twins", "clip_cosine_temperature", "negclip",
            "sogclr", "unicl", "albef_itc"} <= labels


def test_a_suite_requiring_a_missing_distribution_says_what_to_install(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text((ROOT / "suites" / "smoke.yaml").read_text() + "requires: [harness-not-there]\n")
    run = harness("validate", str(suite), cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert ("requires[0]: this suite needs the plugin distribution 'harness-not-there', which is not installed; "
            "pip install harness-not-there") in run.stderr


def test_the_paper_suites_hold_their_designs():
    """paper-3d: d = 3, T = 0.01 fixed, equal epochs at 5 batch sizes from below d to well above it, a gap
    curve; gap-batch: 3 batch sizes with equal pairs seen; same-modality: 2 x 2 x 4 arms, 5 replicates."""
    from harness.suite import expand, load_suite

    jobs = expand(load_suite(ROOT / "suites" / "paper-3d.yaml"))
    assert {j.encoder.params["embed_dim"] for j in jobs} == {3}
    assert sorted({j.train["batch_size"] for j in jobs}) == [2, 4, 8, 32, 128]
    assert {(j.train["epochs"], j.train["steps"], j.train["gap_curve"]) for j in jobs} == {(100.0, None, 21)}
    assert {j.dataset.params["train_size"] for j in jobs} == {128} and len({j.replicate for j in jobs}) == 5
    assert {(j.objective.params["temperature"], j.objective.params["learnable_temperature"]) for j in jobs} == {(0.01, False)}

    jobs = expand(load_suite(ROOT / "suites" / "gap-batch.yaml"))
    pairs_seen = {j.train["batch_size"]: j.train["epochs"] * j.dataset.params["train_size"] for j in jobs}
    assert sorted(pairs_seen) == [16, 64, 256] and set(pairs_seen.values()) == {38_400}
    assert {j.train["warmup"] * j.train["batch_size"] for j in jobs} <= {3_200, 3_072}  # the same warm-up pairs
    assert {j.objective.name for j in jobs} == {"clip", "siglip", "cua"} and len({j.replicate for j in jobs}) == 5

    jobs = expand(load_suite(ROOT / "suites" / "same-modality.yaml"))
    arms = {(j.encoder.params["shared_init"], j.encoder.params["views"], j.objective.params["temperature"],
             j.objective.params["learnable_temperature"]) for j in jobs}
    assert len(arms) == 16 and len(jobs) == 80
    assert {(t, learn) for *_, t, learn in arms} == {(0.01, False), (0.03, False), (0.07, False), (0.07, True)}
    assert {j.encoder.params["model"] for j in jobs} == {"harness-tiny-cnn"}
