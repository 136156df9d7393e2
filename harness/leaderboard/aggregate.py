"""Aggregate jobs over seeds: mean, std and n per metric, the main score, and its significance.

Only jobs with status ``ok`` are aggregated; failed jobs are counted (``n_failed``), never averaged.
``std`` is the sample standard deviation (ddof = 1; empty when n < 2).

Main score, per (dataset, encoder), the first rule that has values among its jobs:
  1. the mean zero-shot top-1 over classification sets (``zeroshot_classification.*.top1``),
  2. else the mean image->text R@1 over retrieval sets (``retrieval.*.image_to_text_r1``),
  3. else the mean linear-probe accuracy (``linear_probe.*.accuracy``).
A job's main score is the mean of those columns (over the sets it has); objectives are ranked by
its mean over seeds, descending.

Significance: Welch's unequal-variance t-test (``scipy.stats.ttest_ind(equal_var=False)``) of each
objective's main score over seeds against the top-ranked objective's; ``p >= 0.05`` is marked
"n.s." (not significant), and "n<2" when either side has fewer than two seeds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.leaderboard.load import Metric

GROUP_KEYS = ["dataset", "encoder"]
MAIN_SCORE_RULES = (
    ("zeroshot_classification", "top1", "zero-shot top-1 (mean over classification sets)"),
    ("retrieval", "image_to_text_r1", "image→text R@1 (mean over retrieval sets)"),
    ("linear_probe", "accuracy", "linear-probe accuracy (mean over sets)"),
)
ALPHA = 0.05
SIGNIFICANCE_METHOD = (
    "Welch's t-test (unequal variances, two-sided) over seeds of each objective's main score against the "
    f"top-ranked objective's; n.s. = not significant (p ≥ {ALPHA}); n<2 = fewer than two seeds on a side, no test"
)


@dataclass(frozen=True)
class MainScore:
    description: str
    columns: tuple[str, ...]


def main_score(jobs: pd.DataFrame, metrics: dict[str, Metric]) -> MainScore | None:
    """The main-score rule for these jobs (one dataset and encoder), or None when none applies."""
    for plugin, leaf, description in MAIN_SCORE_RULES:
        cols = tuple(
            m.column for m in metrics.values()
            if m.plugin == plugin and m.leaf == leaf and m.column in jobs and jobs[m.column].notna().any()
        )
        if cols:
            return MainScore(description, cols)
    return None


def welch(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided Welch t-test p-value; None when a side has < 2 values.

    Two constant samples give 1 when equal and 0 when not (the limit of the test).
    """
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return None
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # no spread on either side: t is 0/0 or infinite
        return 1.0 if a[0] == b[0] else 0.0
    from scipy.stats import ttest_ind

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision-loss warning on near-equal samples
        p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return 1.0 if math.isnan(p) else p


def significance_text(p: float | None, is_top: bool) -> str:
    if is_top:
        return "top"
    if p is None:
        return "n<2"
    return f"n.s. (p={p:.2f})" if p >= ALPHA else f"p={p:.3f}" if p >= 0.001 else f"p={p:.1e}"


@dataclass
class Aggregate:
    """summary: one row per (dataset, encoder, objective), ranked; scores: the per-ok-job main score."""

    summary: pd.DataFrame
    main_scores: dict[tuple[str, str], MainScore | None]
    job_scores: pd.Series  # index aligned with the results frame; NaN for failed jobs


def aggregate(results: pd.DataFrame, metrics: dict[str, Metric]) -> Aggregate:
    """Mean/std/n of every metric over ok seeds, the main score, rank and Welch p vs the top row."""
    ok = results["status"] == "ok"
    job_scores = pd.Series(np.nan, index=results.index, dtype=float)
    rules: dict[tuple[str, str], MainScore | None] = {}
    rows = []
    for (dataset, encoder), jobs in results.groupby(GROUP_KEYS, sort=True):
        rule = main_score(jobs[ok.loc[jobs.index]], metrics)
        rules[(dataset, encoder)] = rule
        if rule is not None:
            job_scores.loc[jobs.index] = jobs[list(rule.columns)].mean(axis=1, skipna=True).where(ok.loc[jobs.index])
        group_rows = []
        for objective, obj in jobs.groupby("objective", sort=True):
            good = obj[obj["status"] == "ok"]
            scores = job_scores.loc[good.index].dropna().to_numpy()
            row = {
                "dataset": dataset,
                "encoder": encoder,
                "objective": objective,
                "n_ok": len(good),
                "n_failed": int((obj["status"] != "ok").sum()),
                "main_score.mean": scores.mean() if len(scores) else np.nan,
                "main_score.std": scores.std(ddof=1) if len(scores) > 1 else np.nan,
                "main_score.n": len(scores),
                "_scores": scores,
            }
            for col in metrics:
                vals = good[col].dropna().to_numpy() if col in good else np.array([])
                row[f"{col}.mean"] = vals.mean() if len(vals) else np.nan
                row[f"{col}.std"] = vals.std(ddof=1) if len(vals) > 1 else np.nan
                row[f"{col}.n"] = len(vals)
            group_rows.append(row)
        group_rows.sort(key=lambda r: (math.isnan(r["main_score.mean"]), -np.nan_to_num(r["main_score.mean"]), r["objective"]))
        top = group_rows[0]
        for rank, row in enumerate(group_rows, start=1):
            row["rank"] = rank
            has_score = not math.isnan(row["main_score.mean"])
            is_top = row is top and has_score
            p = None if is_top or not has_score else welch(row["_scores"], top["_scores"])
            row["welch_p_vs_top"] = np.nan if p is None else p
            row["significance"] = significance_text(p, is_top) if has_score else ""
        rows.extend(group_rows)
    summary = pd.DataFrame(rows).drop(columns="_scores")
    front = ["dataset", "encoder", "rank", "objective", "n_ok", "n_failed", "main_score.mean", "main_score.std",
             "main_score.n", "welch_p_vs_top", "significance"]
    summary = summary[front + [c for c in summary.columns if c not in front]]
    return Aggregate(summary=summary.reset_index(drop=True), main_scores=rules, job_scores=job_scores)
