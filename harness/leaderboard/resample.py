"""Per-objective uncertainty over replicates (a seeded bootstrap of world blocks) and the tiers.

**Bootstrap** (``bootstrap``): a table's score matrix (rows = replicates, columns = objectives) is
resampled by rows: each of ``RESAMPLES`` resamples draws as many replicates as the table has, with
replacement, from a ``numpy.random.Generator`` seeded with ``SEED`` (the same for every table, so a
page rebuilt from the same runs shows the same numbers). A replicate is drawn with all its
objectives (a world block), so every objective of a resample sees the same worlds. In each resample
each objective's mean is taken over the drawn replicates it has a score on, and the objectives are
ranked within the resample (1 = best, in the main score's direction; ties share the average rank;
an objective without a drawn score is left out of that resample's ranking).

- ``ci_low``, ``ci_high``: the 2.5th and 97.5th percentiles of the objective's resampled mean (the
  percentile bootstrap's 95% interval; none for an objective with a score on fewer than 2
  replicates). With few replicates it is too narrow (a 3-replicate resample has at most 10
  distinct means): read it with the replicate count.
- ``rank_low``, ``rank_high``: the 2.5% and 97.5% quantiles of its rank over the resamples (the
  inverted-CDF quantile, so the ends are ranks that occurred): the range of ranks that 95% of
  resampled worlds give it.

**Tiers** (``tiers``): groups of objectives that no resolved comparison separates from the group's
leader. "Resolved" means ``significant`` in pairwise.csv: the paired t-test over the replicates both
ran, Holm-corrected over every pair of the table, p_holm < 0.05, with the mean paired difference in
favour of the leader (it is, unless missing replicates make the paired and unpaired means
disagree). Objectives with a main score are taken in rank order (best mean first, ties by label):
tier 1 is the best objective plus every
objective whose comparison with it is not resolved (untested comparisons included); tier 2 is the
best objective not yet in a tier plus every remaining objective not resolved from it; and so on.
It is deterministic (it depends only on the means, the labels and pairwise.csv). What it claims:
every objective of a later tier is resolved as worse than the leader of each earlier tier; nothing
is claimed among the members of one tier (two members may even be resolved from each other while
neither is resolved from the leader), and a member of tier t may have a lower mean than one of tier
t + 1 when its own comparison with the leader is too noisy to resolve.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from harness.leaderboard.stats import quiet

RESAMPLES = 10_000
SEED = 20240917
LEVEL = 0.95


def bootstrap(matrix: pd.DataFrame, higher_is_better: bool, resamples: int = RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """objective -> mean, ci_low, ci_high, rank_low, rank_high (index: the matrix's columns).

    ``matrix``: rows = replicates, columns = objectives with a main score, NaN where a replicate has
    none. Fewer than 2 replicates: the means only, the intervals NaN.
    """
    objectives = list(matrix.columns)
    values = matrix.to_numpy(float)
    with quiet():
        out = pd.DataFrame({"mean": np.nanmean(values, axis=0) if len(values) else np.nan}, index=objectives)
    for c in ("ci_low", "ci_high", "rank_low", "rank_high"):
        out[c] = np.nan
    n = len(matrix)
    if n < 2 or not objectives:
        return out
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    drawn = values[idx]  # resamples x n x objectives
    with quiet():
        means = np.nanmean(drawn, axis=1)  # resamples x objectives; NaN where an objective drew no score
    badness = -means if higher_is_better else means.copy()
    badness[np.isnan(badness)] = np.inf  # ranked last: the others' ranks are as if it were absent
    ranks = rankdata(badness, axis=1, method="average")
    ranks[np.isnan(means)] = np.nan
    tail = (1 - LEVEL) / 2
    few = (~np.isnan(values)).sum(axis=0) < 2  # one value: every resample repeats it, no interval
    with quiet():
        out["ci_low"] = np.where(few, np.nan, np.nanquantile(means, tail, axis=0))
        out["ci_high"] = np.where(few, np.nan, np.nanquantile(means, 1 - tail, axis=0))
        out["rank_low"] = np.nanquantile(ranks, tail, axis=0, method="inverted_cdf")
        out["rank_high"] = np.nanquantile(ranks, 1 - tail, axis=0, method="inverted_cdf")
    return out


def tiers(order: list[str], pairwise: pd.DataFrame, higher_is_better: bool = True) -> dict[str, int]:
    """objective -> tier (1 = the best mean's tier), for ``order`` (objectives with a main score, best
    first); see the module docstring for the definition."""
    worse_than = set()  # (better, worse): resolved, and the paired difference points that way
    for r in pairwise.itertuples(index=False):
        if r.significant and r.diff != 0:
            a_better = (r.diff > 0) == higher_is_better
            worse_than.add((r.objective_a, r.objective_b) if a_better else (r.objective_b, r.objective_a))
    out: dict[str, int] = {}
    left = list(order)
    tier = 0
    while left:
        tier += 1
        leader = left[0]
        members = [o for o in left if o == leader or (leader, o) not in worse_than]
        for o in members:
            out[o] = tier
        left = [o for o in left if o not in out]
    return out


def fmt_rank_interval(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "—"
    text = lambda r: f"{r:g}"  # noqa: E731 -- ranks are integers unless tied (x.5)
    return text(low) if low == high else f"{text(low)}–{text(high)}"
