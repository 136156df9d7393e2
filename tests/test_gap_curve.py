"""The gap over training (``train: {gap_curve: K}``, harness.training.gapcurve): records at K evenly
spaced points, the geometry of a fixed set of training pairs, and no change to the training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import harness
from harness.config import TrainConfig
from harness.embed import embed_texts, embed_images
from harness.metrics.gap import gap_metrics
from harness.training import train
from harness.training.gapcurve import CAPTION_STREAM, CURVE_METRICS, GAP_PAIRS, STREAM, curve_points


def test_curve_points_are_evenly_spaced_and_include_both_ends():
    assert curve_points(600, 5) == {0, 150, 300, 450, 600}
    assert curve_points(10, 4) == {0, 3, 7, 10}
    assert curve_points(3, 10) == {0, 1, 2, 3}  # more points than steps: every step
    assert curve_points(0, 5) == {0}


def test_gap_curve_is_not_in_the_train_record_unless_set():
    assert "gap_curve" not in TrainConfig(steps=5).model_dump()  # earlier job ids are unchanged
    assert TrainConfig(steps=5, gap_curve=3).model_dump()["gap_curve"] == 3
    with pytest.raises(ValueError):
        TrainConfig(steps=5, gap_curve=1)  # a curve needs two points


def _run(gap_curve, log):
    torch.manual_seed(0)
    ds = harness.create_dataset("shapes", train_size=300, eval_size=32, captions="canonical")
    enc = harness.create_encoder("open_clip", model="harness-tiny-cnn")
    cfg = TrainConfig(steps=6, batch_size=16, lr=1e-3, log_every=3, gap_curve=gap_curve)
    train(enc, harness.create_loss("clip"), ds.train_pairs(), cfg, 0, torch.device("cpu"), log)
    return enc, ds, [json.loads(line) for line in log.read_text().splitlines()]


def test_the_curve_measures_fixed_training_pairs_and_leaves_training_unchanged(tmp_path):
    plain, _, plain_log = _run(None, tmp_path / "plain.jsonl")
    enc, ds, records = _run(3, tmp_path / "curve.jsonl")
    for a, b in zip(plain.model.parameters(), enc.model.parameters()):
        assert torch.equal(a, b)  # same training draws, same numbers
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses == [r["loss"] for r in plain_log if "loss" in r]
    gap = [r for r in records if "gap" in r]
    assert [r["step"] for r in gap] == [0, 3, 6]
    assert [r["epoch"] for r in gap] == pytest.approx([0, 3 * 16 / 300, 6 * 16 / 300])
    assert all(set(r["gap"]) == set(CURVE_METRICS) for r in gap)
    # the last point, recomputed by hand from the trained model on the same pairs
    n = 300
    order = np.sort(np.random.default_rng([0, STREAM]).permutation(n)[:min(GAP_PAIRS, n)])
    images, texts = ds.train_pairs().get_batch(order, np.random.default_rng([0, CAPTION_STREAM]))
    enc.model.eval()
    x = embed_images(enc, images, torch.device("cpu"), 256)
    y = embed_texts(enc, texts, torch.device("cpu"), 256)
    want = gap_metrics(x, y, seed=0)
    assert len(order) == GAP_PAIRS
    for key in CURVE_METRICS:
        assert gap[-1]["gap"][key] == pytest.approx(want[key], abs=1e-6)
    centroid = float((x.double().mean(0) - y.double().mean(0)).norm())
    assert gap[-1]["gap"]["centroid_distance"] == pytest.approx(centroid, abs=1e-6)
    assert gap[0]["gap"]["centroid_distance"] != pytest.approx(centroid, abs=1e-4)  # it moved over training


# ------------------------------------------------------------------ the page


def test_epochs_to_halve_is_the_first_point_at_half_the_start():
    from harness.leaderboard.progress import epochs_to_halve

    assert epochs_to_halve([(0, 0.8), (1, 0.6), (2, 0.4), (3, 0.1)]) == 2  # 0.4 <= 0.5 * 0.8
    assert epochs_to_halve([(0, 0.8), (1, 0.5), (2, 0.9)]) != epochs_to_halve([(0, 0.8), (1, 0.41)])
    assert np.isnan(epochs_to_halve([(0, 0.8), (1, 0.7)]))  # never within the budget
    assert np.isnan(epochs_to_halve([(0, 0.0), (1, 0.0)]))  # no gap to halve
    assert np.isnan(epochs_to_halve([]))
    assert np.isnan(epochs_to_halve([(1, 0.8), (2, 0.1)]))  # no point at epoch 0: no start to halve


def test_a_curve_point_that_cannot_be_measured_is_logged_and_the_job_goes_on(tmp_path, monkeypatch):
    import harness.training.gapcurve as gapcurve

    def broken(*args, **kwargs):
        raise ValueError("image_emb has non-finite values")

    monkeypatch.setattr(gapcurve, "gap_metrics", broken)
    _, _, records = _run(3, tmp_path / "log.jsonl")
    gap = [r for r in records if "gap" in r]
    assert [(r["step"], r["gap"], r["gap_error"]) for r in gap] == [(s, {}, "image_emb has non-finite values") for s in (0, 3, 6)]
    assert [r["step"] for r in records if "loss" in r] == [3, 6]  # training finished


@pytest.mark.parametrize("train, expected", [
    ({"batch 16": {"batch_size": 16, "warmup": 200}, "batch 256": {"batch_size": 256, "warmup": 12}}, "train.batch_size"),
    ({"a": {"batch_size": 16, "lr": 1e-3}, "b": {"batch_size": 16, "lr": 2e-3}}, "train.lr"),
    ({"a": {"lr": 1e-3, "warmup": 1}, "b": {"lr": 2e-3, "warmup": 2}}, None),  # two settings, neither the batch size
    ({"a": {"batch_size": 16, "checkpoint_every": 5}, "b": {"batch_size": 32, "checkpoint_every": 0}}, "train.batch_size"),
])
def test_the_sweep_axis_among_train_settings(train, expected):
    from types import SimpleNamespace

    from harness.leaderboard.sweep import _shared_train, sweep_param

    specs = {enc: ("open_clip", {"model": "m", **_shared_train([SimpleNamespace(job={"train": t})])}) for enc, t in train.items()}
    assert sweep_param(specs) == expected


def _job(root, job_id, batch, replicate, curve, cd_end):
    spec = lambda name, label, params=None: {"name": name, "params": params or {}, "label": label}  # noqa: E731
    job = {"id": job_id, "suite": "toy-3d", "objective": spec("clip", "clip_t0.01"),
           "encoder": spec("open_clip", f"batch {batch}", {"model": "harness-tiny-cnn", "embed_dim": 3}),
           "dataset": spec("shapes", "shapes", {"seed": replicate}), "seed": replicate, "replicate": replicate,
           "train": {"epochs": 10.0, "steps": None, "batch_size": batch, "lr": 1e-3, "gap_curve": len(curve)},
           "evaluations": [spec("gap", "gap")], "save": [], "resources": {}}
    info = {"gap": {"centroid_distance": {"higher_is_better": False, "description": "centroid distance"}}}
    result = {"status": "ok", "job": job, "metrics": {"gap": {"centroid_distance": cd_end, "linear_separability": 0.9}},
              "metric_info": info, "env": {"started_at": "2025-01-01T00:00:00+00:00"}, "error": None}
    d = root / job_id
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(result))
    lines = [{"step": 10, "epoch": 1.0, "loss": 1.0}]  # a training record: not a curve point
    lines += [{"step": int(e * 10), "epoch": e, "gap": {"centroid_distance": v, "linear_separability": 0.5}} for e, v in curve]
    (d / "log.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")


def test_the_page_shows_the_gap_over_training_and_the_batch_size_sweep(tmp_path):
    from harness.leaderboard import build_leaderboard
    from harness.leaderboard.load import load_runs
    from harness.leaderboard.sweep import sweeps

    root = tmp_path / "runs" / "toy-3d"
    curves = {  # batch -> per replicate: (epoch, centroid distance)
        2: [[(0, 1.0), (5, 0.4), (10, 0.2)], [(0, 0.8), (5, 0.6), (10, 0.3)]],
        128: [[(0, 1.0), (5, 0.9), (10, 0.7)], [(0, 1.2), (5, 1.0), (10, 0.9)]],
    }
    for batch, reps in curves.items():
        for r, curve in enumerate(reps):
            _job(root, f"b{batch}r{r}", batch, r, curve, curve[-1][1])
    assert sweeps(load_runs(root)) == {"shapes": ("train.batch_size", {"batch 2": 2.0, "batch 128": 128.0})}
    out = build_leaderboard(root, out=tmp_path / "page")
    readme = (out / "README.md").read_text()
    section = readme.split("## The gap over training", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|-")]
    assert rows[0][:8] == ["dataset", "encoder", "objective", "n", "centroid distance at step 0", "at the end",
                           "epochs to halve (median, reached)", "epochs trained"]
    by_encoder = {row[1]: row for row in rows[1:]}
    # batch 2: replicate 0 halves at epoch 5 (0.4 <= 0.5), replicate 1 at epoch 10 (0.3 <= 0.4): median 7.5
    assert by_encoder["batch 2"][3:] == ["2", "0.900 ± 0.141", "0.250 ± 0.071", "7.5 (2/2)", "10"]
    assert by_encoder["batch 128"][3:] == ["2", "1.100 ± 0.141", "0.800 ± 0.141", "— (0/2)", "10"]
    assert "](gap_curve.png)" in section and (out / "gap_curve.png").exists()
    from harness.leaderboard.progress import curve_table

    start_at_zero = curve_table({("shapes", "shared", "clip"): [{"centroid_distance": [(0, 0.0), (1, 0.3)]}] * 2})
    assert [c.text for c in start_at_zero.rows[0]][3:] == ["2", "0.000 ± 0.000", "0.300 ± 0.000", "n/a (no gap at step 0)", "1"]
    assert "](param_sweep.png)" in readme and "train setting batch_size" in readme
