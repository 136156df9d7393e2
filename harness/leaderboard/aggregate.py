"""Aggregate jobs over seeds: mean, std and n per metric, the main score, ranks and the statistics.

Only jobs with status ``ok`` are aggregated; failed jobs are counted (``n_failed``), never averaged.
``std`` is the sample standard deviation (ddof = 1; empty when n < 2). A table is one (dataset,
encoder) pair; tuning jobs (``job.stage == "tune"``) are not part of any table.

**Main score**, per table, from what the results declare (nothing is hard-coded here):

1. the suite's explicit choice, ``job.main_score`` = ``"<evaluation>.<key>"``, when the table's ok jobs
   carry one (the most common one if they differ) and it has values among them;
2. else the first of the evaluations' declared main scores (``result["main_scores"]``, in the suite's
   evaluation order, the ordered union over the table's ok jobs) that has values among them;
3. else none: the table has no main score, no ranking and no tests (the page says so).

A pattern component ``*`` matches any one component of a metric column, so ``retrieval.*.image_to_text_r1``
is every retrieval set. A job's main score is the mean of the matching columns it has; its direction
is the declaration's ``higher_is_better`` (an explicit choice that matches no declaration takes the
direction its columns' ``metric_info`` gives, else higher is better, and says so). Objectives are
ranked by their mean main score over ok seeds, descending when higher is better, else ascending.

**Significance**: all pairs of a table's objectives, Welch's t-test on the per-job main score with
Holm's correction over that table's pairs (``harness.leaderboard.stats.pairwise``). A summary row's
``significance`` is its Holm-adjusted p against the top row.

**Ranks across tasks** (Demsar 2006): the blocks of the Friedman test are the table's *task columns*:
every metric column that matches any evaluation's declared main-score pattern (all evaluations, not
only the one picked as main score; a ``*`` gives one task per set). Each evaluation thus contributes
the headline metric its author declared, once per evaluation set, in its declared direction: a
declared aggregate (zero-shot ``mean_top1``) is one task and the columns it averages are not added
beside it, and correlated secondary columns (top-5, the other retrieval direction, recall@5...) do not
inflate the block count. A task missing for some objective is dropped (complete blocks). Cells are
means over ok seeds; only objectives with a main score take part.

**Reference rows** (``result["reference_rows"]``): averaged over the ok jobs of the table that carry
them, shown marked in the tables, never ranked, never tested, never in ``summary.csv``; written to
``references.csv`` (long format).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.columns import first_mean, matches
from harness.leaderboard.load import LR_COLUMN, Declaration, Metric, Run, RunStore
from harness.leaderboard.stats import ALPHA, PAIRWISE_COLUMNS, Detectable, Friedman, detectable, friedman, pairwise, welch

GROUP_KEYS = ["dataset", "encoder"]
REFERENCE_COLUMNS = ["dataset", "encoder", "reference", "metric", "mean", "std", "n"]
TABLE_COLUMNS = [
    "dataset", "encoder", "main_score", "main_score_columns", "higher_is_better", "main_score_source", "description",
    "objectives", "pairs_tested", "detectable_n", "pooled_std", "min_detectable_diff", "min_detectable_diff_holm",
    "friedman_tasks", "friedman_n_tasks", "friedman_statistic", "friedman_p", "nemenyi_cd",
]
SIGNIFICANCE_METHOD = (
    "Welch's t-test (unequal variances, two-sided, scipy) of the per-seed main score for every pair of a table's "
    f"objectives, Holm-corrected over that table's pairs (statsmodels); \"vs top\" is the Holm-adjusted p against "
    f"the top row; n.s. = not significant (p_holm ≥ {ALPHA}); n<2 = fewer than two seeds on a side, no test. "
    "Every pair is in pairwise.csv"
)
__all__ = ["aggregate", "Aggregate", "MainScore", "TableStats", "welch", "SIGNIFICANCE_METHOD", "ALPHA"]


@dataclass(frozen=True)
class MainScore:
    pattern: str  # "<evaluation>.<key>", '*' allowed
    columns: tuple[str, ...]  # the matching columns that have values in the table
    higher_is_better: bool
    description: str
    source: str  # "suite" (job.main_score) or "declared" (result["main_scores"])
    note: str = ""

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


def declarations(runs: list[Run]) -> list[Declaration]:
    """The ordered union of the runs' declared main scores (first declaration of a pattern wins)."""
    seen: dict[str, Declaration] = {}
    for run in runs:
        for d in run.declarations:
            seen.setdefault(d.pattern, d)
    return list(seen.values())


