"""The gap over training (jobs run with ``train: {gap_curve: K}``): ``gap_curve.png`` and a table.

Per (dataset, encoder, objective), from each ok job's ``gap`` records in ``log.jsonl``
(``harness.training.gapcurve``: a fixed set of training pairs measured at K evenly spaced points):

- the figure: centroid distance (and linear separability) against epochs of training (pairs seen /
  training-split size), one line per (objective, encoder), the mean over its replicates at each point;
- the table: the centroid distance before training and at the end (mean ± sample std over
  replicates), and the *epochs to halve*: per replicate, the first measured epoch at which the
  centroid distance is at most half its value before training; the cell shows the median over
  replicates and how many reached it (``2.0 (5/5)``; ``— (0/5)`` when none did within the budget;
  ``n/a (no gap at step 0)`` when no replicate had a gap to halve, e.g. towers that start identical).

The threshold is relative (half the starting gap), so no absolute "closed" value is assumed; the
resolution is the curve's spacing (the budget / (K - 1)).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from harness.leaderboard.aggregate import natural_key
from harness.leaderboard.load import RunStore
from harness.leaderboard.plotdata import drawable, read_gap_curve
from harness.leaderboard.plots import (LABEL_SIZE, LEGEND_SIZE, TITLE_SIZE, Plot, _colors, _figure, _linestyles, _save,
                                       _text, _title)
from harness.leaderboard.published import Part
from harness.leaderboard.tables import Cell, Table, fmt_cell

FILE = "gap_curve.png"
PANELS = ("centroid_distance", "linear_separability")
HALF = 0.5  # a replicate's gap counts as halved at its first point <= HALF x its value before training


def curves(store: RunStore) -> dict[tuple[str, str, str], list[dict[str, list[tuple[float, float]]]]]:
    """(dataset, encoder, objective) -> per ok job: {metric: [(epoch, value)] sorted by step}."""
    out: dict[tuple[str, str, str], list[dict[str, list[tuple[float, float]]]]] = {}
    for run in store.runs:
        if run.status != "ok":
            continue
        found = read_gap_curve(run.dir / "log.jsonl")
        if "centroid_distance" not in found:
            continue
        job = {name: [(epoch, value) for _, epoch, value in sorted(points)] for name, points in found.items()}
        out.setdefault((run.dataset, run.encoder, run.objective), []).append(job)
    return out


def has_start(points: list[tuple[float, float]]) -> bool:
    """Whether the curve starts at epoch 0 with a gap to halve (a positive value)."""
    return bool(points) and points[0][0] == 0 and points[0][1] > 0


def epochs_to_halve(points: list[tuple[float, float]]) -> float:
    """The first epoch whose value is at most ``HALF`` x the value at epoch 0 (NaN if none is, or the
    curve has no positive value at epoch 0: nothing to halve)."""
    if not has_start(points):
        return math.nan
    start = points[0][1]
    return next((epoch for epoch, value in points[1:] if value <= HALF * start), math.nan)


def _mean_sd(values: list[float]) -> str:
    """``mean ± sample std`` of the finite values, in the page's cell format (``tables.fmt_cell``)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    return fmt_cell(float(v.mean()) if len(v) else math.nan, float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v))


def curve_table(found) -> Table:
    rows = []
    for (dataset, encoder, objective), jobs in sorted(found.items(), key=lambda kv: (kv[0][0], natural_key(kv[0][1]), kv[0][2])):
        cd = [job["centroid_distance"] for job in jobs]
        start = [c[0][1] for c in cd if c and c[0][0] == 0]
        end = [c[-1][1] for c in cd if c]
        halves = [epochs_to_halve(c) for c in cd if has_start(c)]  # replicates with a gap at step 0
        reached = [h for h in halves if math.isfinite(h)]
        median = float(np.median(reached)) if reached else math.nan
        text = (f"{median:.3g} ({len(reached)}/{len(halves)})" if reached else f"— (0/{len(halves)})" if halves
                else "n/a (no gap at step 0)")
        last = max((c[-1][0] for c in cd if c), default=math.nan)
        rows.append([Cell(dataset), Cell(encoder), Cell(objective), Cell(str(len(jobs)), len(jobs)),
                     Cell(_mean_sd(start)), Cell(_mean_sd(end)), Cell(text, median if reached else None),
                     Cell(f"{last:.3g}", last)])
    headers = ["dataset", "encoder", "objective", "n", "centroid distance at step 0", "at the end",
               "epochs to halve (median, reached)", "epochs trained"]
    return Table("The gap over training", headers, rows)


def curve_plot(found, out: Path) -> Plot | None:
    datasets = sorted({d for d, _, _ in found})
    panels = [(d, m) for d in datasets for m in PANELS if any(m in job for (dd, _, _), jobs in found.items() if dd == d for job in jobs)]
    keys = sorted({f"{o} | {e}" for _, e, o in found}, key=natural_key)
    colors, styles = _colors(keys), _linestyles(keys)
    fig, axes = _figure(len(panels), 2, (6.8, 4.6))
    drew = False
    for ax, (dataset, metric) in zip(axes, panels):
        positive = True
        for (d, encoder, objective), jobs in sorted(found.items(), key=lambda kv: natural_key(f"{kv[0][2]} | {kv[0][1]}")):
            if d != dataset:
                continue
            series = [dict(job[metric]) for job in jobs if metric in job]
            if not series:
                continue
            epochs = sorted(set().union(*(set(s) for s in series)))  # each point: the replicates that have it
            mean = [float(np.mean([s[x] for s in series if x in s])) for x in epochs]
            keep = [(x, y) for x, y in zip(epochs, mean) if drawable(x, y)]
            if not keep:
                continue
            positive = positive and all(x > 0 for x, _ in keep[1:])
            key = f"{objective} | {encoder}"
            ax.plot([x for x, _ in keep], [y for _, y in keep], color=colors[key], linestyle=styles[key], marker="o",
                    markersize=2.5, linewidth=1.4, label=_text(f"{key} (n={len(series)})", 50))
            drew = True
        ax.set_xlabel("epochs of training (pairs seen / training pairs)", fontsize=LABEL_SIZE)
        ax.set_ylabel(_text(metric.replace("_", " ")), fontsize=LABEL_SIZE)
        ax.set_title(_title(f"{metric.replace('_', ' ')} over training: {dataset}", 44), fontsize=TITLE_SIZE)
        ax.tick_params(labelsize=LEGEND_SIZE + 1)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=LEGEND_SIZE - 1, loc="best")
    if not drew:
        return None
    _save(fig, out / FILE)
    return Plot(FILE, "The gap over training",
                "Measured on a fixed set of up to 256 training pairs at evenly spaced points of each job "
                "(harness.training.gapcurve); one line per objective and encoder, the mean over its replicates.")


def curve_part(store: RunStore, out: Path) -> Part | None:
    """The page section of the gap curves, or None when no job recorded one."""
    found = curves(store)
    if not found:
        return None
    from harness.leaderboard.plots import _guarded

    plot = _guarded("gap_curve", curve_plot, found, out)
    lines = ["Jobs trained with `gap_curve` measured the gap of a fixed set of training pairs during training. "
             f"Epochs to halve: per replicate, the first measured epoch at which the centroid distance is at most "
             f"{HALF:g} of its value before training; the median over the replicates that reached it, and how many did."]
    return Part("The gap over training", lines, [curve_table(found)], [], [plot] if plot is not None else [])
