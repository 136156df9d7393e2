"""The leaderboard's comparisons, each test and correction from a maintained library (none hand-written).

Every comparison is **paired by replicate**: replicate r is one world draw (a dataset seed) plus one
training seed, the same worlds for every objective, so two objectives' scores on replicate r share
that world and their difference cancels it. Old runs without replicates: the job's seed stands for
its replicate. The input of everything here is a table's *score matrix*: rows = replicates,
columns = objectives, cells = the main score (the mean over the ok jobs of that cell, NaN when none).

- ``paired``: one pair over the replicates both ran: n, the two means over those replicates, the
  mean paired difference a - b and its 95% t-interval and the two-sided paired t-test
  (``scipy.stats.ttest_rel``, df = n - 1), the Wilcoxon signed-rank p (``scipy.stats.wilcoxon``)
  beside it. **Degenerate comparisons have no p**: fewer than two paired replicates, a non-finite
  score, or paired differences that are all equal (zero variance; identical scores are the special
  case of all zero) give an empty p and CI and a ``note`` saying why, never p = 0 (a constant gap
  of 0.001 on three worlds is not evidence of anything the t-test can measure).
- ``pairwise``: every unordered pair of a table's objectives (pairwise.csv), Holm's step-down
  correction (``statsmodels.stats.multitest.multipletests(method="holm")``) over the pairs of that
  table that have a p.
- ``contrasts``: the planned contrasts of the headline: each trained objective against the table's
  reference objective, Holm over those k - 1 contrasts only.
- ``min_detectable_difference`` / ``replicates_needed``: the power of the test actually run, the
  paired t with n - 1 degrees of freedom (``statsmodels.stats.power.TTestPower``, one-sample on the
  paired differences, two-sided, power ``POWER``): the smallest true mean difference it resolves
  for a given SD of paired differences and n, and the number of replicates that would resolve an
  observed difference (effect size |diff| / SD of the paired differences) at a given alpha.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

ALPHA = 0.05
POWER = 0.8
TEST = "paired t"
PAIRWISE_COLUMNS = ["dataset", "encoder", "objective_a", "objective_b", "n", "mean_a", "mean_b", "diff", "ci_low", "ci_high",
                    "test", "p_value", "p_holm", "significant"]
PAIRWISE_EXTRA = ["p_wilcoxon", "note", "sd_diff", "n_needed"]
CONTRAST_COLUMNS = ["dataset", "encoder", "objective", "reference", "n", "mean", "mean_reference", "diff", "ci_low", "ci_high",
                    "test", "p_value", "p_holm", "significant", "p_wilcoxon", "note", "sd_diff", "min_detectable_diff",
                    "min_detectable_diff_holm", "n_needed"]
MAX_REPLICATES = 10**6  # replicates_needed beyond this is reported as none (no feasible design)


@contextmanager
def quiet():
    """numpy/scipy/statsmodels warnings about degenerate input stay quiet: the tables report instead."""
    import statsmodels.tools.sm_exceptions  # noqa: F401 -- its first import puts an "always" filter before ours

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


@dataclass
class Paired:
    """One paired comparison a - b over the replicates both ran."""

    n: int
    mean_a: float
    mean_b: float
    diff: float  # mean of the paired differences a - b
    sd_diff: float  # their sample SD (ddof = 1); NaN when n < 2
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    p_wilcoxon: float = math.nan
    note: str = ""  # why there is no p (empty when there is one)

    @property
    def tested(self) -> bool:
        return not math.isnan(self.p_value)


def paired(a, b) -> Paired:
    """The paired comparison of two aligned score vectors (one entry per replicate; NaN = did not run)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[both], b[both]
    n = len(a)
    with np.errstate(all="ignore"):
        d = a - b
        out = Paired(n, float(a.mean()) if n else math.nan, float(b.mean()) if n else math.nan,
                     float(d.mean()) if n else math.nan, float(d.std(ddof=1)) if n > 1 else math.nan)
    if n == 0:
        out.note = "no replicate where both have a main score"
    elif n < 2:
        out.note = "only 1 replicate where both have a main score (a paired test needs 2)"
    elif not np.isfinite(d).all():
        out.note = "a non-finite main score"
    elif np.allclose(d, d[0], rtol=1e-9, atol=1e-12):
        out.note = ("identical scores on every replicate" if np.allclose(d, 0, rtol=0, atol=1e-12)
                    else "the same difference on every replicate (zero variance)") + ": no t-test"
        out.sd_diff = 0.0
    if out.note:
        out.p_wilcoxon = _wilcoxon(d) if n >= 2 and np.isfinite(d).all() and not np.allclose(d, 0, rtol=0, atol=1e-12) else math.nan
        return out
    from scipy.stats import ttest_rel

    with quiet():
        res = ttest_rel(a, b)
        ci = res.confidence_interval(1 - ALPHA)
    out.p_value, out.ci_low, out.ci_high = float(res.pvalue), float(ci.low), float(ci.high)
    out.p_wilcoxon = _wilcoxon(d)
    return out