def _columns(pattern: str, jobs: pd.DataFrame, metrics: dict[str, Metric]) -> tuple[str, ...]:
    return tuple(c for c in metrics if matches(pattern, c) and c in jobs and jobs[c].notna().any())


def select_main_score(jobs: pd.DataFrame, runs: list[Run], metrics: dict[str, Metric]) -> tuple[MainScore | None, str]:
    """The main score of one table from its ok jobs (frame rows and their Run records), or (None, why)."""
    decls = declarations(runs)
    note = ""
    chosen = Counter(r.explicit_main_score for r in runs if r.explicit_main_score)
    if chosen:
        pattern = chosen.most_common(1)[0][0]
        if len(chosen) > 1:
            note = f"the jobs name different main scores ({', '.join(sorted(chosen))}); the most common is used"
        cols = _columns(pattern, jobs, metrics)
        if cols:
            decl = next((d for d in decls if d.pattern == pattern), None)
            if decl is not None:
                return MainScore(pattern, cols, decl.higher_is_better, decl.description, "suite", note), ""
            dirs = {metrics[c].higher_is_better for c in cols}
            hib = dirs.pop() if len(dirs) == 1 and None not in dirs else None
            if hib is None:
                note = "; ".join(filter(None, [note, "no direction declared for it: higher is taken as better"]))
            star = " (mean over the matching columns)" if "*" in pattern else ""
            return MainScore(pattern, cols, True if hib is None else hib, f"{pattern}{star}", "suite", note), ""
        note = f"the suite's main score {pattern} has no values in this table"
    for d in decls:
        cols = _columns(d.pattern, jobs, metrics)
        if cols:
            return MainScore(d.pattern, cols, d.higher_is_better, d.description, "declared", note), ""
    if decls:
        why = "none of the declared main scores (" + ", ".join(d.pattern for d in decls) + ") has values among its ok jobs"
    elif jobs.empty:
        why = "no job of this table finished"
    else:
        why = "no evaluation of these results declares a main score (result.json has no main_scores)"
    return None, "; ".join(filter(None, [note, why]))


def task_columns(runs: list[Run], jobs: pd.DataFrame, metrics: dict[str, Metric]) -> dict[str, bool]:
    """The Friedman blocks of a table: column -> higher_is_better, every column matching a declared pattern."""
    out: dict[str, bool] = {}
    for d in declarations(runs):
        for c in _columns(d.pattern, jobs, metrics):
            out.setdefault(c, d.higher_is_better)
    return out


@dataclass
class References:
    """A table's reference rows: label -> column -> (mean, std, n), and each label's main score if it has one."""

    values: dict[str, dict[str, tuple[float, float, int]]] = field(default_factory=dict)
    main: dict[str, float] = field(default_factory=dict)


def references(runs: list[Run], main: MainScore | None) -> References:
    acc: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        for label, row in run.reference_rows.items():
            for col, v in row.items():
                acc.setdefault(label, {}).setdefault(col, [])
                if not math.isnan(v):
                    acc[label][col].append(v)
    out = References()
    for label, cols in acc.items():
        out.values[label] = {}
        for col, vals in cols.items():
            out.values[label][col] = _stat_row(np.asarray(vals, dtype=float))
        if main is not None and all(c in out.values[label] and out.values[label][c][2] for c in main.columns):
            out.main[label] = float(np.mean([out.values[label][c][0] for c in main.columns]))
    return out


@dataclass
class TableStats:
    dataset: str
    encoder: str
    main: MainScore | None
    why_none: str  # when main is None
    order: list[str]  # objectives in rank order
    pairwise: pd.DataFrame
    detectable: Detectable | None
    friedman: Friedman | None
    references: References


@dataclass
class Aggregate:
    """results: results.csv (with main_score); summary: one row per (dataset, encoder, objective), ranked."""

    results: pd.DataFrame
    summary: pd.DataFrame
    tables: dict[tuple[str, str], TableStats]
    pairwise: pd.DataFrame
    references: pd.DataFrame  # references.csv
    table_frame: pd.DataFrame  # tables.csv

    @property
    def job_scores(self) -> pd.Series:
        return self.results["main_score"]

    @property
    def main_scores(self) -> dict[tuple[str, str], MainScore | None]:
        return {k: t.main for k, t in self.tables.items()}


