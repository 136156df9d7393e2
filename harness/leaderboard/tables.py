"""The tables a page shows, as plain cells: rendered to Markdown (``markdown.py``) and HTML (``html.py``).

Per (dataset, encoder), a ``Section``: first the answer (the main-score table: objective, mean, its
bootstrap 95% CI, rank interval, tier, replicates and the planned contrast against the reference
objective; then the notes of ``notes.py``), then the details (gap tables, one downstream table per
evaluation, a training table, the contrasts with their power, every pair's test, the tuning
choices). Rows are objectives in order of their mean; that order is not a ranking: only tiers are
(objectives within a tier are not resolved from the tier's best). A metric cell is ``mean ± std``
over ok jobs (just the mean when n = 1); the best mean of a detail column is bold when the metric
has a direction (ties all bold), in the main table the means of tier 1 are; headers carry ↑ (higher
is better) or ↓ (lower). Reference rows (chance, oracles...) follow the objectives in a table of
their own kind (``Table.references``): marked, never bold, never ranked or sorted.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from harness.leaderboard.aggregate import Aggregate, MainScore, TableStats, tuning_scores
from harness.leaderboard.load import Metric, RunStore
from harness.leaderboard.notes import across_notes, table_notes
from harness.leaderboard.qualify import RULE, declared_headline, rule_rows
from harness.leaderboard.resample import fmt_rank_interval
from harness.leaderboard.stats import ALPHA, TEST

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
    across: list[str] = field(default_factory=list)  # the page's "Across tables" notes (on the first section only)

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


def _main_table(rows: pd.DataFrame, stats: TableStats) -> Table:
    """The answer: objective, mean, bootstrap CI, rank interval, tier first; then replicates and the contrast."""
    main, head = stats.main, stats.head
    assert main is not None
    means = rows["main_score.mean"].astype(float)
    like = [abs(m) if math.isfinite(m) else None for m in means]
    tier1 = set(head.tier(1))
    cols = [
        ("objective", [Cell(o) for o in rows["objective"]]),
        (f"main score {main.arrow} (mean)",
         [Cell(fmt_number(m) if math.isfinite(m) else "—" if math.isnan(m) else str(m), _value(m), o in tier1)
          for o, m in zip(rows["objective"], means)]),
        ("95% CI (bootstrap)", [Cell(_interval(lo, hi, lk), _value(lo)) for lo, hi, lk in zip(rows["ci_low"], rows["ci_high"], like)]),
        ("rank interval (95%)", [Cell(fmt_rank_interval(lo, hi), _value(lo)) for lo, hi in zip(rows["rank_low"], rows["rank_high"])]),
        ("tier", [Cell("—" if pd.isna(t) else str(int(t)), None if pd.isna(t) else float(t)) for t in rows["tier"]]),
        ("replicates", [Cell(f"{r} (+{f} failed)" if f else f"{r}", float(r)) for r, f in zip(rows["replicates"], rows["n_failed"])]),
    ]
    if head.reference is not None:
        cols.append((f"vs {head.reference} (paired t, Holm)",
                     [Cell(t, _value(p)) for t, p in zip(rows["vs_reference"], rows["p_holm_vs_reference"])]))
    chance = stats.references.main.get(CHANCE)
    if chance is not None:
        near = near_chance(means, rows["ci_low"], rows["ci_high"], chance, head.detectable.mdd if head.detectable else None)
        cols.append(("near chance?", [Cell("≈ chance" if n else "") for n in near]))
    refs = []
    for label in stats.references.values:
        if label in stats.references.main:
            m = stats.references.main[label]
            refs.append([Cell(label), Cell(fmt_number(m), m), Cell("—"), Cell("—"), Cell("reference"), Cell("—")]
                        + ([Cell("—")] if head.reference is not None else []) + ([Cell("")] if chance is not None else []))
    return Table("Main score", [h for h, _ in cols], [list(r) for r in zip(*(c for _, c in cols))], refs)


CHANCE = "chance"  # the reference row an evaluation names chance (harness.builtin.evaluations.references)


def near_chance(means, lows, highs, chance: float, detectable: float | None) -> list[bool]:
    """Per objective: is its main score within the detectable difference of chance (when the table
    has one), or is chance inside its bootstrap CI? Then the page marks it "≈ chance": its number is
    not evidence that it learned anything."""
    out = []
    for m, lo, hi in zip(means, lows, highs):
        m, lo, hi = float(m), float(lo), float(hi)
        within = detectable is not None and math.isfinite(detectable) and abs(m - chance) <= detectable
        inside = math.isfinite(lo) and math.isfinite(hi) and lo <= chance <= hi
        out.append(bool(math.isfinite(m) and (within or inside)))
    return out


def _interval(low: float, high: float, like: float | None = None) -> str:
    if math.isnan(low) or math.isnan(high):
        return "—"
    return f"{fmt_number(low, like=like)} to {fmt_number(high, like=like)}"


def _p_cells(p_value: float, p_holm: float, significant: bool, note: str) -> list[Cell]:
    tested = not math.isnan(p_value)
    return [Cell(fmt_p(p_value), _value(p_value)), Cell(fmt_p(p_holm), _value(p_holm), bool(significant)),
            Cell("yes" if significant else "no" if tested else "no test"), Cell(note or "")]


def _contrast_table(stats: TableStats) -> Table | None:
    con, head = stats.head.contrasts, stats.head
    if con.empty:
        return None
    rows = []
    for r in con.itertuples(index=False):
        like = max(abs(r.mean), abs(r.mean_reference)) if math.isfinite(r.mean) and math.isfinite(r.mean_reference) else None
        rows.append([Cell(r.objective), Cell(str(r.n), float(r.n)),
                     Cell("—" if math.isnan(r.diff) else fmt_number(r.diff, like=like), _value(r.diff)),
                     Cell(_interval(r.ci_low, r.ci_high, like), _value(r.ci_low)), *_p_cells(r.p_value, r.p_holm, r.significant, "")[:3],
                     Cell("—" if math.isnan(r.min_detectable_diff_holm) else fmt_number(r.min_detectable_diff_holm, like=like),
                          _value(r.min_detectable_diff_holm)),
                     Cell("—" if pd.isna(r.n_needed) else str(int(r.n_needed)), None if pd.isna(r.n_needed) else float(r.n_needed)),
                     Cell(r.note or "")])
    headers = ["objective", "replicates", f"− {head.reference}", "95% CI (t)", f"p ({TEST})", "p (Holm)", f"p (Holm) < {ALPHA}",
               "detectable at Holm's α/m", "replicates to resolve it", "note"]
    return Table(f"Planned contrasts against {head.reference} (paired by replicate)", headers, rows)


def rule_table(rows: pd.DataFrame, stats: TableStats, runs) -> Table | None:
    """Each zero-shot task against the headline rule (``qualify.RULE``), and whether the world declares it."""
    chance = {col: v[0] for col, v in stats.references.values.get("chance", {}).items()}
    rules = rule_rows(rows, chance, declared_headline(runs))
    if not rules:
        return None
    yes = {True: "yes", False: "no"}
    out = []
    for r in rules:
        out.append([Cell(r.task), Cell(yes[r.headline]), Cell(fmt_number(r.chance), _value(r.chance)),
                    Cell(f"{fmt_number(r.best)} ({r.best_objective})", r.best),
                    Cell(f"{fmt_number(r.worst)} ({r.worst_objective})", r.worst),
                    Cell(fmt_number(r.spread), r.spread), Cell(yes[r.learned]), Cell(yes[r.unsaturated]),
                    Cell(yes[r.qualifies])])
    headers = ["task", "in the headline", "chance", "best trained", "worst trained", "spread", "learned",
               "not saturated", "qualifies"]
    declared = [r.task for r in rules if r.headline]
    which = (f"The world declares its headline, the tasks the main score averages: {', '.join(declared)}. "
             if declared else "The world declares no headline: the main score averages every attribute task. ")
    return Table(f"Zero-shot tasks against the headline rule. {which}{RULE}", headers, out)


def _pairwise_table(stats: TableStats) -> Table | None:
    pw = stats.pairwise
    if pw.empty:
        return None
    rows = []
    for r in pw.itertuples(index=False):
        like = max(abs(r.mean_a), abs(r.mean_b)) if math.isfinite(r.mean_a) and math.isfinite(r.mean_b) else None
        rows.append([Cell(r.objective_a), Cell(r.objective_b), Cell(str(r.n), float(r.n)),
                     Cell("—" if math.isnan(r.diff) else fmt_number(r.diff, like=like), _value(r.diff)),
                     Cell(_interval(r.ci_low, r.ci_high, like), _value(r.ci_low)),
                     *_p_cells(r.p_value, r.p_holm, r.significant, r.note)])
    headers = ["objective a", "objective b", "replicates", "a − b", "95% CI (t)", f"p ({TEST})", "p (Holm)", f"p (Holm) < {ALPHA}", "note"]
    return Table("Every pair (main score, paired by replicate)", headers, rows)


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
            section.main = _main_table(rows, stats)
        section.notes = table_notes(stats)
        by_group = {g: [m for m in metrics.values() if m.group == g] for g in TITLES}
        runs = [r for r in store.runs if r.dataset == dataset and r.encoder == encoder]
        rule = rule_table(rows, stats, runs)
        details = [rule] if rule is not None else []
        details += _per_evaluation(TITLES["gap"], rows, by_group["gap"], lead, stats)
        details += _per_evaluation(TITLES["downstream"], rows, by_group["downstream"], lead, stats)
        train = _metric_table(TITLES["train"], rows, by_group["train"], lead, stats)
        details += [train] if train is not None else []
        details += [t for t in (_contrast_table(stats), _pairwise_table(stats)) if t is not None]
        section.details = details
        section.tuning = tuning_table(store, dataset, encoder, stats.order)
        out.append(section)
    if out:
        out[0].across = across_notes(agg)
    return out
