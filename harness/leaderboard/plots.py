"""The leaderboard's figures, drawn with matplotlib's Agg canvas (no pyplot, no display) as PNG files.

- ``gap_vs_score.png``: centroid distance ||mean(x) - mean(y)|| against the main score, one point per
  seed and the mean ± std (error bars) per objective, a panel per (dataset, encoder).
- ``cd_diagram.png``: Demsar's critical-difference diagram per (dataset, encoder), drawn by
  ``scikit_posthocs.critical_difference_diagram``: mean rank over the table's replicates (1 = best),
  objectives joined by a bar when Nemenyi's test cannot tell them apart, and the CD as a scale bar.
- ``tuning.png``: each objective's validation score against the learning rate tried (log x axis),
  mean over tuning seeds, the chosen value starred, a panel per (dataset, encoder).
- ``pca_<dataset>_<encoder>.png``: the first two principal components of one seed's image and
  pair-tower embeddings (text, or the second image tower in the same-modality control), a panel
  per objective, from ``embeddings/<set>.npz`` (``retrieval.npz`` preferred, else the first set
  with ``pair_emb``) when the suite saved embeddings.
- ``loss_curves.png``: training loss against step from each job's ``log.jsonl``, a line per seed.
- ``probes_<dataset>_<encoder>.png``: when each attribute is learned: the attribute probes over
  training (``harness.diagnostics``, the ``probe`` records of ``log.jsonl``), mean over seeds per
  objective, a panel per attribute.

What a figure reads from a job's directory (logs, embeddings) is read as hostile data, bounded,
damaged files skipped (``harness.leaderboard.plotdata``). Values that are not finite are left out
of a figure, and a figure that still cannot be drawn (values beyond what matplotlib can place) is
skipped with one line on stderr: a figure never stops the leaderboard.
"""

from __future__ import annotations

import math
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import one_line, printable
from harness.leaderboard.aggregate import Aggregate, tuning_scores
from harness.leaderboard.load import Metric, Run, RunStore
from harness.leaderboard.plotdata import (MAX_POINTS, MAX_TRIES, drawable, drawable_mask, embeddings, pca2, read_log,
                                         read_probes)
LABEL_SIZE = 11  # axis labels
TITLE_SIZE = 12
LEGEND_SIZE = 9
_pca2 = pca2  # its name before it moved to plotdata
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Plot:
    file: str  # name inside the output directory
    title: str
    caption: str


def _short(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _text(s: str, limit: int = 120) -> str:
    """A plugin string made safe for matplotlib (no mathtext) and short enough to draw."""
    return _short(s, limit).replace("$", r"\$")


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:40] or "x"


def _figure(panels: int, ncols: int, size: tuple[float, float]):
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, panels))
    nrows = math.ceil(panels / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=100, metadata={"Software": None})


def _save_unique(fig, out: Path, base: str, used: set[str]) -> str:
    """Save ``fig`` as ``<base>.png`` (``_`` appended until the name is new in ``used``); returns the file name."""
    name = base
    while name in used:
        name += "_"
    used.add(name)
    _save(fig, out / f"{name}.png")
    return f"{name}.png"


MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]


def _colors(objectives: list[str]) -> dict[str, str]:
    return {o: COLORS[i % len(COLORS)] for i, o in enumerate(objectives)}


