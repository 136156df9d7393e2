"""A metric against an encoder param: ``param_sweep.png`` (e.g. centroid distance against embed_dim).

When the encoders of a dataset's runs are one plugin that differ in exactly one param, and that
param is a number, distinct per encoder (``embed_dim: 32, 64, 128``), the page plots the gap
metrics against it. The train settings an encoder's jobs share (its ``encoders[].train``
overrides, e.g. a batch-size axis) count as params named ``train.<field>``; settings that differ
among one encoder's jobs (an ``untrained`` row's ``steps: 0``) do not, nor do bookkeeping settings
(``checkpoint_every``, ``log_every``, ``gap_curve``). When several train settings vary and one is
the batch size (a warm-up scaled with it), the batch size is the axis. The page plots the gap
metrics (centroid distance, linear separability: the ``gap`` evaluation's columns) against it: one
line per objective, the mean over the jobs that finished with ± one sample std as error bars, x
read from each job's record (``job.encoder.params``). Published numbers (``harness.leaderboard.published``),
when given, are overlaid as hollow markers labelled "published". No such encoders, no figure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.leaderboard.aggregate import Aggregate
from harness.leaderboard.load import RunStore
from harness.leaderboard.plotdata import drawable
from harness.leaderboard.plots import (LABEL_SIZE, LEGEND_SIZE, TITLE_SIZE, Plot, _colors, _figure, _linestyles, _markers,
                                       _save, _text, _title, plot_order)

FILE = "param_sweep.png"
AXIS = "train.batch_size"  # preferred when several train settings vary together with it
IGNORED_TRAIN = ("checkpoint_every", "log_every", "gap_curve")  # never an axis: they change no trained number
LEAVES = ("centroid_distance", "linear_separability")  # the gap evaluation's columns plotted, in panel order


def encoder_spec(run) -> tuple[str, dict[str, Any]]:
    """(plugin name, params) of a run's encoder, as its job record holds them."""
    spec = run.job.get("encoder")
    if not isinstance(spec, dict):
        return "", {}
    params = spec.get("params")
    return str(spec.get("name")), params if isinstance(params, dict) else {}


