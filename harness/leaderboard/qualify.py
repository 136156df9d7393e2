"""Which zero-shot attribute tasks can carry a headline: the rule, per task of a table.

A headline made of what objectives can differ on averages only tasks that are

- **learned**: at least one trained objective's mean top-1 is at least chance + ``LEARNED_MARGIN``
  (chance: the table's ``chance`` reference row of that column), and
- **not saturated**: the worst trained objective's mean is at most ``SATURATED`` or the trained
  objectives' means spread (best - worst) by at least ``MIN_SPREAD``.

``rule_rows`` checks every ``zeroshot_classification.<task>.top1`` column of a table against the
rule and says whether the world declares the task in its headline (the dataset's ``headline``
param, read from the jobs); the page shows it next to the main table, so a reader sees whether the
headline the world declares obeys the rule. Trained objectives only (an untrained row neither
learns nor saturates anything).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

LEARNED_MARGIN = 0.20
SATURATED = 0.95
MIN_SPREAD = 0.05
PREFIX, SUFFIX = "zeroshot_classification.", ".top1"
RULE = (f"A task qualifies for the headline when some trained objective learns it (mean top-1 ≥ chance + "
        f"{LEARNED_MARGIN:.2f}) and it is not saturated (the worst trained objective's mean ≤ {SATURATED:.2f}, "
        f"or the trained objectives' means spread by ≥ {MIN_SPREAD:.2f}).")


@dataclass
class Rule:
    task: str
    headline: bool  # declared by the world
    chance: float
    best: float
    best_objective: str
    worst: float
    worst_objective: str

    @property
    def spread(self) -> float:
        return self.best - self.worst

    @property
    def learned(self) -> bool:
        return not math.isnan(self.chance) and self.best >= self.chance + LEARNED_MARGIN - 1e-12

    @property
    def unsaturated(self) -> bool:
        return self.worst <= SATURATED + 1e-12 or self.spread >= MIN_SPREAD - 1e-12

    @property
    def qualifies(self) -> bool:
        return self.learned and self.unsaturated


def declared_headline(runs) -> set[str]:
    """The tasks the table's world declares as its headline (the dataset's ``headline`` param)."""
    out: set[str] = set()
    for run in runs:
        params = (run.job.get("dataset") or {}).get("params") or {}
        headline = params.get("headline")
        if isinstance(headline, list):
            out |= {str(h) for h in headline}
    return out


def rule_rows(rows: pd.DataFrame, chance: dict[str, float], headline: set[str]) -> list[Rule]:
    """``rows``: the table's summary rows (``objective``, ``trained``, ``<metric>.mean``);
    ``chance``: column -> the chance row's mean. One ``Rule`` per zero-shot task column."""
    trained = rows[rows["trained"].astype(bool)] if "trained" in rows else rows
    out = []
    for column in rows.columns:
        if not (column.startswith(PREFIX) and column.endswith(SUFFIX + ".mean")):
            continue
        metric = column[: -len(".mean")]
        task = metric[len(PREFIX): -len(SUFFIX)]
        means = pd.to_numeric(trained[column], errors="coerce")
        ok = means.notna()
        if not ok.any():
            continue
        means, names = means[ok], trained["objective"][ok]
        best, worst = int(means.to_numpy().argmax()), int(means.to_numpy().argmin())
        out.append(Rule(task, task in headline, float(chance.get(metric, math.nan)),
                        float(means.iloc[best]), str(names.iloc[best]), float(means.iloc[worst]), str(names.iloc[worst])))
    return out
