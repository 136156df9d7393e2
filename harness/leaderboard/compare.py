"""Everything a table's headline says, from its score matrix (rows = replicates, columns = objectives).

Which objectives enter what:

- every objective with a main score (trained or not) gets a mean, a bootstrap CI, a rank interval
  and a tier, and is in pairwise.csv (every pair, one Holm family per table);
- **trained objectives** only (not an objective whose ok jobs all ran 0 training steps, e.g. the
  ``untrained`` row; reference rows such as chance or oracles are never objectives) enter the
  planned contrasts against the reference objective, the mixed model, Friedman's test and the
  critical-difference diagram, and Kendall's tau across encoders.

The **reference objective** of a table: the suite's ``reference`` as the jobs record it
(``job.reference``, the most common value among the table's ok jobs) when it is a trained objective
of the table; else ``clip`` when it is one; else the first trained objective by label. Where the
suite named one that cannot serve, ``reference_note`` says so.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.leaderboard.load import Run
from harness.leaderboard.models import Friedman, Kendall, Mixed, friedman, kendall, mixed_model
from harness.leaderboard.resample import bootstrap, tiers
from harness.leaderboard.stats import Detectable, contrasts, detectable, pairwise

DEFAULT_REFERENCE = "clip"


def steps_of(run: Run) -> float | None:
    """The job's training steps: ``job.train.steps``, else its ``train.steps`` metric, else None."""
    train = run.job.get("train")
    steps = train.get("steps") if isinstance(train, dict) else None
    if isinstance(steps, (int, float)) and not isinstance(steps, bool):
        return float(steps)
    value = run.values.get("train.steps")
    return None if value is None or math.isnan(value) else float(value)


def is_untrained(runs: list[Run]) -> bool:
    """An objective whose ok jobs all ran 0 training steps (the ``untrained`` baseline row)."""
    return bool(runs) and all(steps_of(r) == 0 for r in runs)


def choose_reference(runs: list[Run], trained: list[str]) -> tuple[str | None, str, str]:
    """(reference objective, how it was chosen: "suite" | "default" | "first by label", note); see the
    module docstring."""
    named = Counter(r.job["reference"] for r in runs if isinstance(r.job.get("reference"), str) and r.job["reference"])
    note = ""
    if named:
        choice = named.most_common(1)[0][0]
        if choice in trained:
            return choice, "suite", ""
        note = f"the suite's reference objective {choice} is not a trained objective with a main score in this table"
    if DEFAULT_REFERENCE in trained:
        return DEFAULT_REFERENCE, "default", note
    if trained:
        return sorted(trained)[0], "first by label", note
    return None, "", note or "no trained objective has a main score"


def score_matrix(jobs: pd.DataFrame, scores: pd.Series) -> pd.DataFrame:
    """rows = replicates (the ``replicate`` column, else the seed), columns = objectives, cells = the mean
    main score of that objective's ok jobs on that replicate (NaN when none)."""
    block = jobs["replicate"] if "replicate" in jobs else pd.Series(np.nan, index=jobs.index)
    block = pd.to_numeric(block, errors="coerce").fillna(jobs["seed"]).astype("int64")
    frame = pd.DataFrame({"replicate": block, "objective": jobs["objective"], "score": scores.loc[jobs.index].astype(float)})
    frame = frame[frame["score"].notna()]
    if frame.empty:
        return pd.DataFrame(dtype=float)
    with np.errstate(all="ignore"):
        matrix = frame.pivot_table(index="replicate", columns="objective", values="score", aggfunc="mean", dropna=False)
    matrix.columns.name = None
    return matrix.sort_index()


