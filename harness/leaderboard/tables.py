"""The tables a page shows, as plain cells: rendered to Markdown (``markdown.py``) and HTML (``html.py``).

Per (dataset, encoder), a ``Section``: first the answer (the main-score table, with its Holm-corrected
significance against the top row and the mean rank over tasks, plus notes: what the main score is, the
smallest difference the seeds can detect, Friedman's test), then the details (gap tables, one
downstream table per evaluation, a training table, every pair's test, the tuning choices).
Rows are objectives in main-score order. A cell is ``mean ± std`` over ok seeds (just the mean when
n = 1); the best mean of a column is bold when the metric has a direction (ties all bold); headers
carry ↑ (higher is better) or ↓ (lower). Reference rows (chance, oracles...) follow the objectives in
a table of their own kind (``Table.references``): marked, never bold, never ranked or sorted.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from harness.leaderboard.aggregate import Aggregate, MainScore, TableStats, tuning_scores
from harness.leaderboard.load import Metric, RunStore
from harness.leaderboard.stats import ALPHA, POWER

ARROW = {True: " ↑", False: " ↓", None: ""}
TITLES = {"gap": "Gap metrics", "downstream": "Downstream", "train": "Training"}


@dataclass
class Cell:
    text: str
    value: float | None = None  # sort key (None: sort by text)
    bold: bool = False


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    references: list[list[Cell]] = field(default_factory=list)  # marked rows after the objectives, never sorted


@dataclass
class Section:
    dataset: str
    encoder: str
    main_score: MainScore | None
    main: Table | None = None  # the answer
    notes: list[str] = field(default_factory=list)  # under the main table
    details: list[Table] = field(default_factory=list)
    tuning: Table | None = None

    @property
    def tables(self) -> list[Table]:
        return ([self.main] if self.main else []) + self.details + ([self.tuning] if self.tuning else [])


def fmt_number(x: float, like: float | None = None) -> str:
    """3 decimals below 10, 1 decimal below 100, none above, 3 significant digits below 0.01
    (``like`` picks the scale, e.g. the mean for its std)."""
    if not math.isfinite(x):
        return str(x)
    scale = abs(like if like is not None and math.isfinite(like) else x)
    if 0 < scale < 0.01:
        return f"{x:.2e}"
    if scale >= 100:
        return f"{x:.0f}"
    if scale >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_cell(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "—"
    if n < 2 or math.isnan(std):
        return fmt_number(mean)
    return f"{fmt_number(mean)} ± {fmt_number(std, like=mean)}"


def _bold_mask(means: pd.Series, higher_is_better: bool | None) -> pd.Series:
    finite = means.where(means.abs() != float("inf"))
    if higher_is_better is None or finite.notna().sum() == 0:
        return pd.Series(False, index=means.index)
    best = finite.max() if higher_is_better else finite.min()
    return finite.notna() & (finite.round(12) == round(best, 12))


def _value(m: float) -> float | None:
    return float(m) if math.isfinite(m) else None


def _stat_column(rows: pd.DataFrame, prefix: str, higher_is_better: bool | None) -> list[Cell]:
    means = rows[f"{prefix}.mean"].astype(float)
    bold = _bold_mask(means, higher_is_better)
    return [
        Cell(fmt_cell(m, s, int(n)), _value(m), bool(b))
        for m, s, n, b in zip(means, rows[f"{prefix}.std"], rows[f"{prefix}.n"], bold)
    ]


def headers_for(metrics: list[Metric]) -> list[str]:
    """``[middle keys] display arrow``, prefixed by the evaluation when the table mixes evaluations."""
    several = len({m.evaluation for m in metrics}) > 1
    out = []
    for m in metrics:
        name = " ".join([*m.middle, m.display])
        if several and m.evaluation != "train":
            name = f"{m.evaluation}: {name}"
        out.append(name + ARROW[m.higher_is_better])
    return out


def _reference_rows(stats: TableStats, columns: list[str], n_lead: int) -> list[list[Cell]]:
    """One marked row per reference label that has a value in one of ``columns``."""
    out = []
    for label, values in stats.references.values.items():
        if not any(c in values and values[c][2] for c in columns):
            continue
        cells = [Cell(label)] + [Cell("—") for _ in range(n_lead - 1)]
        for c in columns:
            m, s, n = values.get(c, (math.nan, math.nan, 0))
            cells.append(Cell(fmt_cell(m, s, int(n)), _value(m)))
        out.append(cells)
    return out


def _metric_table(title: str, rows: pd.DataFrame, metrics: list[Metric], lead: list[tuple[str, list[Cell]]],
                  stats: TableStats) -> Table | None:
    metrics = [m for m in metrics if rows[f"{m.column}.n"].sum() > 0]
    if not metrics and len(lead) <= 2:
        return None
    columns = [cells for _, cells in lead] + [_stat_column(rows, m.column, m.higher_is_better) for m in metrics]
    headers = [h for h, _ in lead] + headers_for(metrics)
    refs = _reference_rows(stats, [m.column for m in metrics], len(lead))
    return Table(title, headers, [list(r) for r in zip(*columns)], refs)


def _per_evaluation(title: str, rows: pd.DataFrame, metrics: list[Metric], lead, stats: TableStats) -> list[Table]:
    """One table per evaluation, so headers stay short (``shape Zero-shot top-1``, not prefixed)."""
    tables = []
    for evaluation in dict.fromkeys(m.evaluation for m in metrics):
        table = _metric_table(f"{title}: {evaluation}", rows, [m for m in metrics if m.evaluation == evaluation], lead, stats)
        if table is not None:
            tables.append(table)
    return tables


def _main_table(rows: pd.DataFrame, lead, stats: TableStats) -> Table:
    main = stats.main
    assert main is not None
    cols = list(lead) + [(f"main score {main.arrow}", _stat_column(rows, "main_score", main.higher_is_better))]
    sig = [Cell(s, _value(p)) for s, p in zip(rows["significance"], rows["p_holm_vs_top"])]
    cols.append(("vs top (Welch, Holm)", sig))
    with_ranks = stats.friedman is not None
    if with_ranks:
        cols.append(("mean rank over tasks ↓", [Cell("—" if math.isnan(r) else f"{r:.2f}", _value(r)) for r in rows["mean_rank"]]))
    refs = []
    for label in stats.references.values:
        if label in stats.references.main:
            m = stats.references.main[label]
            refs.append([Cell(label), Cell("—"), Cell(fmt_number(m), m), Cell("reference")] + ([Cell("—")] if with_ranks else []))
    return Table("Main score", [h for h, _ in cols], [list(r) for r in zip(*(c for _, c in cols))], refs)


def _notes(stats: TableStats) -> list[str]:
    main = stats.main
    if main is None:
        return [f"No main score for this table: {stats.why_none}. Objectives are not ranked or tested."]
    direction = "higher is better" if main.higher_is_better else "lower is better"
    source = "named by the suite" if main.source == "suite" else "declared by its evaluation"
    notes = [f"Main score: {main.description} ({main.pattern}; {direction}; {source})."
             + (f" Note: {main.note}." if main.note else "")]
    det = stats.detectable
    if det is not None:
        text = (f"Smallest difference these seeds can detect (two-sided t-test, α = {ALPHA}, power {POWER}, "
                f"n = {det.n} seeds per objective, pooled seed std {fmt_number(det.pooled_std)}): {fmt_number(det.mdd)}")
        if det.mdd_holm is not None:
            text += f"; at Holm's first step over the {det.pairs} pairs (α = {ALPHA}/{det.pairs}): {fmt_number(det.mdd_holm)}"
        notes.append(text + ". A smaller true difference mostly reads \"n.s.\": n.s. means not resolved, not equal.")
    else:
        notes.append("No objective has two seeds with a main score: no test and no detectable difference.")
    fr = stats.friedman
    if fr is not None:
        text = f"Mean rank over {len(fr.tasks)} task{'s' if len(fr.tasks) != 1 else ''} ({', '.join(fr.tasks)}; 1 = best)"
        if not math.isnan(fr.p_value):
            text += (f": Friedman χ² = {fr.statistic:.2f}, p = {fmt_p(fr.p_value)}; Nemenyi critical difference "
                     f"{fr.cd:.2f} (α = {ALPHA}): mean ranks closer than that are not distinguishable")
        elif fr.note:
            text += f": {fr.note}"
        if fr.dropped_tasks:
            text += f". Left out (missing for some objective): {', '.join(fr.dropped_tasks)}"
        notes.append(text + ".")
    return notes


def _pairwise_table(stats: TableStats) -> Table | None:
    pw = stats.pairwise
    if pw.empty:
        return None
    rows = []
    for r in pw.itertuples(index=False):
        diff = r.mean_a - r.mean_b
        rows.append([Cell(r.objective_a), Cell(r.objective_b), Cell(fmt_cell(r.mean_a, math.nan, 1), _value(r.mean_a)),
                     Cell(fmt_cell(r.mean_b, math.nan, 1), _value(r.mean_b)),
                     Cell("—" if math.isnan(diff) else fmt_number(diff, like=max(abs(r.mean_a), abs(r.mean_b))), _value(diff)),
                     Cell(fmt_p(r.p_value), _value(r.p_value)), Cell(fmt_p(r.p_holm), _value(r.p_holm), bool(r.significant)),
                     Cell("yes" if r.significant else "no" if not math.isnan(r.p_holm) else "n<2")])
    headers = ["objective a", "objective b", "main score a", "main score b", "a − b", "p (Welch)", "p (Holm)", f"p (Holm) < {ALPHA}"]
    return Table("Every pair (main score)", headers, rows)


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def tuning_table(store: RunStore, dataset: str, encoder: str, order: list[str]) -> Table | None:
    """Chosen values, budget and tuning seeds of each objective of a table (from the final jobs' records)."""
    finals = [r for r in store.runs if (r.dataset, r.encoder) == (dataset, encoder) and (r.tuned or any(r.tuning.values()))]
    tune_runs = [r for r in store.tuning if (r.dataset, r.encoder) == (dataset, encoder)]
    if not finals and not tune_runs:
        return None
    selected_by = {id(r): m for r, (m, _) in zip(store.tuning, tuning_scores(store))}
    keys = list(dict.fromkeys(k for r in finals for k in r.tuned)) or list(dict.fromkeys(k for r in tune_runs for k in r.trial))
    objectives = [o for o in order if any(r.objective == o for r in finals + tune_runs)]
    objectives += sorted({r.objective for r in finals + tune_runs} - set(objectives))
    rows = []
    for o in objectives:
        mine = [r for r in finals if r.objective == o]
        tuned = Counter(json.dumps(r.tuned, sort_keys=True, default=str) for r in mine)
        chosen = json.loads(tuned.most_common(1)[0][0]) if tuned else {}
        trials_run = len({json.dumps(r.trial, sort_keys=True, default=str) for r in tune_runs if r.objective == o})
        declared = Counter(r.tuning.get("trials") for r in mine if r.tuning.get("trials") is not None)
        seeds = Counter(tuple(r.tuning.get("seeds") or ()) for r in mine if r.tuning.get("seeds"))
        metric = Counter(r.tuning.get("metric") for r in mine if r.tuning.get("metric"))
        metric = metric or Counter(selected_by[id(r)] for r in tune_runs if r.objective == o and selected_by[id(r)])
        budget = declared.most_common(1)[0][0] if declared else None
        cells = [Cell(o)] + [Cell(_fmt_value(chosen[k]) if k in chosen else "—",
                                  float(chosen[k]) if isinstance(chosen.get(k), (int, float)) and not isinstance(chosen.get(k), bool) else None)
                             for k in keys]
        trials_text = f"{budget}" if budget is not None else "—"
        if trials_run and trials_run != budget:
            trials_text += f" ({trials_run} configurations found)"
        cells += [Cell(trials_text, float(budget) if budget is not None else None),
                  Cell(", ".join(str(s) for s in seeds.most_common(1)[0][0]) if seeds else "—"),
                  Cell(metric.most_common(1)[0][0] if metric else "—")]
        rows.append(cells)
    headers = ["objective"] + [f"chosen {k}" for k in keys] + ["trials per objective", "tuning seeds", "selected by (validation)"]
    return Table("Tuning: chosen values and budget", headers, rows)


def sections(agg: Aggregate, store: RunStore) -> list[Section]:
    metrics = store.metrics
    out = []
    for (dataset, encoder), stats in agg.tables.items():
        rows = agg.summary[(agg.summary["dataset"] == dataset) & (agg.summary["encoder"] == encoder)]
        position = {o: i for i, o in enumerate(rows["objective"])}
        rows = rows.iloc[[position[o] for o in stats.order]].reset_index(drop=True)
        objective = [Cell(o) for o in rows["objective"]]
        n = [
            Cell(f"{ok} (+{failed} failed)" if failed else f"{ok}", float(ok))
            for ok, failed in zip(rows["n_ok"], rows["n_failed"])
        ]
        lead = [("objective", objective), ("n", n)]
        section = Section(dataset, encoder, stats.main)
        if stats.main is not None:
            section.main = _main_table(rows, lead, stats)
        section.notes = _notes(stats)
        by_group = {g: [m for m in metrics.values() if m.group == g] for g in TITLES}
        details = _per_evaluation(TITLES["gap"], rows, by_group["gap"], lead, stats)
        details += _per_evaluation(TITLES["downstream"], rows, by_group["downstream"], lead, stats)
        train = _metric_table(TITLES["train"], rows, by_group["train"], lead, stats)
        details += [train] if train is not None else []
        pw = _pairwise_table(stats)
        details += [pw] if pw is not None else []
        section.details = details
        section.tuning = tuning_table(store, dataset, encoder, stats.order)
        out.append(section)
    return out
