"""Which jobs of a run directory the leaderboard shows: those of the suite's current configuration.

Editing a suite (``train.lr``, ``train.steps``, an objective's params) and running it again into the
same ``--out`` leaves the old configuration's job directories beside the new ones: job ids hash the
configuration, so nothing is overwritten. Averaging both as seeds of one objective would be wrong
(seed 0 twice, ``n`` doubled, silently). So:

- ``harness run`` records the ids of the suite's jobs, as the version it runs defines them, in
  ``<out>/<suite>/.suite.json`` (``harness.store.Store.record_current``). The leaderboard reads only
  the jobs listed there; how many it left out is ``RunStore.left_out``, said on one line by
  ``build_leaderboard`` and among the page's provenance lines.
- A suite directory without ``.suite.json`` (written before it existed, or by ``run_suite`` called
  directly) is read whole, but two configurations under one (objective, encoder, dataset) label are
  refused with one line saying what differs: run the suite once more (finished jobs are skipped;
  it records ``.suite.json``), or move the old job directories away.
- A damaged ``.suite.json`` is refused with one line naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, printable
from harness.safefiles import Refused
from harness.store import MANIFEST, manifest_displays, read_manifest

SPEC_KEYS = ("objective", "encoder", "dataset")


class Current:
    """Decides, result by result, whether a job is one of its suite's current jobs."""

    def __init__(self, root: Path):
        self.root = root
        self.manifests: dict[Path, set[str] | None] = {}
        self.left_out = 0
        self.unrecorded: set[Path] = set()  # suite directories with no .suite.json

    def keep(self, result: Path) -> bool:
        job_dir = result.parent
        if job_dir == self.root:  # pointed at one job's directory: that job, whatever its suite says
            return True
        suite_dir = job_dir.parent
        if suite_dir not in self.manifests:
            try:
                self.manifests[suite_dir] = read_manifest(suite_dir)
            except Refused as exc:
                raise HarnessError(f"{suite_dir / MANIFEST}: corrupt record of the suite's current jobs ({exc}); "
                                   f"run the suite again (`harness run SUITE`) to rewrite it") from None
        ids = self.manifests[suite_dir]
        if ids is None:
            self.unrecorded.add(suite_dir)
            return True
        if job_dir.name in ids:
            return True
        self.left_out += 1
        return False


    def completeness(self, root: Path, found: set[str]) -> tuple[int | None, list[str]]:
        """(jobs the suite's last run defined, the descriptions of those with no result yet) for a
        suite directory with a ``.suite.json``; (None, []) otherwise."""
        ids = self.manifests.get(root)
        if ids is None:
            return None, []
        missing = ids - found
        shown = manifest_displays(root) if missing else {}  # read again only when a page must name them
        return len(ids), sorted(printable(shown.get(i, i)) for i in missing)


def configuration(job: dict[str, Any]) -> dict[str, Any]:
    """What, besides the seed, makes a job's numbers (``harness.job.Job.identity`` without the seed;
    for a replicate, also without its world draw, the dataset's ``seed``: replicates of one
    configuration differ in exactly those two)."""
    def spec(s: Any, drop: tuple[str, ...] = ()) -> Any:
        if not isinstance(s, dict):
            return s
        params = s.get("params") if isinstance(s.get("params"), dict) else {}
        return {"name": s.get("name"), "params": {k: v for k, v in params.items() if k not in drop}}

    evaluations = job.get("evaluations") if isinstance(job.get("evaluations"), list) else []
    world = ("seed",) if job.get("replicate") is not None else ()
    return {**{k: spec(job.get(k), world if k == "dataset" else ()) for k in SPEC_KEYS}, "train": job.get("train"),
            "evaluations": [spec(e) for e in evaluations], "split": job.get("split") or "test"}


def _leaves(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(value, sort_keys=True, default=str)}


def difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The first field (dotted) in which two configurations differ."""
    la, lb = _leaves(a), _leaves(b)
    for key in sorted(set(la) | set(lb)):
        if la.get(key) != lb.get(key):
            return key
    return "their configuration"


def check_not_pooled(runs: list, unrecorded: set[Path]) -> None:
    """Refuse (one line) final jobs of one (objective, encoder, dataset) label that come from two
    configurations, among suite directories without ``.suite.json``."""
    seen: dict[tuple[str, str, str], tuple[str, dict[str, Any], Any]] = {}
    for run in runs:
        if run.stage == "tune" or run.dir.parent not in unrecorded:
            continue
        config = configuration(run.job)
        key = json.dumps(config, sort_keys=True, default=str)
        cell = (run.objective, run.encoder, run.dataset)
        first = seen.setdefault(cell, (key, config, run.dir))
        if first[0] != key:
            raise HarnessError(
                f"{run.dir.parent}: objective {printable(run.objective)!r} on {printable(run.encoder)} | "
                f"{printable(run.dataset)} has jobs of two configurations (they differ in "
                f"{printable(difference(first[1], config))}: {first[2].name} and {run.dir.name}) and no {MANIFEST} "
                f"says which is current; run the suite again (`harness run SUITE`: finished jobs are skipped, it "
                f"records {MANIFEST}), or move the old job directories away"
            )
