"""A page built before its suite finished says so at the top and the index marks it; a complete
suite's page does not."""

from __future__ import annotations

import json

import yaml

import fakes
from harness.leaderboard import build_leaderboard
from harness.leaderboard.load import load_runs
from harness.suite import expand_grid, parse_suite
from harness.executors import run_grid
from harness.store import MANIFEST


def test_a_page_of_a_partial_run_says_how_many_jobs_and_which_are_missing(toy, tmp_path):
    grid = expand_grid(parse_suite(fakes.toy_suite(steps=3, seeds=(0, 1, 2))))
    run_grid(grid, out=tmp_path / "runs")
    suite_dir = tmp_path / "runs" / "toy"
    complete = load_runs(suite_dir)
    assert complete.expected == 3 and complete.missing == []
    out = build_leaderboard(suite_dir, out=tmp_path / "leaderboard" / "toy")
    assert "INCOMPLETE" not in (out / "README.md").read_text()
    # a suite with five more seeds, of which none has run yet: its record lists 8 jobs
    bigger = expand_grid(parse_suite(fakes.toy_suite(steps=3, seeds=tuple(range(8)))))
    manifest = json.loads((suite_dir / MANIFEST).read_text())
    assert manifest["displays"][grid.jobs[0].id] == grid.jobs[0].display
    from harness.store import Store

    Store(tmp_path / "runs", "toy").record_current("toy", [j.id for j in bigger.jobs], {j.id: j.display for j in bigger.jobs})
    partial = load_runs(suite_dir)
    assert partial.expected == 8 and len(partial.missing) == 5 and "seed 7" in partial.missing[-1]
    out = build_leaderboard(suite_dir, out=tmp_path / "leaderboard" / "toy")
    readme = (out / "README.md").read_text()
    assert "INCOMPLETE: 3 of 8 jobs of the suite's last run have results" in readme
    assert "toy_dot \\| toy_linear \\| toy \\| seed 3" in readme  # Markdown escapes the pipes
    assert "INCOMPLETE: 3 of 8 jobs" in (out / "index.html").read_text()
    assert json.loads((out / "board.json").read_text())["incomplete"] == "3 of 8 jobs"
    index = (tmp_path / "leaderboard" / "index.html").read_text()
    assert "(incomplete: 3 of 8 jobs)" in index


def test_compare_says_whether_a_rebuilt_page_reproduces_the_committed_numbers(toy, tmp_path, capsys):
    from harness.cli import main
    from harness.leaderboard.reproduce import compare

    import pandas as pd

    run_grid(expand_grid(parse_suite(fakes.toy_suite(steps=3, seeds=(0, 1)))), out=tmp_path / "runs")
    committed = build_leaderboard(tmp_path / "runs" / "toy", out=tmp_path / "committed")
    rebuilt = build_leaderboard(tmp_path / "runs" / "toy", out=tmp_path / "rebuilt")
    assert compare(rebuilt, committed).startswith("matches the committed numbers")
    subset = pd.read_csv(committed / "results.csv").iloc[:1]  # a page of one of the two jobs (run --replicates)
    (tmp_path / "subset").mkdir()
    subset.to_csv(tmp_path / "subset" / "results.csv", index=False)
    assert compare(tmp_path / "subset", committed).endswith(
        "for every job run here: 1 of its 2 jobs, every metric equal (timings excepted)")
    frame = pd.read_csv(committed / "results.csv")
    frame.loc[0, "toy_meancos.mean_cos"] += 0.25
    frame.loc[1, "train.train_time_s"] += 100.0  # a timing: never compared
    frame.to_csv(committed / "results.csv", index=False)
    line = compare(rebuilt, committed)
    assert line.startswith("differs from the committed numbers") and "1 of 2 committed jobs reproduced exactly" in line
    assert "1 differ (largest difference 0.25 in toy_meancos.mean_cos)" in line
    assert main(["leaderboard", str(tmp_path / "runs" / "toy"), "--out", str(tmp_path / "again"),
                 "--compare", str(tmp_path / "nowhere")]) == 2
    assert "--compare:" in capsys.readouterr().err