def significance_text(p: float | None, is_top: bool) -> str:
    if is_top:
        return "top"
    if p is None:
        return "n<2"
    return f"n.s. (p_holm={p:.2f})" if p >= ALPHA else f"p_holm={p:.3f}" if p >= 0.001 else f"p_holm={p:.1e}"


def _stat_row(vals: np.ndarray) -> tuple[float, float, int]:
    with np.errstate(all="ignore"):  # an infinite value gives an infinite mean and a NaN std, quietly
        return (float(vals.mean()) if len(vals) else math.nan, float(vals.std(ddof=1)) if len(vals) > 1 else math.nan, len(vals))


def aggregate(store: RunStore) -> Aggregate:
    """Everything the outputs need, from the final runs of ``store``."""
    metrics = store.metrics
    results = store.frame()
    ok = results["status"] == "ok"
    scores_col = pd.Series(np.nan, index=results.index, dtype=float)
    runs = store.runs  # aligned with results' rows
    tables: dict[tuple[str, str], TableStats] = {}
    rows, pair_frames, ref_rows, table_rows = [], [], [], []
    for (dataset, encoder), jobs in results.groupby(GROUP_KEYS, sort=True):
        ok_jobs = jobs[ok.loc[jobs.index]]
        ok_runs = [runs[i] for i in ok_jobs.index]
        main, why = select_main_score(ok_jobs, ok_runs, metrics)
        if main is not None:
            scores_col.loc[ok_jobs.index] = ok_jobs[list(main.columns)].mean(axis=1, skipna=True)
        group_rows = []
        scores: dict[str, np.ndarray] = {}
        for objective, obj in jobs.groupby("objective", sort=True):
            good = obj[obj["status"] == "ok"]
            s = scores_col.loc[good.index].dropna().to_numpy(float)
            scores[objective] = s
            mean, std, n = _stat_row(s)
            row = {"dataset": dataset, "encoder": encoder, "objective": objective, "n_ok": len(good),
                   "n_failed": int((obj["status"] != "ok").sum()),
                   "main_score.mean": mean, "main_score.std": std, "main_score.n": n}
            for col in metrics:
                vals = good[col].dropna().to_numpy(float) if col in good else np.array([])
                row[f"{col}.mean"], row[f"{col}.std"], row[f"{col}.n"] = _stat_row(vals)
            group_rows.append(row)
        sign = -1.0 if main is None or main.higher_is_better else 1.0
        group_rows.sort(key=lambda r: (math.isnan(r["main_score.mean"]), sign * np.nan_to_num(r["main_score.mean"]), r["objective"]))
        order = [r["objective"] for r in group_rows]
        pw = pairwise(dataset, encoder, order, scores) if main is not None else pd.DataFrame(columns=PAIRWISE_COLUMNS)
        pair_frames.append(pw)
        n_tested = int(pw["p_value"].notna().sum())
        det = detectable(scores, n_tested) if main is not None else None
        tasks = task_columns(ok_runs, ok_jobs, metrics)
        ranked = [r for r in group_rows if not math.isnan(r["main_score.mean"])]
        block = pd.DataFrame({r["objective"]: [r[f"{c}.mean"] for c in tasks] for r in ranked}, index=list(tasks))
        fr = friedman(block, tasks) if main is not None and tasks and len(ranked) >= 2 else None
        refs = references(ok_runs, main)
        top = group_rows[0] if group_rows and not math.isnan(group_rows[0]["main_score.mean"]) else None
        for rank, row in enumerate(group_rows, start=1):
            row["rank"] = rank if not math.isnan(row["main_score.mean"]) else np.nan
            has_score = not math.isnan(row["main_score.mean"])
            is_top = row is top
            raw = None if is_top or not has_score or top is None else welch(scores[row["objective"]], scores[top["objective"]])
            row["welch_p_vs_top"] = np.nan if raw is None else raw
            p_holm = None
            if has_score and not is_top and top is not None:
                hit = pw[((pw["objective_a"] == top["objective"]) & (pw["objective_b"] == row["objective"]))
                         | ((pw["objective_b"] == top["objective"]) & (pw["objective_a"] == row["objective"]))]
                if len(hit) and not math.isnan(hit["p_holm"].iloc[0]):
                    p_holm = float(hit["p_holm"].iloc[0])
            row["p_holm_vs_top"] = np.nan if p_holm is None else p_holm
            row["significance"] = significance_text(p_holm, is_top) if has_score else ""
            row["mean_rank"] = float(fr.mean_ranks[row["objective"]]) if fr is not None and row["objective"] in fr.mean_ranks else np.nan
        rows.extend(group_rows)
        for label, cols in refs.values.items():
            if label in refs.main:
                ref_rows.append({"dataset": dataset, "encoder": encoder, "reference": label, "metric": "main_score",
                                 "mean": refs.main[label], "std": np.nan, "n": np.nan})
            for col, (m, s, n) in cols.items():
                ref_rows.append({"dataset": dataset, "encoder": encoder, "reference": label, "metric": col, "mean": m, "std": s, "n": n})
        tables[(dataset, encoder)] = TableStats(dataset, encoder, main, why, order, pw, det, fr, refs)
        table_rows.append({
            "dataset": dataset, "encoder": encoder,
            "main_score": main.pattern if main else "", "main_score_columns": " ".join(main.columns) if main else "",
            "higher_is_better": main.higher_is_better if main else np.nan, "main_score_source": main.source if main else "",
            "description": main.description if main else why, "objectives": len(order), "pairs_tested": n_tested,
            "detectable_n": det.n if det else np.nan, "pooled_std": det.pooled_std if det else np.nan,
            "min_detectable_diff": det.mdd if det else np.nan,
            "min_detectable_diff_holm": det.mdd_holm if det and det.mdd_holm is not None else np.nan,
            "friedman_tasks": " ".join(fr.tasks) if fr else "", "friedman_n_tasks": len(fr.tasks) if fr else 0,
            "friedman_statistic": fr.statistic if fr else np.nan, "friedman_p": fr.p_value if fr else np.nan,
            "nemenyi_cd": fr.cd if fr else np.nan,
        })
    front = ["dataset", "encoder", "rank", "objective", "n_ok", "n_failed", "main_score.mean", "main_score.std",
             "main_score.n", "welch_p_vs_top", "p_holm_vs_top", "significance", "mean_rank"]
    summary = pd.DataFrame(rows, columns=front + [c for c in (rows[0] if rows else {}) if c not in front])
    summary = summary.astype({"rank": "Int64"}).copy()  # one consolidated frame (no fragmentation warnings later)
    results.insert(results.columns.get_loc(LR_COLUMN) + 1, "main_score", scores_col)
    pair_frames = [f for f in pair_frames if len(f)]
    pair = pd.concat(pair_frames, ignore_index=True) if pair_frames else pd.DataFrame(columns=PAIRWISE_COLUMNS)
    pair = pair.astype({"mean_a": float, "mean_b": float, "p_value": float, "p_holm": float, "significant": bool})
    return Aggregate(results=results, summary=summary.reset_index(drop=True), tables=tables, pairwise=pair,
                     references=pd.DataFrame(ref_rows, columns=REFERENCE_COLUMNS).astype({"n": "Int64"}),
                     table_frame=pd.DataFrame(table_rows, columns=TABLE_COLUMNS))


def tuning_scores(store: RunStore) -> list[tuple[str, float]]:
    """(metric, validation score) of each tuning job of ``store.tuning``, as the runner selected by.

    The metric is the suite's ``tune.metric`` (recorded on the jobs) or, when the suite left it to
    the default, the job's declared main score: the first declaration with values, a ``*`` pattern
    averaged over its matching columns: ``harness.columns.first_mean``, the rule
    ``harness.tuning.trial_score`` selects by. ("", nan) when none applies.
    """
    final_metric: dict[tuple[str, str, str], str] = {}
    for r in store.runs:
        if r.tuning.get("metric"):
            final_metric.setdefault((r.dataset, r.encoder, r.objective), r.tuning["metric"])
    out = []
    for r in store.tuning:
        metric = r.tuning.get("metric") or final_metric.get((r.dataset, r.encoder, r.objective)) or ""
        patterns = [metric] if metric else [d.pattern for d in r.declarations]
        hit = first_mean(r.values.items(), patterns)
        out.append((patterns[hit[0]], hit[1]) if hit else (metric, math.nan))
    return out