def encoder_params(store: RunStore) -> dict[tuple[str, str], dict[str, Any]]:
    """(dataset, encoder label) -> the encoder's params, as its first final job records them."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for run in store.runs:
        out.setdefault((run.dataset, run.encoder), encoder_spec(run)[1])
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sweep_param(specs: dict[str, tuple[str, dict[str, Any]]]) -> str | None:
    """The one param in which encoders (label -> (plugin, params)) of one plugin differ, when it is a
    number distinct for each; None otherwise (fewer than 2 encoders, other differences, ties)."""
    if len(specs) < 2 or len({name for name, _ in specs.values()}) > 1:
        return None
    params = [p for _, p in specs.values()]
    names = sorted(set().union(*(p.keys() for p in params)))
    varying = [k for k in names if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in params}) > 1]
    if len(varying) > 1 and AXIS in varying and all(k.startswith("train.") for k in varying):
        varying = [AXIS]  # a batch-size axis whose other settings follow it (a warm-up over the same pairs)
    if len(varying) != 1:
        return None
    values = [p.get(varying[0]) for p in params]
    if not all(_number(v) for v in values) or len(set(values)) != len(values):
        return None
    return varying[0]


def _shared_train(runs: list) -> dict[str, Any]:
    """``{"train.<field>": value}`` for the train settings all of ``runs`` share (bookkeeping
    settings that change no trained number, ``IGNORED_TRAIN``, left out)."""
    trains = [run.job.get("train") if isinstance(run.job.get("train"), dict) else {} for run in runs]
    keys = (set(trains[0]).intersection(*trains[1:]) if trains else set()) - set(IGNORED_TRAIN)
    same = [k for k in sorted(keys) if len({json.dumps(t[k], sort_keys=True, default=str) for t in trains}) == 1]
    return {f"train.{k}": trains[0][k] for k in same}


def sweeps(store: RunStore) -> dict[str, tuple[str, dict[str, float]]]:
    """dataset -> (the swept param, {encoder label: its value}) for each dataset whose encoders sweep one."""
    by_dataset: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {}
    runs_of: dict[tuple[str, str], list] = {}
    for run in store.runs:
        by_dataset.setdefault(run.dataset, {}).setdefault(run.encoder, encoder_spec(run))
        runs_of.setdefault((run.dataset, run.encoder), []).append(run)
    for dataset, specs in by_dataset.items():
        for encoder, (name, params) in specs.items():
            specs[encoder] = (name, {**params, **_shared_train(runs_of[(dataset, encoder)])})
    out = {}
    for dataset, specs in sorted(by_dataset.items()):
        param = sweep_param(specs)
        if param is not None:
            out[dataset] = (param, {enc: float(p[param]) for enc, (_, p) in specs.items()})
    return out


def sweep_data(results: pd.DataFrame, xs: dict[str, float], dataset: str, column: str) -> pd.DataFrame:
    """Per objective and x: mean, sample std and n of ``column`` over the ok jobs of ``dataset``
    (x = the encoder's value in ``xs``), sorted by objective and x."""
    rows = []
    ok = results[(results["dataset"] == dataset) & (results["status"] == "ok")]
    for (objective, encoder), jobs in ok.groupby(["objective", "encoder"], sort=True):
        if encoder not in xs or column not in jobs:
            continue
        vals = pd.to_numeric(jobs[column], errors="coerce").to_numpy(float)
        vals = vals[np.isfinite(vals)]
        with np.errstate(all="ignore"):
            rows.append({"objective": objective, "encoder": encoder, "x": xs[encoder],
                         "mean": float(vals.mean()) if len(vals) else math.nan,
                         "std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan, "n": len(vals)})
    frame = pd.DataFrame(rows, columns=["objective", "encoder", "x", "mean", "std", "n"])
    return frame.sort_values(["objective", "x"], kind="stable").reset_index(drop=True)


def _axis(param: str) -> str:
    """The x-axis name of a swept param: an encoder param, or a train setting of the encoder's jobs."""
    return f"train setting {param[6:]}" if param.startswith("train.") else f"encoder param {param}"


def _span(ns: pd.Series) -> str:
    lo, hi = int(ns.min()), int(ns.max())
    return f"{lo}" if lo == hi else f"{lo}–{hi}"


def _legend(ax, n: int) -> None:
    """``plots._legend`` with our lines before the published points (matplotlib lists the points first)."""
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: labels[i].endswith(": published"))
    where = ({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "borderaxespad": 0, "frameon": False} if n > 5
             else {"loc": "best"})
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=LEGEND_SIZE, **where)


def _column(store: RunStore, leaf: str) -> str | None:
    cands = [m for m in store.metrics.values() if m.leaf == leaf]
    best = [m for m in cands if m.plugin == "gap" and not m.middle] or cands
    return best[0].column if best else None


def sweep_plot(store: RunStore, agg: Aggregate, out: Path, overlay: pd.DataFrame | None = None) -> Plot | None:
    """Draw ``param_sweep.png``; ``overlay``: published points (dataset, encoder, objective, column, value)."""
    found = sweeps(store)
    columns = [(leaf, c) for leaf in LEAVES if (c := _column(store, leaf)) is not None]
    if not found or not columns:
        return None
    order = plot_order(agg)
    names = order + sorted({o for o in agg.results["objective"] if o not in order})
    colors, markers, styles = _colors(names), _markers(names), _linestyles(names)
    panels = [(dataset, leaf, column) for dataset in found for leaf, column in columns]
    fig, axes = _figure(len(panels), len(columns), (7.6, 4.6))
    drew = False
    for ax, (dataset, leaf, column) in zip(axes, panels):
        param, xs = found[dataset]
        data = sweep_data(agg.results, xs, dataset, column)
        shown = 0
        for objective, line in data.groupby("objective", sort=False):
            line = line[[drawable(m) for m in line["mean"]]]
            if line.empty:
                continue
            err = [s if drawable(s) else 0.0 for s in line["std"]]
            ax.errorbar(line["x"], line["mean"], yerr=err, color=colors[objective], marker=markers[objective],
                        linestyle=styles[objective], capsize=3, markersize=6, linewidth=1.5,
                        label=_text(f"{objective} (n={_span(line['n'])})", 50))
            shown += 1
            drew = True
        if overlay is not None and not overlay.empty:
            pts = overlay[(overlay["dataset"] == dataset) & (overlay["column"] == column)]
            for objective, group in pts.groupby("objective", sort=False):
                x = [xs[e] for e in group["encoder"] if e in xs]
                y = [v for e, v in zip(group["encoder"], group["value"]) if e in xs]
                if x and all(drawable(v) for v in y):
                    color = colors.get(objective, "#333333")
                    ax.scatter(x, y, s=60, facecolors="none", edgecolors=color, linewidths=1.5,
                               marker=markers.get(objective, "o"), label=_text(f"{objective}: published", 50))
                    shown += 1
        values = sorted(set(xs.values()))
        if all(v > 0 for v in values):
            ax.set_xscale("log", base=2)
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
        display = store.metrics[column].display
        ax.set_xlabel(_text(_axis(param)), fontsize=LABEL_SIZE)
        ax.set_ylabel(_text(f"{display} ({column})"), fontsize=LABEL_SIZE)
        ax.set_title(_title(f"{display} against {param}: {dataset}", 44), fontsize=TITLE_SIZE)
        ax.tick_params(labelsize=LEGEND_SIZE + 1)
        ax.grid(alpha=0.3)
        if shown:
            _legend(ax, shown)  # ours first, then the published points
    if not drew:
        return None
    _save(fig, out / FILE)
    params = ", ".join(sorted({p for p, _ in found.values()}))
    axes_text = ", ".join(sorted({_axis(p) for p, _ in found.values()}))
    return Plot(FILE, f"Gap metrics against {params}",
                f"x: {axes_text} (from each job's record); y: the gap metric. One line per objective: "
                "the mean over the replicates that finished, error bars ± one sample std (our runs). Hollow markers, "
                "labelled published, are the published numbers for the same objective and x, from another setting.")
