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

**Statistics** (``harness.leaderboard.compare`` and the modules it names): per objective the mean
over replicates with a seeded bootstrap CI and rank interval (``resample``); tiers; every pair paired
by replicate (paired t, Holm over the table's pairs: pairwise.csv); the planned contrasts of every
trained objective against the reference objective (Holm over those: contrasts.csv), the headline's
``vs_reference``; the mixed model, Friedman's test over replicate blocks and Kendall's tau between
encoders (``models``). Rows keep their order by mean (``rank``), but the page ranks only by tier.

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
from harness.leaderboard.compare import Headline, across_encoders, across_tables, headline, score_matrix
from harness.leaderboard.models import Friedman, Kendall
from harness.leaderboard.resample import RESAMPLES
from harness.leaderboard.stats import ALPHA, CONTRAST_COLUMNS, PAIRWISE_COLUMNS, PAIRWISE_EXTRA

GROUP_KEYS = ["dataset", "encoder"]
REFERENCE_COLUMNS = ["dataset", "encoder", "reference", "metric", "mean", "std", "n"]
TABLE_COLUMNS = [
    "dataset", "encoder", "main_score", "main_score_columns", "higher_is_better", "main_score_source", "description",
    "objectives", "trained_objectives", "replicates", "tier1", "reference_objective", "reference_source", "reference_note",
    "pairs_tested", "contrasts_tested", "contrasts_resolved", "detectable_n", "sd_diff", "min_detectable_diff",
    "min_detectable_diff_holm", "mixedlm_world_var", "mixedlm_resid_var", "mixedlm_note", "friedman_blocks",
    "friedman_n_blocks", "friedman_statistic", "friedman_p", "nemenyi_cd", "friedman_note", "kendall_vs", "kendall_n",
    "kendall_tau", "kendall_p", "kendall_note",
]
ACROSS_COLUMNS = ["test", "dataset", "encoder_a", "encoder_b", "objectives", "blocks", "statistic", "p_value", "nemenyi_cd", "note"]
SUMMARY_FRONT = [
    "dataset", "encoder", "rank", "objective", "trained", "n_ok", "n_failed", "replicates", "main_score.mean",
    "main_score.std", "main_score.n", "ci_low", "ci_high", "rank_low", "rank_high", "tier", "vs_reference",
    "diff_vs_reference", "p_vs_reference", "p_holm_vs_reference", "mean_rank",
]
SIGNIFICANCE_METHOD = (
    "every comparison is paired by replicate (replicate r = one world draw and one training seed, the same worlds "
    "for every objective; old runs: the seed): the two-sided paired t-test (scipy ttest_rel, df = n − 1) of the "
    "per-replicate main scores over the replicates both objectives ran, with its 95% t-interval of the mean "
    "difference. The headline's \"vs reference\" column is the planned contrast of each trained objective against "
    "the reference objective, Holm-corrected over those contrasts (statsmodels); every pair of objectives is in "
    "pairwise.csv, Holm-corrected over all the table's pairs. A comparison whose paired differences are all equal "
    f"(zero variance) or that has fewer than 2 paired replicates has no p (the reason is given). n.s. (p_holm ≥ "
    f"{ALPHA}) means not resolved, not equal. The mean's 95% CI and the rank interval are a seeded bootstrap over "
    f"replicates ({RESAMPLES:,} resamples of whole worlds). Tier 1 is the best mean plus every objective the Holm-corrected "
    "pairwise tests do not resolve from it; tier 2 repeats that on the rest; objectives within a tier are not ranked"
)
__all__ = ["aggregate", "Aggregate", "MainScore", "TableStats", "SIGNIFICANCE_METHOD", "ALPHA"]


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
    order: list[str]  # objectives in order of their mean (those without a score last)
    head: Headline  # the comparisons
    references: References

    @property
    def pairwise(self) -> pd.DataFrame:
        return self.head.pairwise

    @property
    def friedman(self) -> Friedman | None:
        return self.head.friedman


@dataclass
class Aggregate:
    """results: results.csv (with main_score); summary: one row per (dataset, encoder, objective)."""

    results: pd.DataFrame
    summary: pd.DataFrame
    tables: dict[tuple[str, str], TableStats]
    pairwise: pd.DataFrame
    contrasts: pd.DataFrame  # contrasts.csv
    references: pd.DataFrame  # references.csv
    table_frame: pd.DataFrame  # tables.csv
    kendall: list[Kendall] = field(default_factory=list)  # every pair of encoders of a dataset
    across: Friedman | None = None  # Friedman over every table's replicate cells (>= 2 tables)

    @property
    def job_scores(self) -> pd.Series:
        return self.results["main_score"]

    @property
    def main_scores(self) -> dict[tuple[str, str], MainScore | None]:
        return {k: t.main for k, t in self.tables.items()}

    def across_frame(self) -> pd.DataFrame:
        """across.csv: Friedman across tables (when there are >= 2) and Kendall's tau for each pair of encoders."""
        rows = []
        fr = self.across
        if fr is not None:
            rows.append({"test": "friedman", "dataset": "", "encoder_a": "", "encoder_b": "", "objectives": "; ".join(fr.objectives),
                         "blocks": len(fr.blocks), "statistic": fr.statistic, "p_value": fr.p_value, "nemenyi_cd": fr.cd, "note": fr.note})
        for k in self.kendall:
            rows.append({"test": "kendall_tau", "dataset": k.dataset, "encoder_a": k.encoder_a, "encoder_b": k.encoder_b,
                         "objectives": "; ".join(k.objectives), "blocks": np.nan, "statistic": k.tau, "p_value": k.p_value,
                         "nemenyi_cd": np.nan, "note": k.note})
        return pd.DataFrame(rows, columns=ACROSS_COLUMNS)


def _stat_row(vals: np.ndarray) -> tuple[float, float, int]:
    with np.errstate(all="ignore"):  # an infinite value gives an infinite mean and a NaN std, quietly
        return (float(vals.mean()) if len(vals) else math.nan, float(vals.std(ddof=1)) if len(vals) > 1 else math.nan, len(vals))


def vs_reference(head: Headline, objective: str) -> tuple[str, float, float, float]:
    """(text, diff, p, p_holm) of an objective's contrast against the table's reference objective."""
    if objective == head.reference:
        return "reference", np.nan, np.nan, np.nan
    if objective in head.untrained:
        return "untrained: not compared", np.nan, np.nan, np.nan
    hit = head.contrasts[head.contrasts["objective"] == objective]
    if hit.empty:
        return "", np.nan, np.nan, np.nan
    r = hit.iloc[0]
    if math.isnan(r["p_value"]):
        return f"no test: {r['note']}", r["diff"], np.nan, np.nan
    p = r["p_holm"]
    p_text = f"p_holm={p:.2f}" if p >= 0.1 else f"p_holm={p:.3f}" if p >= 0.001 else f"p_holm={p:.1e}"
    diff = f"{r['diff']:+.3g}"
    return (f"{diff}, {p_text}" if r["significant"] else f"n.s. ({diff}, {p_text})"), r["diff"], r["p_value"], p


def _table_row(t: TableStats) -> dict:
    main, h = t.main, t.head
    det, mx, fr = h.detectable, h.mixed, h.friedman
    k = h.kendall[0] if h.kendall else None
    vs = "" if k is None else k.encoder_b if k.encoder_a == t.encoder else k.encoder_a
    con = h.contrasts
    return {
        "dataset": t.dataset, "encoder": t.encoder,
        "main_score": main.pattern if main else "", "main_score_columns": " ".join(main.columns) if main else "",
        "higher_is_better": main.higher_is_better if main else np.nan, "main_score_source": main.source if main else "",
        "description": main.description if main else t.why_none, "objectives": len(t.order),
        "trained_objectives": len(h.trained), "replicates": h.replicates, "tier1": "; ".join(h.tier(1)),
        "reference_objective": h.reference or "", "reference_source": h.reference_source, "reference_note": h.reference_note,
        "pairs_tested": int(h.pairwise["p_value"].notna().sum()), "contrasts_tested": int(con["p_value"].notna().sum()),
        "contrasts_resolved": int(con["significant"].sum()) if len(con) else 0,
        "detectable_n": det.n if det else np.nan, "sd_diff": det.sd_diff if det else np.nan,
        "min_detectable_diff": det.mdd if det else np.nan,
        "min_detectable_diff_holm": det.mdd_holm if det and det.mdd_holm is not None else np.nan,
        "mixedlm_world_var": mx.world_var, "mixedlm_resid_var": mx.resid_var, "mixedlm_note": mx.note if main else "",
        "friedman_blocks": " ".join(fr.blocks) if fr else "", "friedman_n_blocks": len(fr.blocks) if fr else 0,
        "friedman_statistic": fr.statistic if fr else np.nan, "friedman_p": fr.p_value if fr else np.nan,
        "nemenyi_cd": fr.cd if fr else np.nan, "friedman_note": fr.note if fr else "",
        "kendall_vs": vs, "kendall_n": len(k.objectives) if k else np.nan, "kendall_tau": k.tau if k else np.nan,
        "kendall_p": k.p_value if k else np.nan, "kendall_note": k.note if k else "",
    }


def _objective_rows(dataset: str, encoder: str, jobs: pd.DataFrame, scores: pd.Series, metrics: dict[str, Metric]) -> list[dict]:
    rows = []
    for objective, obj in jobs.groupby("objective", sort=True):
        good = obj[obj["status"] == "ok"]
        mean, std, n = _stat_row(scores.loc[good.index].dropna().to_numpy(float))
        row = {"dataset": dataset, "encoder": encoder, "objective": objective, "n_ok": len(good),
               "n_failed": int((obj["status"] != "ok").sum()), "main_score.mean": mean, "main_score.std": std, "main_score.n": n}
        for col in metrics:
            vals = good[col].dropna().to_numpy(float) if col in good else np.array([])
            row[f"{col}.mean"], row[f"{col}.std"], row[f"{col}.n"] = _stat_row(vals)
        rows.append(row)
    return rows


def _fill(row: dict, head: Headline) -> None:
    o = row["objective"]
    has = o in head.intervals.index
    iv = head.intervals.loc[o] if has else None
    row["trained"] = o in head.trained
    row["replicates"] = int(head.matrix[o].notna().sum()) if o in head.matrix.columns else 0
    for c in ("ci_low", "ci_high", "rank_low", "rank_high"):
        row[c] = float(iv[c]) if has else np.nan
    row["tier"] = head.tier_of.get(o, np.nan)
    row["vs_reference"], row["diff_vs_reference"], row["p_vs_reference"], row["p_holm_vs_reference"] = vs_reference(head, o)
    fr = head.friedman
    row["mean_rank"] = float(fr.mean_ranks[o]) if fr is not None and o in fr.mean_ranks else np.nan


def natural_key(text: str) -> list:
    """A sort key that orders the numbers inside labels by value ("batch 8" before "batch 32")."""
    import re

    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text)) if part]


