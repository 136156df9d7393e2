"""The leaderboard's statistics, each from a maintained library (no hand-written test or correction).

- ``welch``: two-sided Welch t-test, ``scipy.stats.ttest_ind(equal_var=False)``.
- ``pairwise``: every unordered pair of a table's objectives, Welch on the per-job main score, Holm's
  step-down correction over the pairs of that one table (``statsmodels.stats.multitest.multipletests``).
- ``min_detectable_difference``: the smallest true difference a two-sided two-sample t-test detects
  with power 0.8 at a given alpha, for n seeds per side and the pooled seed std
  (``statsmodels.stats.power.TTestIndPower``: effect size d, times the pooled std).
- ``friedman``: mean rank of each objective over a table's tasks, Friedman's test
  (``scipy.stats.friedmanchisquare``), Nemenyi's post-hoc p-values
  (``scikit_posthocs.posthoc_nemenyi_friedman``) and the Nemenyi critical difference
  CD = q_alpha * sqrt(k (k + 1) / (6 N)) with q_alpha the studentized-range quantile over sqrt(2)
  (``scipy.stats.studentized_range``), as in Demsar (2006).

Why scikit-posthocs and not autorank for the critical-difference diagram: autorank picks its test
from Shapiro-Wilk / Bartlett checks on the data (parametric repeated-measures ANOVA + Tukey when they
pass), and those checks mean nothing on the handful of tasks a table has; scikit-posthocs runs exactly
the Friedman + Nemenyi procedure of Demsar (2006) and draws on an Axes we own
(``critical_difference_diagram(..., ax=...)``), without pyplot's global figure state.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

ALPHA = 0.05
POWER = 0.8
PAIRWISE_COLUMNS = ["dataset", "encoder", "objective_a", "objective_b", "mean_a", "mean_b", "p_value", "p_holm", "significant"]


def _finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[~np.isnan(a)]


def welch(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided Welch t-test p-value of two samples (NaN dropped); None when a side has < 2 values.

    The p-value is scipy's. One case scipy leaves undefined is given its limit: two constant, equal
    samples (t = 0/0) give 1. (Two constant, different samples: scipy's t is infinite and p = 0.)
    """
    a, b = _finite(a), _finite(b)
    if len(a) < 2 or len(b) < 2:
        return None
    if np.ptp(a) == 0 and np.ptp(b) == 0 and a[0] == b[0]:
        return 1.0
    from scipy.stats import ttest_ind

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision-loss warning on near-equal samples
        p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p  # NaN only from non-finite input (an infinite metric)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values of one family (statsmodels), in the order given."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(np.asarray(pvalues, dtype=float), alpha=ALPHA, method="holm")[1]]


