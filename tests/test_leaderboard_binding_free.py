"""The binding-free reference row reaches the leaderboard like the other reference rows:
references.csv, the linear-probe table of the README page and of index.html, marked and never ranked."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from harness.leaderboard import build_leaderboard

PROBE = {"key": "*.accuracy", "higher_is_better": True, "description": "linear-probe accuracy (mean over sets)"}


def job(root: Path, job_id: str, objective: str, seed: int, probe: dict[str, float]) -> None:
    spec = lambda name: {"name": name, "params": {}, "label": name}  # noqa: E731
    record = {"id": job_id, "suite": "s", "objective": spec(objective), "encoder": spec("tiny"), "dataset": spec("shapes"),
              "train": {"steps": 5, "lr": 5e-4}, "seed": seed, "evaluations": [spec("linear_probe")]}
    refs = {"chance": {"linear_probe.shape.accuracy": 1 / 6, "linear_probe.composition.accuracy": 0.5},
            "raw pixels": {"linear_probe.shape.accuracy": 0.3, "linear_probe.composition.accuracy": 0.61},
            "binding-free": {"linear_probe.composition.accuracy": 0.68}}
    result = {"status": "ok", "job": record, "metrics": {"linear_probe": {k: {"accuracy": v} for k, v in probe.items()}},
              "metric_info": {"linear_probe": {"accuracy": {"display": "accuracy", "group": "downstream",
                                                            "higher_is_better": True}}},
              "skipped": {}, "env": {"wall_time_s": 1.0}, "main_scores": {"linear_probe": PROBE},
              "reference_rows": refs}
    (root / job_id).mkdir(parents=True)
    (root / job_id / "result.json").write_text(json.dumps(result))


def test_the_binding_free_row_is_shown_like_the_raw_pixel_row(tmp_path):
    root = tmp_path / "runs" / "s"
    n = 0
    for k, objective in enumerate(("clip", "siglip")):
        for seed in range(2):
            job(root, f"j{n}", objective, seed, {"shape": 0.8 - 0.1 * k, "composition": 0.7 - 0.05 * k + 0.01 * seed})
            n += 1
    board = build_leaderboard(root, out=tmp_path / "board")
    refs = pd.read_csv(board / "references.csv")
    free = refs[refs["reference"] == "binding-free"].set_index("metric")
    assert free.loc["linear_probe.composition.accuracy", "mean"] == 0.68 and free.loc["linear_probe.composition.accuracy", "n"] == 4
    assert "binding-free" not in set(pd.read_csv(board / "summary.csv")["objective"])
    readme = (board / "README.md").read_text()
    probe = readme.split("### Downstream: linear_probe\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    labels = [line.split("|")[1].strip() for line in probe[2:]]
    assert labels[-3:] == ["_chance (reference)_", "_raw pixels (reference)_", "_binding-free (reference)_"]
    assert "0.680" in probe[-1]
    html = (board / "index.html").read_text()
    assert "binding-free" in html.split('<tbody class="references">', 1)[1]
