"""The tables a page shows, as plain cells: rendered to Markdown (``markdown.py``) and HTML (``html.py``).

Per (dataset, encoder): gap tables, a main-score table (with its significance against the top
row), one downstream table per evaluation and a small training table; rows are objectives in main-score order. A cell
is ``mean ± std`` over ok seeds (just the mean when n = 1); the best mean of a column is bold when
the metric has a direction (ties all bold); headers carry ↑ (higher is better) or ↓ (lower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.leaderboard.aggregate import Aggregate, MainScore
from harness.leaderboard.load import Metric

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


@dataclass
class Section:
    dataset: str
    encoder: str
    main_score: MainScore | None
    tables: list[Table] = field(default_factory=list)


def fmt_number(x: float, like: float | None = None) -> str:
    """3 decimals below 10, 1 decimal below 100, none above, 3 significant digits below 0.01
    (``like`` picks the scale, e.g. the mean for its std)."""
    scale = abs(like if like is not None and not math.isnan(like) else x)
    if 0 < scale < 0.01:
        return f"{x:.2e}"
    if scale >= 100:
        return f"{x:.0f}"
    if scale >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


def fmt_cell(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "—"
    if n < 2 or math.isnan(std):
        return fmt_number(mean)
    return f"{fmt_number(mean)} ± {fmt_number(std, like=mean)}"


def _bold_mask(means: pd.Series, higher_is_better: bool | None) -> pd.Series:
    if higher_is_better is None or means.notna().sum() == 0:
        return pd.Series(False, index=means.index)
    best = means.max() if higher_is_better else means.min()
    return means.notna() & (means.round(12) == round(best, 12))


def _stat_column(rows: pd.DataFrame, prefix: str, higher_is_better: bool | None) -> list[Cell]:
    means = rows[f"{prefix}.mean"].astype(float)
    bold = _bold_mask(means, higher_is_better)
    return [
        Cell(fmt_cell(m, s, int(n)), None if math.isnan(m) else float(m), bool(b))
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


def _metric_table(title: str, rows: pd.DataFrame, metrics: list[Metric], lead: list[tuple[str, list[Cell]]]) -> Table | None:
    metrics = [m for m in metrics if rows[f"{m.column}.n"].sum() > 0]
    if not metrics and len(lead) <= 2:
        return None
    columns = [cells for _, cells in lead] + [_stat_column(rows, m.column, m.higher_is_better) for m in metrics]
    headers = [h for h, _ in lead] + headers_for(metrics)
    return Table(title, headers, [list(r) for r in zip(*columns)])


def _per_evaluation(title: str, rows: pd.DataFrame, metrics: list[Metric], lead) -> list[Table]:
    """One table per evaluation, so headers stay short (``shape Zero-shot top-1``, not prefixed)."""
    tables = []
    for evaluation in dict.fromkeys(m.evaluation for m in metrics):
        table = _metric_table(f"{title}: {evaluation}", rows, [m for m in metrics if m.evaluation == evaluation], lead)
        if table is not None:
            tables.append(table)
    return tables


def sections(agg: Aggregate, metrics: dict[str, Metric]) -> list[Section]:
    out = []
    for (dataset, encoder), rows in agg.summary.groupby(["dataset", "encoder"], sort=True):
        rows = rows.sort_values("rank")
        rule = agg.main_scores.get((dataset, encoder))
        objective = [Cell(o) for o in rows["objective"]]
        n = [
            Cell(f"{ok} (+{failed} failed)" if failed else f"{ok}", float(ok))
            for ok, failed in zip(rows["n_ok"], rows["n_failed"])
        ]
        lead = [("objective", objective), ("n", n)]
        section = Section(dataset, encoder, rule)
        by_group = {g: [m for m in metrics.values() if m.group == g] for g in TITLES}
        tables = _per_evaluation(TITLES["gap"], rows, by_group["gap"], lead)
        if rule is not None:
            main = list(lead) + [("main score ↑", _stat_column(rows, "main_score", True))]
            sig = [Cell(s, None if math.isnan(p) else float(p)) for s, p in zip(rows["significance"], rows["welch_p_vs_top"])]
            main.append(("vs top (Welch)", sig))
            tables.append(Table("Main score", [h for h, _ in main], [list(r) for r in zip(*(c for _, c in main))]))
        tables += _per_evaluation(TITLES["downstream"], rows, by_group["downstream"], lead)
        train = _metric_table(TITLES["train"], rows, by_group["train"], lead)
        section.tables = tables + ([train] if train is not None else [])
        out.append(section)
    return out
