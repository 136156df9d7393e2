"""The committed leaderboards under ``leaderboard/`` come from real runs of the shipped suites as they
stand: each page's rows are exactly the jobs its suite expands to (objective, encoder, data set,
seed), its job counts match, and every page was drawn from runs of one commit."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from test_shipped_suite_ids import shipped_grid

ROOT = Path(__file__).resolve().parents[1]
BOARDS = sorted((ROOT / "leaderboard").glob("*/board.json"))


def test_there_are_committed_pages():
    assert len(BOARDS) >= 9


@pytest.mark.parametrize("board_file", BOARDS, ids=[b.parent.name for b in BOARDS])
def test_a_committed_page_has_the_jobs_of_its_shipped_suite(board_file):
    board = json.loads(board_file.read_text())
    suite = ROOT / "suites" / f"{board['suite']}.yaml"
    assert suite.is_file(), f"{board_file} names suite {board['suite']!r}, not shipped"
    grid = shipped_grid(suite)
    results = pd.read_csv(board_file.parent / "results.csv")
    rows = sorted(zip(results.objective, results.encoder, results.dataset, results.seed))
    jobs = sorted((j.objective.display, j.encoder.display, j.dataset.display, j.seed) for j in grid.jobs)
    assert rows == jobs
    assert board["jobs"] == len(grid.jobs) and (results.status == "ok").all()
    assert board["tuning_jobs"] == (len(grid.tuning_jobs()) if grid.trials else 0)


def test_every_committed_page_was_drawn_from_runs_of_one_commit():
    commits = {json.loads(b.read_text())["provenance"]["harness"] for b in BOARDS}
    assert len(commits) == 1 and "git commit" in next(iter(commits)) and "dirty" not in next(iter(commits)), commits