@dataclass
class Headline:
    """A table's comparisons (all empty when the table has no main score)."""

    matrix: pd.DataFrame  # replicates x scored objectives
    trained: list[str]  # trained objectives with a score, rank order
    untrained: list[str]  # objectives flagged untrained (steps 0)
    reference: str | None
    reference_source: str
    reference_note: str
    pairwise: pd.DataFrame
    contrasts: pd.DataFrame
    intervals: pd.DataFrame  # objective -> mean, ci_low, ci_high, rank_low, rank_high
    tier_of: dict[str, int]
    detectable: Detectable | None
    mixed: Mixed
    friedman: Friedman | None
    kendall: list[Kendall] = field(default_factory=list)  # filled across tables

    @property
    def replicates(self) -> int:
        return len(self.matrix)

    def tier(self, t: int = 1) -> list[str]:
        return [o for o, k in self.tier_of.items() if k == t]


def headline(dataset: str, encoder: str, order: list[str], matrix: pd.DataFrame, runs_by_objective: dict[str, list[Run]],
             higher_is_better: bool) -> Headline:
    """``order``: the table's objectives in rank order (those without a score last)."""
    scored = [o for o in order if o in matrix.columns and matrix[o].notna().any()]
    matrix = matrix[scored] if scored else pd.DataFrame(index=matrix.index, dtype=float)
    untrained = [o for o in order if is_untrained(runs_by_objective.get(o, []))]
    trained = [o for o in scored if o not in untrained]
    all_runs = [r for o in order for r in runs_by_objective.get(o, [])]
    reference, source, note = choose_reference(all_runs, trained)
    pw = pairwise(dataset, encoder, order, matrix)
    others = [o for o in trained if o != reference]
    con = contrasts(dataset, encoder, reference, others, matrix)
    sign = 1.0 if higher_is_better else -1.0
    return Headline(
        matrix=matrix, trained=trained, untrained=untrained, reference=reference, reference_source=source,
        reference_note=note, pairwise=pw, contrasts=con, intervals=bootstrap(matrix, higher_is_better),
        tier_of=tiers(scored, pw, higher_is_better), detectable=detectable(con),
        mixed=mixed_model(matrix[trained], reference), friedman=friedman(sign * matrix[trained]),
    )


def across_encoders(heads: dict[tuple[str, str], Headline], patterns: dict[tuple[str, str], str | None]) -> list[Kendall]:
    """Kendall's tau for every pair of tables of one dataset with different encoders and the same main
    score, on the trained objectives' means; each Kendall is also attached to both tables."""
    out = []
    keys = sorted(k for k in heads if patterns.get(k))
    for i, (dataset, enc_a) in enumerate(keys):
        for dataset_b, enc_b in keys[i + 1:]:
            if dataset_b != dataset:
                continue
            a, b = heads[(dataset, enc_a)], heads[(dataset, enc_b)]
            if patterns[(dataset, enc_a)] != patterns[(dataset, enc_b)]:
                k = Kendall(dataset, enc_a, enc_b, [], note="the two tables have different main scores")
            else:
                k = kendall(dataset, enc_a, a.intervals["mean"].reindex(a.trained), enc_b, b.intervals["mean"].reindex(b.trained))
            out.append(k)
            a.kendall.append(k)
            b.kendall.append(k)
    return out


def across_tables(heads: dict[tuple[str, str], Headline], directions: dict[tuple[str, str], bool]) -> Friedman | None:
    """Friedman over every (dataset, encoder, replicate) cell of the tables with a main score, for the
    trained objectives every such table has (each cell oriented by its table's direction). None with
    fewer than 2 tables."""
    keys = [k for k in heads if k in directions]
    if len(keys) < 2:
        return None
    shared = [o for o in heads[keys[0]].trained if all(o in heads[k].trained for k in keys[1:])]
    if len(shared) < 2:
        return None
    blocks = []
    for k in keys:
        m = heads[k].matrix[shared] * (1.0 if directions[k] else -1.0)
        m.index = [f"{k[0]} · {k[1]} · {r}" for r in m.index]
        blocks.append(m)
    return friedman(pd.concat(blocks), kind="dataset · encoder · replicate cells")