def aggregate(store: RunStore) -> Aggregate:
    """Everything the outputs need, from the final runs of ``store``."""
    metrics = store.metrics
    results = store.frame()
    ok = results["status"] == "ok"
    scores_col = pd.Series(np.nan, index=results.index, dtype=float)
    runs = store.runs  # aligned with results' rows
    tables: dict[tuple[str, str], TableStats] = {}
    rows, ref_rows = [], []
    groups = sorted(results.groupby(GROUP_KEYS, sort=False), key=lambda g: (natural_key(g[0][0]), natural_key(g[0][1])))
    for (dataset, encoder), jobs in groups:  # "batch 8" before "batch 32", "d=32" before "d=128"
        ok_jobs = jobs[ok.loc[jobs.index]]
        ok_runs = [runs[i] for i in ok_jobs.index]
        main, why = select_main_score(ok_jobs, ok_runs, metrics)
        if main is not None:
            scores_col.loc[ok_jobs.index] = ok_jobs[list(main.columns)].mean(axis=1, skipna=True)
        group_rows = _objective_rows(dataset, encoder, jobs, scores_col, metrics)
        sign = -1.0 if main is None or main.higher_is_better else 1.0
        group_rows.sort(key=lambda r: (math.isnan(r["main_score.mean"]), sign * np.nan_to_num(r["main_score.mean"]), r["objective"]))
        order = [r["objective"] for r in group_rows]
        by_objective = {o: [runs[i] for i in ok_jobs.index[ok_jobs["objective"] == o]] for o in order}
        matrix = score_matrix(ok_jobs, scores_col) if main is not None else pd.DataFrame(dtype=float)
        head = headline(dataset, encoder, order if main is not None else [], matrix, by_objective,
                        main.higher_is_better if main is not None else True)
        refs = references(ok_runs, main)
        for rank, row in enumerate(group_rows, start=1):
            row["rank"] = rank if not math.isnan(row["main_score.mean"]) else np.nan
            _fill(row, head)
        rows.extend(group_rows)
        for label, cols in refs.values.items():
            if label in refs.main:
                ref_rows.append({"dataset": dataset, "encoder": encoder, "reference": label, "metric": "main_score",
                                 "mean": refs.main[label], "std": np.nan, "n": np.nan})
            for col, (m, s, n) in cols.items():
                ref_rows.append({"dataset": dataset, "encoder": encoder, "reference": label, "metric": col, "mean": m, "std": s, "n": n})
        tables[(dataset, encoder)] = TableStats(dataset, encoder, main, why, order, head, refs)
    heads = {k: t.head for k, t in tables.items() if t.main is not None}
    kendall = across_encoders(heads, {k: t.main.pattern for k, t in tables.items() if t.main is not None})
    across = across_tables(heads, {k: t.main.higher_is_better for k, t in tables.items() if t.main is not None})
    summary = pd.DataFrame(rows, columns=SUMMARY_FRONT + [c for c in (rows[0] if rows else {}) if c not in SUMMARY_FRONT])
    summary = summary.astype({"rank": "Int64", "tier": "Int64"}).copy()  # one consolidated frame (no fragmentation warnings later)
    results.insert(results.columns.get_loc(LR_COLUMN) + 1, "main_score", scores_col)
    return Aggregate(
        results=results, summary=summary.reset_index(drop=True), tables=tables,
        pairwise=_concat([t.head.pairwise for t in tables.values()], PAIRWISE_COLUMNS + PAIRWISE_EXTRA),
        contrasts=_concat([t.head.contrasts for t in tables.values()], CONTRAST_COLUMNS),
        references=pd.DataFrame(ref_rows, columns=REFERENCE_COLUMNS).astype({"n": "Int64"}),
        table_frame=pd.DataFrame([_table_row(t) for t in tables.values()], columns=TABLE_COLUMNS), kendall=kendall, across=across)


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    types = {c: float for c in ("n", "mean_a", "mean_b", "mean", "mean_reference", "diff", "ci_low", "ci_high", "p_value",
                                "p_holm", "p_wilcoxon", "sd_diff", "n_needed", "min_detectable_diff",
                                "min_detectable_diff_holm") if c in columns}
    out = out.astype({**types, "significant": bool})
    return out.astype({c: "Int64" for c in ("n", "n_needed") if c in columns})


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