def _wilcoxon(d: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    with quiet():
        try:
            return float(wilcoxon(d).pvalue)
        except ValueError:  # e.g. every difference zero
            return math.nan


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values of one family (statsmodels), in the order given."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(np.asarray(pvalues, dtype=float), alpha=ALPHA, method="holm")[1]]


def min_detectable_difference(sd_diff: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean paired difference a two-sided paired t-test on n replicates (df = n - 1)
    resolves with the given power: the effect size d_z at which ``paired_power`` reaches ``power``,
    times the SD of the paired differences. statsmodels' ``TTestPower().solve_power`` gives d_z; its
    root finder is misled by the NaN that scipy's noncentral t returns in far tails (with scipy 1.17
    it returns e.g. d_z = 10 for n = 2 at alpha = 0.05/3, where the power is 0.29), so its answer is
    kept only when the power there checks out, else d_z is found by ``scipy.optimize.brentq`` on the
    same power function."""
    from scipy.optimize import brentq
    from statsmodels.stats.power import TTestPower

    with quiet():
        dz = float(np.asarray(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)).item())
    if not (math.isfinite(dz) and abs(paired_power(dz, n, alpha) - power) < 1e-6):
        hi = 1.0
        while paired_power(hi, n, alpha) < power and hi < 1e9:
            hi *= 2
        dz = brentq(lambda x: paired_power(x, n, alpha) - power, 1e-9, hi, xtol=1e-12)
    return dz * sd_diff


def paired_power(dz: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t on n replicates for effect size d_z (``TTestPower().power``).

    scipy's noncentral t returns NaN in far tails (seen with scipy 1.17: the lower tail of a large
    effect, and the upper tail once the noncentrality d_z sqrt(n) exceeds the critical value by more
    than ~34, where the power is 1 to machine precision). Then the upper tail alone is used (the
    lower one is below 1e-300 there), and when that is NaN too and the noncentrality is past the
    critical value, 1.
    """
    from scipy.stats import t
    from statsmodels.stats.power import TTestPower

    with quiet():
        p = float(np.asarray(TTestPower().power(dz, n, alpha)).item())
        if math.isnan(p):
            p = float(np.asarray(TTestPower().power(dz, n, alpha / 2, alternative="larger")).item())
        if math.isnan(p) and dz * math.sqrt(n) > t.isf(alpha / 2, n - 1):
            p = 1.0
    return p


def replicates_needed(diff: float, sd_diff: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The smallest n >= 2 at which a two-sided paired t-test has the given power for a true difference
    ``diff`` with paired-difference SD ``sd_diff`` (``TTestPower``, via ``paired_power``); None when
    undefined (no difference, zero or unknown SD) or beyond ``MAX_REPLICATES``."""
    if not (math.isfinite(diff) and math.isfinite(sd_diff)) or diff == 0 or sd_diff <= 0:
        return None
    from statsmodels.stats.power import TTestPower

    dz = abs(diff) / sd_diff
    with quiet():
        est = float(np.asarray(TTestPower().solve_power(effect_size=dz, nobs=None, alpha=alpha, power=power)).item())
    if math.isfinite(est) and est > MAX_REPLICATES:
        return None
    n = max(2, math.ceil(est)) if math.isfinite(est) else 2  # NaN: the root finder gave up (a huge effect)
    while n > 2 and paired_power(dz, n - 1, alpha) >= power:
        n -= 1
    while not paired_power(dz, n, alpha) >= power:
        n += 1
        if n > MAX_REPLICATES:
            return None
    return n


def _row(p: Paired) -> dict:
    return {"n": p.n, "diff": p.diff, "ci_low": p.ci_low, "ci_high": p.ci_high, "test": TEST if p.tested else "",
            "p_value": p.p_value, "p_holm": math.nan, "significant": False, "p_wilcoxon": p.p_wilcoxon, "note": p.note,
            "sd_diff": p.sd_diff}


def _correct(rows: list[dict]) -> int:
    """Holm over the rows that have a p (in place); ``n_needed`` for the unresolved ones, at Holm's first
    step alpha / m (the strictest, so that n resolves the contrast wherever it falls in the order)."""
    tested = [i for i, r in enumerate(rows) if not math.isnan(r["p_value"])]
    for i, p in zip(tested, holm([rows[i]["p_value"] for i in tested])):
        rows[i]["p_holm"] = p
    m = max(1, len(tested))
    for r in rows:
        r["significant"] = bool(not math.isnan(r["p_holm"]) and r["p_holm"] < ALPHA)
        need = None if r["significant"] else replicates_needed(r["diff"], r["sd_diff"], ALPHA / m)
        r["n_needed"] = math.nan if need is None else need
    return len(tested)


def pairwise(dataset: str, encoder: str, order: list[str], matrix: pd.DataFrame) -> pd.DataFrame:
    """pairwise.csv rows of one (dataset, encoder) table: one Holm family.

    Pairs: every unordered pair of ``order`` (the table's objectives in rank order, best first;
    objectives without a score last), as (order[i], order[j]) for i < j, in that order. Each is
    ``paired`` over the replicates both ran (``matrix``: replicates x objectives). The Holm family is
    exactly the pairs that have a p; ``significant`` is ``p_holm < ALPHA``. ``n_needed``: for an
    unresolved pair with an observed difference and a positive SD of differences, the replicates a
    paired t-test needs to resolve that difference with power ``POWER`` at alpha / m (m = the pairs
    tested).
    """
    rows = []
    for a, b in combinations(order, 2):
        p = paired(_column(matrix, a), _column(matrix, b))
        rows.append({"dataset": dataset, "encoder": encoder, "objective_a": a, "objective_b": b,
                     "mean_a": p.mean_a, "mean_b": p.mean_b, **_row(p)})
    _correct(rows)
    return pd.DataFrame(rows, columns=PAIRWISE_COLUMNS + PAIRWISE_EXTRA)


def contrasts(dataset: str, encoder: str, reference: str | None, objectives: list[str], matrix: pd.DataFrame) -> pd.DataFrame:
    """The planned contrasts of one table: each of ``objectives`` (the trained objectives other than the
    reference) minus ``reference``, paired by replicate, Holm over these k - 1 contrasts. Besides the
    pairwise columns: the smallest difference each contrast's n and SD of differences resolve at ALPHA
    and at Holm's first step ALPHA / m (m = the contrasts tested)."""
    rows = []
    if reference is not None:
        for o in objectives:
            p = paired(_column(matrix, o), _column(matrix, reference))
            rows.append({"dataset": dataset, "encoder": encoder, "objective": o, "reference": reference,
                         "mean": p.mean_a, "mean_reference": p.mean_b, **_row(p)})
    m = _correct(rows)
    for r in rows:
        ok = r["n"] >= 2 and math.isfinite(r["sd_diff"]) and r["sd_diff"] > 0
        r["min_detectable_diff"] = min_detectable_difference(r["sd_diff"], r["n"]) if ok else math.nan
        r["min_detectable_diff_holm"] = (min_detectable_difference(r["sd_diff"], r["n"], ALPHA / m) if ok and m > 1
                                         else r["min_detectable_diff"])
    return pd.DataFrame(rows, columns=CONTRAST_COLUMNS)


def _column(matrix: pd.DataFrame, objective: str) -> np.ndarray:
    if objective in matrix.columns:
        return matrix[objective].to_numpy(float)
    return np.full(len(matrix), np.nan)


@dataclass
class Detectable:
    """A table's detectable difference for its contrasts (the paired t actually run)."""

    n: int  # replicates: the smallest paired n among the contrasts with a positive SD of differences
    sd_diff: float  # pooled SD of paired differences: sqrt(sum((n_i - 1) s_i^2) / sum(n_i - 1)) over those contrasts
    mdd: float  # at ALPHA
    mdd_holm: float | None  # at ALPHA / m, Holm's first step over the m contrasts tested (None when m <= 1)
    contrasts: int  # m


def detectable(contrast_rows: pd.DataFrame) -> Detectable | None:
    usable = contrast_rows[(contrast_rows["n"] >= 2) & (contrast_rows["sd_diff"] > 0)
                           & np.isfinite(contrast_rows["sd_diff"].astype(float))] if len(contrast_rows) else contrast_rows
    if usable.empty:
        return None
    dof = (usable["n"] - 1).astype(float)
    sd = math.sqrt(float((dof * usable["sd_diff"].astype(float) ** 2).sum() / dof.sum()))
    n = int(usable["n"].min())
    m = int(contrast_rows["p_value"].notna().sum())
    mdd = min_detectable_difference(sd, n)
    return Detectable(n=n, sd_diff=sd, mdd=mdd, mdd_holm=min_detectable_difference(sd, n, ALPHA / m) if m > 1 else None,
                      contrasts=m)
