"""The job ids of every shipped suite are pinned: a refactor that changed a job's record (so its
id, so whether a finished run is found again) fails here. Each entry is (number of jobs, the first
16 hex digits of the SHA-256 of the sorted ids, tuning jobs included)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.registry import Registry
from harness.suite import expand_grid, load_suite

SUITES = Path(__file__).resolve().parents[1] / "suites"
PINNED = {
    "coco-finetune": (27, "0b6a23cf298e8221"),
    "digits": (15, "5ca13de0db348d3e"),
    "gap-tuned": (51, "c1cb9d0b402c94d8"),
    "gap": (369, "e0d6855ca76580e3"),  # 800 steps (conv), 600 (ViT) since round 3; 36 conv replicates
    "paper-dims": (45, "f5cbf155bac9c444"),
    "same-modality": (80, "bfc5f5c6b8dff59a"),  # the 16 unconfounded arms since round 3
    "gap-batch": (45, "555a290ba114245a"),
    "paper-3d": (25, "dea0edfa914c9476"),
    "smoke": (3, "b71d5e7b7ffa9c3e"),
    "suppression": (32, "4c14486121629aa4"),
    "zoo-smoke": (20, "b4b1904287e630da"),
    "zoo": (60, "a92b309be0e65b80"),
}


def shipped_grid(path: Path):
    """The grid of the shipped suite ``path`` (plugins looked up, not built); the zoo suites skip the
    test when harness-objectives is not installed."""
    if path.stem.startswith("zoo"):
        pytest.importorskip("harness_objectives", reason="the zoo suites need harness-objectives (CI installs it)")
    return expand_grid(load_suite(path), source=str(path), registry=Registry(), check_build=False)


def suite_ids(path: Path) -> tuple[int, str]:
    grid = shipped_grid(path)
    ids = sorted(j.id for j in grid.jobs) + sorted(j.id for j in (grid.tuning_jobs() if grid.trials else []))
    return len(ids), hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16]


def test_every_shipped_suite_is_pinned():
    assert sorted(PINNED) == sorted(p.stem for p in SUITES.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_suite_job_ids_are_unchanged(name):
    assert suite_ids(SUITES / f"{name}.yaml") == PINNED[name]