def _markers(objectives: list[str]) -> dict[str, str]:
    """A marker per objective that changes each time the colours run out, so no two objectives of a
    plot with more objectives than ``COLORS`` look alike (colour, marker) for up to 80 of them."""
    return {o: MARKERS[(i // len(COLORS)) % len(MARKERS)] for i, o in enumerate(objectives)}


def _linestyles(objectives: list[str]) -> dict[str, str]:
    """Likewise a line style per objective, for line plots."""
    return {o: LINESTYLES[(i // len(COLORS)) % len(LINESTYLES)] for i, o in enumerate(objectives)}


def _centroid_column(metrics: dict[str, Metric]) -> str | None:
    cands = [m for m in metrics.values() if m.leaf == "centroid_distance"]
    best = [m for m in cands if m.plugin == "gap" and not m.middle] or cands
    return best[0].column if best else None


def _legend(ax, n: int) -> None:
    """Inside the axes for a few entries, outside on the right for many (never over the points)."""
    if n > 5:
        ax.legend(fontsize=LEGEND_SIZE, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    else:
        ax.legend(fontsize=LEGEND_SIZE, loc="best")


def _wrap(text: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _title(text: str, width: int = 60) -> str:
    """A panel title wrapped to the panel's width (long dataset/encoder labels ran off the figure)."""
    return _wrap(_text(text, 240), width)


def gap_vs_score(results: pd.DataFrame, agg: Aggregate, metrics: dict[str, Metric], order: list[str], out: Path) -> Plot | None:
    gap_col = _centroid_column(metrics)
    if gap_col is None:
        return None
    data = results[(results["status"] == "ok") & results[gap_col].notna() & results["main_score"].notna()]
    data = data[drawable_mask(data[gap_col]) & drawable_mask(data["main_score"])]
    groups = [(key, g) for key, g in data.groupby(["dataset", "encoder"], sort=True)]
    if not groups:
        return None
    colors, markers = _colors(order), _markers(order)
    many = len(set(data["objective"])) > 5
    fig, axes = _figure(len(groups), 1 if many else 2, (8.5 if many else 6.5, 4.8))
    for ax, ((dataset, encoder), g) in zip(axes, groups):
        present = [o for o in order if o in set(g["objective"])]
        for objective in present:
            pts = g[g["objective"] == objective]
            x, y = pts[gap_col].to_numpy(float), pts["main_score"].to_numpy(float)
            c = colors[objective]
            ax.scatter(x, y, color=c, marker=markers[objective], alpha=0.35, s=22, linewidths=0)
            with np.errstate(all="ignore"):  # a huge spread overflows: then no error bar
                xerr = x.std(ddof=1) if len(x) > 1 else 0.0
                yerr = y.std(ddof=1) if len(y) > 1 else 0.0
                mx, my = x.mean(), y.mean()
            if not drawable(mx, my):
                continue
            xerr, yerr = (e if drawable(e) else 0.0 for e in (xerr, yerr))
            ax.errorbar(mx, my, xerr=xerr, yerr=yerr, fmt=markers[objective], color=c, capsize=3, markersize=7,
                        label=_text(f"{_short(objective, 40)} (n={len(x)})"))
        ax.set_xlabel(_text(f"gap: centroid distance ({gap_col}), lower = smaller gap"), fontsize=LABEL_SIZE)
        rule = agg.main_scores.get((dataset, encoder))
        ylabel = f"main score {rule.arrow}: {rule.description}" if rule else "main score"
        ax.set_ylabel(_text(_wrap(ylabel, 44)), fontsize=LABEL_SIZE)
        ax.set_title(_title(f"{dataset} · {encoder}"), fontsize=TITLE_SIZE)
        ax.tick_params(labelsize=LEGEND_SIZE + 1)
        ax.grid(alpha=0.3)
        _legend(ax, len(present))
    _save(fig, out / "gap_vs_score.png")
    return Plot("gap_vs_score.png", "Gap vs main score",
                "x: the modality gap (centroid distance, smaller to the left); y: the table's main score. Each faint "
                "point is one seed; the solid point and error bars are the mean ± std over seeds.")


def cd_diagram(agg: Aggregate, out: Path) -> Plot | None:
    """Critical-difference diagrams (scikit-posthocs) of the tables that have a Friedman test."""
    panels = [t for t in agg.tables.values()
              if t.friedman is not None and t.friedman.nemenyi is not None and not math.isnan(t.friedman.cd)]
    if not panels:
        return None
    import scikit_posthocs as sp
    from matplotlib.figure import Figure

    width_in = 10.0
    heights = [1.9 + 0.34 * len(t.friedman.objectives) for t in panels]
    fig = Figure(figsize=(width_in, sum(heights)), layout="constrained")
    axes = fig.subplots(len(panels), 1, squeeze=False, height_ratios=heights).ravel()
    for ax, t in zip(axes, panels):
        fr = t.friedman
        names = {o: _text(o if len(o) <= 28 else o[:27] + "…") for o in fr.objectives}
        while len(set(names.values())) < len(names):  # truncation made two labels equal: keep them apart
            seen: set[str] = set()
            for o in fr.objectives:
                if names[o] in seen:
                    names[o] += "'"
                seen.add(names[o])
        ranks = pd.Series({names[o]: r for o, r in fr.mean_ranks.items()})
        sig = fr.nemenyi.rename(index=names, columns=names)
        colors = _colors(t.order)
        sp.critical_difference_diagram(
            ranks, sig, ax=ax, alpha=0.05,
            label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
            label_props={"fontsize": LABEL_SIZE}, color_palette={names[o]: colors[o] for o in fr.objectives},
            crossbar_props={"linewidth": 3}, text_h_margin=0.05,
        )
        k = len(fr.objectives)
        # room for the labels beside the axis: a label's width as a fraction of the axes, turned into rank units
        chars = max(len(n) for n in names.values()) + 7
        frac = min(0.3, chars * LABEL_SIZE * 0.6 / 72 / (width_in - 0.4))
        pad = max(0.5, frac * (k - 1) / (1 - 2 * frac) + 0.2)
        ax.set_xlim(1 - pad, k + pad)
        # the CD as a scale bar above the tick labels (scikit-posthocs' own sits on them), from rank 1
        bottom, _ = ax.get_ylim()
        ax.plot([1, 1 + fr.cd], [1.3, 1.3], color="k", linewidth=3, clip_on=False)
        ax.text(1 + fr.cd / 2, 1.55, f"critical difference (Nemenyi) = {fr.cd:.2f}", ha="center", va="bottom",
                fontsize=LEGEND_SIZE + 1)
        ax.set_ylim(bottom, 2.2)
        ax.set_xticks(range(1, k + 1))
        ax.spines["top"].set_bounds(1, k)
        ax.tick_params(labelsize=LEGEND_SIZE + 1)
        p = "n/a" if math.isnan(fr.p_value) else (f"{fr.p_value:.3f}" if fr.p_value >= 0.001 else f"{fr.p_value:.1e}")
        ax.set_title(_title(f"{t.dataset} · {t.encoder}: mean rank over {len(fr.blocks)} {fr.kind} (1 = best); "
                            f"Friedman p = {p}", 90), fontsize=TITLE_SIZE)
    _save(fig, out / "cd_diagram.png")
    return Plot("cd_diagram.png", "Critical-difference diagram",
                "Mean rank of each trained objective over the table's replicates, independent world draws (1 = best; "
                "Demsar 2006). A thick bar joins "
                "objectives that Nemenyi's test cannot tell apart (α = 0.05); the bar labelled CD is the critical difference.")


def tuning_plot(store: RunStore, order: list[str], out: Path) -> Plot | None:
    """Validation score against learning rate for each objective's tuning trials (log x)."""
    chosen: dict[tuple[str, str, str], float] = {}
    for r in store.runs:
        lr = r.tuned.get("train.lr")
        if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 and drawable(1 / lr, lr):
            chosen.setdefault((r.dataset, r.encoder, r.objective), float(lr))
    points: dict[tuple[str, str], dict[str, list[tuple[float, float]]]] = {}
    metric_names: dict[tuple[str, str], set[str]] = {}
    for r, (metric, v) in zip(store.tuning, tuning_scores(store)):
        lr = r.trial.get("train.lr")
        if r.status != "ok" or not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0 or not drawable(v, lr, 1 / lr):
            continue
        points.setdefault((r.dataset, r.encoder), {}).setdefault(r.objective, []).append((float(lr), v))
        metric_names.setdefault((r.dataset, r.encoder), set()).add(metric)
    if not points:
        return None
    names = sorted({o for per in points.values() for o in per})
    ranked = [o for o in order if o in names] + [o for o in names if o not in order]
    colors, markers, styles = _colors(ranked), _markers(ranked), _linestyles(ranked)
    fig, axes = _figure(len(points), 2, (6.5, 4.4))
    for ax, ((dataset, encoder), per) in zip(axes, sorted(points.items())):
        for objective in sorted(per, key=lambda o: (order.index(o) if o in order else len(order), o)):
            pts = pd.DataFrame(per[objective], columns=["lr", "v"]).groupby("lr")["v"].mean()
            c = colors[objective]
            ax.plot(pts.index, pts.values, marker=markers[objective], linestyle=styles[objective], color=c,
                    label=_text(objective, 40), linewidth=1.5, markersize=5)
            lr = chosen.get((dataset, encoder, objective))
            if lr is not None and lr in pts.index:
                ax.plot([lr], [pts[lr]], marker="*", markersize=15, color=c, markeredgecolor="k", linestyle="none")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (train.lr, log scale)", fontsize=LABEL_SIZE)
        metric = ", ".join(sorted(metric_names[(dataset, encoder)]))
        ax.set_ylabel(_text(_wrap(f"validation score: {metric}", 40)), fontsize=LABEL_SIZE)
        ax.set_title(_title(f"{dataset} · {encoder}"), fontsize=TITLE_SIZE)
        ax.tick_params(labelsize=LEGEND_SIZE + 1)
        ax.grid(alpha=0.3, which="both")
        _legend(ax, len(per))
    _save(fig, out / "tuning.png")
    return Plot("tuning.png", "Tuning: validation score against learning rate",
                "One line per objective: the validation score of each learning rate tried (mean over tuning seeds); "
                "the star marks the value chosen for the final runs.")


def pca_plots(store: RunStore, order: list[str], out: Path) -> list[Plot]:
    plots, used = [], set()
    groups: dict[tuple[str, str], list[tuple[str, Run, Path]]] = {}
    for objective in order:  # one seed per objective: the lowest that saved embeddings
        ok = sorted((r for r in store.runs if r.status == "ok" and r.objective == objective), key=lambda r: r.seed)
        for key in sorted({(r.dataset, r.encoder) for r in ok}):
            for run in [r for r in ok if (r.dataset, r.encoder) == key][:MAX_TRIES]:
                found = embeddings(run)
                if found is None:
                    continue
                try:
                    projected = pca2(found[1], found[2])
                except (ValueError, np.linalg.LinAlgError):
                    continue
                groups.setdefault(key, []).append((objective, run, found[0], projected))
                break
    rng = np.random.default_rng(0)
    for (dataset, encoder), panels in sorted(groups.items()):
        fig, axes = _figure(len(panels), 4, (3.6, 3.4))
        for ax, (objective, run, f, (xi, xp)) in zip(axes, panels):
            for pts, name, c in ((xi, "image tower", "#1f77b4"), (xp, "pair tower", "#d62728")):
                if len(pts) > MAX_POINTS:
                    pts = pts[rng.choice(len(pts), MAX_POINTS, replace=False)]
                ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.5, color=c, linewidths=0, label=name)
            ax.set_title(_text(f"{_short(objective, 40)}\nseed {run.seed}, {f.stem}"), fontsize=LEGEND_SIZE + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("PC 1", fontsize=LEGEND_SIZE)
            ax.set_ylabel("PC 2", fontsize=LEGEND_SIZE)
            ax.legend(fontsize=LEGEND_SIZE - 1, loc="best", markerscale=2)
        name = _save_unique(fig, out, f"pca_{_slug(dataset)}_{_slug(encoder)}", used)
        plots.append(Plot(name, f"PCA of embeddings: {dataset} · {encoder}",
                          "First two principal components of one seed's image-tower and pair-tower (text, or the second "
                          "image tower in the same-modality control) embeddings, fitted on both together."))
    return plots


def loss_curves(store: RunStore, order: list[str], out: Path) -> Plot | None:
    curves: dict[tuple[str, str], list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for run in store.runs:
        if run.status != "ok":
            continue
        steps, losses = read_log(run.dir / "log.jsonl")
        if len(steps):
            curves.setdefault((run.dataset, run.encoder), []).append((run.objective, steps, losses))
    if not curves:
        return None
    colors, styles = _colors(order), _linestyles(order)
    fig, axes = _figure(len(curves), 2, (6.5, 4.4))
    for ax, ((dataset, encoder), lines) in zip(axes, sorted(curves.items())):
        seen = set()
        for objective, steps, losses in sorted(lines, key=lambda t: order.index(t[0])):
            label = _text(objective, 40) if objective not in seen else None
            seen.add(objective)
            ax.plot(steps, losses, color=colors[objective], linestyle=styles[objective], alpha=0.7, linewidth=1.2,
                    label=label)
        ax.set_xlabel("optimizer step", fontsize=LABEL_SIZE)
        ax.set_ylabel("training loss (sum of the terms)", fontsize=LABEL_SIZE)
        ax.set_title(_title(f"{dataset} · {encoder}"), fontsize=TITLE_SIZE)
        ax.grid(alpha=0.3)
        _legend(ax, len(seen))
    _save(fig, out / "loss_curves.png")
    return Plot("loss_curves.png", "Training loss curves", "One line per seed, from each job's log.jsonl.")


def probe_curves(store: RunStore, order: list[str], out: Path) -> list[Plot]:
    """One figure per (dataset, encoder): a panel per attribute, probe accuracy against step, a line per objective."""
    tables: dict[tuple[str, str], dict[str, dict[str, list[dict[float, float]]]]] = {}
    for run in store.runs:
        if run.status != "ok":
            continue
        for name, points in read_probes(run.dir / "log.jsonl").items():
            per = tables.setdefault((run.dataset, run.encoder), {}).setdefault(name, {})
            per.setdefault(run.objective, []).append(dict(points))
    plots, colors, markers, used = [], _colors(order), _markers(order), set()
    for (dataset, encoder), attributes in sorted(tables.items()):
        fig, axes = _figure(len(attributes), 4, (3.6, 3.0))
        for ax, (name, by_objective) in zip(axes, attributes.items()):
            for objective in sorted(by_objective, key=lambda o: order.index(o) if o in order else len(order)):
                runs = by_objective[objective]
                steps = sorted(set.intersection(*(set(r) for r in runs)))
                mean = [np.mean([r[s_] for r in runs]) for s_ in steps]
                ax.plot(steps, mean, marker=markers.get(objective, "o"), markersize=3, color=colors.get(objective, "#333333"),
                        label=_text(objective, 30))
            ax.set_title(name, fontsize=TITLE_SIZE)
            ax.set_xlabel("optimizer step", fontsize=LABEL_SIZE)
            ax.set_ylabel("probe accuracy", fontsize=LABEL_SIZE)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
        _legend(axes[len(attributes) - 1], len(order))
        name = _save_unique(fig, out, f"probes_{_slug(dataset)}_{_slug(encoder)}"[:80], used)
        plots.append(Plot(name, f"When each attribute is learned: {dataset} · {encoder}",
                          "Linear-probe accuracy of the image tower's embeddings on a probe set from the training "
                          "distribution, before training and after 1/4, 1/2, 3/4 and all steps (mean over seeds)."))
    return plots


def plot_order(agg: Aggregate) -> list[str]:
    """Objectives in the order of their best rank in any table (the colours follow it)."""
    order: list[str] = []
    for t in agg.tables.values():
        order += [o for o in t.order if o not in order]
    return order


def _guarded(name: str, draw, *args):
    """``draw(*args)``, or nothing (one line on stderr) when values defeat the drawing."""
    try:
        return draw(*args)
    except (ValueError, OverflowError, FloatingPointError, ZeroDivisionError, np.linalg.LinAlgError, RuntimeError) as exc:
        print(f"warning: figure {name} left out: {printable(one_line(exc, 200))}", file=sys.stderr)
        return None


def make_plots(store: RunStore, agg: Aggregate, out: Path) -> dict[str, Plot]:
    """Write every applicable figure into ``out``; returns {kind: Plot} for the kinds that apply:
    ``cd``, ``gap``, ``tuning``, ``pca:<file>``..., ``loss``, in page order."""
    order = plot_order(agg)
    plots: dict[str, Plot | None] = {
        "cd": _guarded("cd_diagram", cd_diagram, agg, out),
        "gap": _guarded("gap_vs_score", gap_vs_score, agg.results, agg, store.metrics, order, out),
        "tuning": _guarded("tuning", tuning_plot, store, order, out),
    }
    plots.update({f"probes:{p.file}": p for p in _guarded("probes", probe_curves, store, order, out) or []})
    plots.update({f"pca:{p.file}": p for p in _guarded("pca", pca_plots, store, order, out) or []})
    plots["loss"] = _guarded("loss_curves", loss_curves, store, order, out)
    return {k: p for k, p in plots.items() if p is not None}