def pairwise(dataset: str, encoder: str, order: list[str], scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """pairwise.csv rows of one (dataset, encoder) table: one Holm family.

    Pairs: every unordered pair of ``order`` (the table's objectives in rank order, best first; ties
    and objectives without a score after, by label), as (order[i], order[j]) for i < j, in that order.
    ``p_value`` is Welch's on the ok jobs' non-NaN main scores (results.csv's ``main_score`` where
    ``status == "ok"``). A pair where a side has fewer than two such jobs (or an infinite score) has no
    test: p_value and p_holm are NaN, significant is False, and it is not counted in the Holm family,
    which holds exactly the pairs with a p_value. ``significant`` is ``p_holm < 0.05``.
    """
    rows = []
    with np.errstate(all="ignore"):  # an infinite score: its mean is infinite and its test undefined (NaN)
        for a, b in combinations(order, 2):
            rows.append(_pair(dataset, encoder, a, b, scores))
    tested = [i for i, r in enumerate(rows) if not math.isnan(r["p_value"])]
    for i, p in zip(tested, holm([rows[i]["p_value"] for i in tested])):
        rows[i]["p_holm"] = p
    for r in rows:
        r["significant"] = bool(not math.isnan(r["p_holm"]) and r["p_holm"] < ALPHA)
    return pd.DataFrame(rows, columns=PAIRWISE_COLUMNS)


def _pair(dataset: str, encoder: str, a: str, b: str, scores: dict[str, np.ndarray]) -> dict:
    sa, sb = _finite(scores.get(a, [])), _finite(scores.get(b, []))
    p = welch(sa, sb)
    return {
        "dataset": dataset, "encoder": encoder, "objective_a": a, "objective_b": b,
        "mean_a": float(sa.mean()) if len(sa) else math.nan, "mean_b": float(sb.mean()) if len(sb) else math.nan,
        "p_value": math.nan if p is None else p, "p_holm": math.nan,
    }


@dataclass
class Detectable:
    """The smallest difference a table's seeds can detect (two-sided t-test, power POWER)."""

    n: int  # seeds per objective used (the smallest seed count among objectives with >= 2)
    pooled_std: float  # sqrt(sum((n_i - 1) s_i^2) / sum(n_i - 1)) over objectives with n_i >= 2
    mdd: float  # at ALPHA (one comparison)
    mdd_holm: float | None  # at ALPHA / m: the first step of Holm over the table's m pairs (None when m <= 1)
    pairs: int


def min_detectable_difference(std: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Effect size d from statsmodels' power solver for two groups of n, times the std."""
    from statsmodels.stats.power import TTestIndPower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = TTestIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=power, ratio=1.0,
                                        alternative="two-sided")
    return float(np.asarray(d).item()) * std


def detectable(scores: dict[str, np.ndarray], pairs: int) -> Detectable | None:
    samples = [s for s in (_finite(v) for v in scores.values()) if len(s) >= 2]
    if not samples:
        return None
    dof = sum(len(s) - 1 for s in samples)
    with np.errstate(all="ignore"):
        pooled = math.sqrt(sum((len(s) - 1) * s.var(ddof=1) for s in samples) / dof)
    if not math.isfinite(pooled):
        return None
    n = min(len(s) for s in samples)
    mdd = min_detectable_difference(pooled, n)
    mdd_holm = min_detectable_difference(pooled, n, ALPHA / pairs) if pairs > 1 else None
    return Detectable(n=n, pooled_std=pooled, mdd=mdd, mdd_holm=mdd_holm, pairs=pairs)


@dataclass
class Friedman:
    """Ranks of the objectives over a table's tasks (blocks), Friedman's test and Nemenyi's post-hoc."""

    tasks: list[str]  # the task columns used (complete for every objective)
    objectives: list[str]
    mean_ranks: pd.Series  # objective -> mean rank (1 = best), sorted
    statistic: float = math.nan
    p_value: float = math.nan
    cd: float = math.nan  # Nemenyi critical difference at ALPHA
    nemenyi: pd.DataFrame | None = None  # objective x objective p-values
    dropped_tasks: list[str] = field(default_factory=list)  # tasks without a value for some objective
    note: str = ""  # why the test or the diagram is missing, if it is


def friedman(values: pd.DataFrame, higher_is_better: dict[str, bool]) -> Friedman | None:
    """``values``: rows = tasks (columns of the results), columns = objectives, cells = mean over seeds.

    Tasks with a missing value for any objective are dropped (Friedman needs complete blocks). Within
    each task the objectives are ranked 1 = best (average ranks for ties), in the task's direction.
    The test needs at least 3 objectives and 2 tasks; with fewer, the mean ranks are still given.
    """
    if values.empty or values.shape[1] < 2:
        return None
    from scipy.stats import friedmanchisquare, rankdata, studentized_range

    complete = values.dropna(axis=0, how="any")
    dropped = [t for t in values.index if t not in complete.index]
    if complete.empty:
        return None
    oriented = complete.apply(lambda row: row if higher_is_better.get(row.name, True) else -row, axis=1)
    ranks = pd.DataFrame(rankdata(-oriented.to_numpy(float), axis=1, method="average"),
                         index=oriented.index, columns=oriented.columns)
    mean_ranks = ranks.mean(axis=0).sort_values(kind="stable")
    out = Friedman(tasks=list(complete.index), objectives=list(complete.columns), mean_ranks=mean_ranks,
                   dropped_tasks=dropped)
    n, k = complete.shape
    if k < 3 or n < 2:
        out.note = f"Friedman's test needs at least 3 objectives and 2 tasks (here {k} and {n})"
        return out
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = friedmanchisquare(*[oriented[c].to_numpy(float) for c in oriented.columns])
            out.statistic, out.p_value = float(res.statistic), float(res.pvalue)
        except ValueError as exc:  # e.g. every task a complete tie
            out.note = f"Friedman's test undefined here ({exc})"
    if math.isnan(out.p_value) and not out.note:
        out.note = "Friedman's test undefined here (every task ranks the objectives equally)"
    import scikit_posthocs as sp

    nem = sp.posthoc_nemenyi_friedman(oriented.to_numpy(float))
    nem.index = nem.columns = list(oriented.columns)
    out.nemenyi = nem
    out.cd = float(studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n)))
    return out
