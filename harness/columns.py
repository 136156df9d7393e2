"""Metric columns: a job's nested metrics as dotted columns, and column patterns with ``*``.

A column is ``<evaluation>.<key>[.<key>...]`` (e.g. ``zeroshot_classification.shape.top1``); a
pattern may put ``*`` for one component (``retrieval.*.image_to_text_r1``: every retrieval set).
Main scores, the tuning metric and the leaderboard all name columns this way.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator


def flatten(tree: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], float]]:
    """(keys, value) for every numeric leaf of a nested dict; None is NaN; strings, lists, booleans are left out."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from flatten(value, prefix + (str(key),))
    elif tree is None:
        yield prefix, math.nan
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, float(tree)


def matches(pattern: str, column: str) -> bool:
    """``pattern`` (dotted, a component may be '*') matches ``column`` component by component."""
    p, c = pattern.split("."), column.split(".")
    return len(p) == len(c) and all(a == "*" or a == b for a, b in zip(p, c))


def pattern_values(metrics: dict[str, Any], pattern: str) -> list[float]:
    """The finite values of every column of ``metrics`` (a job's nested metrics) matching ``pattern``."""
    values = [v for keys, v in flatten(metrics) if matches(pattern, ".".join(keys))]
    return [v for v in values if math.isfinite(v)]


def first_mean(columns: Iterable[tuple[str, float]], patterns: Iterable[str]) -> tuple[int, float] | None:
    """(index, mean) of the first of ``patterns`` (taken in order, lazily) that matches a finite value
    among ``columns`` ((dotted column, value) pairs), the mean over its matching finite values; None
    when no pattern does.

    The one rule by which a tuning trial is scored (``harness.tuning.trial_score``) and by which the
    leaderboard shows that score (``harness.leaderboard.aggregate.tuning_scores``).
    """
    columns = list(columns)
    for i, pattern in enumerate(patterns):
        values = [v for c, v in columns if matches(pattern, c) and math.isfinite(v)]
        if values:
            return i, sum(values) / len(values)
    return None
