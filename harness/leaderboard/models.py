"""The models over independent blocks: the mixed model of the headline, Friedman's test with Nemenyi's
critical difference, and Kendall's tau between encoder families. Every fit and test is a library's.

- ``mixed_model``: statsmodels ``MixedLM`` (``score ~ C(objective)``, a random intercept per
  replicate, i.e. per world draw; REML), over a table's trained objectives. It splits the score's
  variance not explained by the objective into the between-world variance (``cov_re``) and the
  residual variance (``scale``): how much the world draw moves every objective together, against
  how much objectives move apart within a world. Not fitted (empty, with the reason) with fewer than
  ``MIN_WORLDS`` replicates or fewer than 2 objectives, or when the fit fails (singular) or does not
  converge; a between-world variance estimated at the boundary (0) is reported with a note.
- ``friedman``: blocks are **independent** draws only: the replicates (world draws) of one table, or
  world x encoder cells; never the correlated tasks of one image pool (Demsar's test assumes
  independent data sets). Treatments are the trained objectives (less those with a score in fewer
  than 2 blocks, while 2 objectives remain); blocks missing an objective are dropped (complete
  blocks). Within each block the objectives are ranked 1 = best (average ranks for ties);
  Friedman's test (``scipy.stats.friedmanchisquare``, at least 3 objectives and 2 blocks),
  Nemenyi's post-hoc p-values (``scikit_posthocs.posthoc_nemenyi_friedman``) and the critical
  difference CD = q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the studentized-range quantile over
  sqrt(2) (``scipy.stats.studentized_range``), as in Demsar (2006).
- ``kendall``: Kendall's tau-b (``scipy.stats.kendalltau``, with its p) between two tables' mean
  main scores of the trained objectives they share (at least 3): do two encoder families on the
  same data set order the objectives alike?

Why scikit-posthocs and not autorank for the critical-difference diagram: autorank picks its test
from Shapiro-Wilk / Bartlett checks on the data, and those checks mean nothing on a handful of
blocks; scikit-posthocs runs exactly Demsar's Friedman + Nemenyi and draws on an Axes we own.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.leaderboard.stats import ALPHA, quiet

MIN_WORLDS = 3


@dataclass
class Mixed:
    world_var: float = math.nan  # between-replicate (world) variance of the random intercept
    resid_var: float = math.nan  # residual variance
    n_obs: int = 0
    n_worlds: int = 0
    note: str = ""  # why it is empty, or a caveat on the values


def mixed_model(matrix: pd.DataFrame, reference: str | None = None) -> Mixed:
    """``matrix``: rows = replicates, columns = the trained objectives, NaN where a replicate has none.
    ``reference`` (when among the columns) is the treatment-coding baseline (it changes no variance)."""
    long = matrix.rename_axis(index="replicate", columns="objective").stack().rename("score").reset_index()
    long = long[np.isfinite(long["score"].astype(float))]
    out = Mixed(n_obs=len(long), n_worlds=int(long["replicate"].nunique()) if len(long) else 0)
    k = int(long["objective"].nunique()) if len(long) else 0
    if out.n_worlds < MIN_WORLDS or k < 2:
        out.note = (f"not fitted: {out.n_worlds} replicate{'s' if out.n_worlds != 1 else ''} with a score "
                    f"(needs at least {MIN_WORLDS}) and {k} objective{'s' if k != 1 else ''} (needs 2)")
        return out
    if out.n_obs <= k + 1:
        out.note = f"not fitted: {out.n_obs} scores for {k} objective means and 2 variances"
        return out
    # objective labels are data, never formula text: code them (the reference first, so it is the baseline)
    names = sorted(long["objective"].unique(), key=lambda o: (o != reference, str(o)))
    code = {o: f"o{i:03d}" for i, o in enumerate(names)}
    data = pd.DataFrame({"score": long["score"].astype(float), "objective": long["objective"].map(code),
                         "world": long["replicate"].astype(str)})
    import statsmodels.formula.api as smf

    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        try:
            fit = smf.mixedlm("score ~ C(objective)", data, groups=data["world"]).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as exc:
            out.note = f"not fitted: singular ({' '.join(str(exc).split())[:120]})"
            return out
    world, resid = float(np.asarray(fit.cov_re).ravel()[0]), float(fit.scale)
    if not fit.converged or not (math.isfinite(world) and math.isfinite(resid)):
        out.note = "not fitted: the REML fit did not converge"
        return out
    out.world_var, out.resid_var = max(world, 0.0), resid
    # statsmodels warns "may be on the boundary" also for clearly positive estimates: judge by the value
    if world <= 1e-6 * resid:
        out.note = "the between-world variance is estimated at the boundary (0): no world effect beyond the residual"
    elif any("singular" in str(w.message).lower() for w in caught):
        out.note = "the fit warned of a singular covariance: read the variances with care"
    return out


@dataclass
class Friedman:
    """Ranks of the objectives over independent blocks, Friedman's test and Nemenyi's post-hoc."""

    blocks: list[str]  # the complete blocks used (replicates, or dataset/encoder/replicate cells)
    objectives: list[str]
    mean_ranks: pd.Series  # objective -> mean rank (1 = best), sorted
    kind: str = "replicates"  # what a block is, for the text
    statistic: float = math.nan
    p_value: float = math.nan
    nemenyi: pd.DataFrame | None = None
    cd: float = math.nan
    dropped_blocks: list[str] = field(default_factory=list)  # blocks without a value for some objective
    dropped_objectives: list[str] = field(default_factory=list)  # objectives with a value in fewer than 2 blocks
    note: str = ""  # why the test or the diagram is missing, if it is


def friedman(values: pd.DataFrame, kind: str = "replicates") -> Friedman | None:
    """``values``: rows = blocks, columns = objectives, cells oriented so that higher is better.

    With fewer than 3 objectives or 2 complete blocks the mean ranks are still given, not the test.
    None when there are fewer than 2 objectives or no complete block.
    """
    if values.empty or values.shape[1] < 2:
        return None
    from scipy.stats import friedmanchisquare, rankdata, studentized_range

    counts = values.notna().sum(axis=0)
    few = [str(o) for o in values.columns if counts[o] < 2]
    if few and values.shape[1] - len(few) >= 2:
        values = values.drop(columns=few)
    else:
        few = []
    complete = values.dropna(axis=0, how="any")
    dropped = [str(b) for b in values.index if b not in complete.index]
    if complete.empty:
        return None
    ranks = pd.DataFrame(rankdata(-complete.to_numpy(float), axis=1, method="average"),
                         index=complete.index, columns=complete.columns)
    out = Friedman(blocks=[str(b) for b in complete.index], objectives=list(complete.columns),
                   mean_ranks=ranks.mean(axis=0).sort_values(kind="stable"), kind=kind, dropped_blocks=dropped,
                   dropped_objectives=few)
    n, k = complete.shape
    if k < 3 or n < 2:
        out.note = f"Friedman's test needs at least 3 objectives and 2 complete blocks (here {k} and {n})"
        return out
    with quiet():
        try:
            res = friedmanchisquare(*[complete[c].to_numpy(float) for c in complete.columns])
            out.statistic, out.p_value = float(res.statistic), float(res.pvalue)
        except ValueError as exc:  # e.g. every block a complete tie
            out.note = f"Friedman's test undefined here ({exc})"
        if math.isnan(out.p_value) and not out.note:
            out.note = "Friedman's test undefined here (every block ranks the objectives equally)"
        import scikit_posthocs as sp

        nem = sp.posthoc_nemenyi_friedman(complete.to_numpy(float))
    nem.index = nem.columns = list(complete.columns)
    out.nemenyi = nem
    out.cd = float(studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n)))
    return out


@dataclass
class Kendall:
    dataset: str
    encoder_a: str
    encoder_b: str
    objectives: list[str]
    tau: float = math.nan
    p_value: float = math.nan
    note: str = ""


def kendall(dataset: str, encoder_a: str, means_a: pd.Series, encoder_b: str, means_b: pd.Series) -> Kendall:
    """Kendall's tau between two tables' mean main scores (objective -> mean, trained objectives only)."""
    from scipy.stats import kendalltau

    a, b = means_a[np.isfinite(means_a.astype(float))], means_b[np.isfinite(means_b.astype(float))]
    shared = [o for o in a.index if o in b.index]
    out = Kendall(dataset, encoder_a, encoder_b, shared)
    if len(shared) < 3:
        out.note = f"needs at least 3 trained objectives in both tables (here {len(shared)})"
        return out
    with quiet():
        res = kendalltau(a[shared].to_numpy(float), b[shared].to_numpy(float))
    out.tau, out.p_value = float(res.statistic), float(res.pvalue)
    if math.isnan(out.tau):
        out.note = "undefined (one table gives every objective the same mean)"
    return out
