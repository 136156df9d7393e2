"""The leaderboard's figures, drawn with matplotlib's Agg canvas (no pyplot, no display) as PNG files.

- ``gap_vs_score.png``: centroid distance ||mean(x) - mean(y)|| against the main score, one point per
  seed and the mean ± std (error bars) per objective, a panel per (dataset, encoder).
- ``pca_<dataset>_<encoder>.png``: the first two principal components of one seed's image and
  pair-tower embeddings (text, or the second image tower in the same-modality control), a panel
  per objective, from ``embeddings/<set>.npz`` (``retrieval.npz`` preferred, else the first set
  with ``pair_emb``) when the suite saved embeddings.
- ``loss_curves.png``: training loss against step from each job's ``log.jsonl``, a line per seed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.leaderboard.aggregate import Aggregate
from harness.leaderboard.load import Metric, Run, RunStore

MAX_POINTS = 400  # per tower in a PCA panel
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class Plot:
    file: str  # name inside the output directory
    title: str
    caption: str


def _text(s: str) -> str:
    """A plugin string made safe for matplotlib (no mathtext)."""
    return s.replace("$", r"\$")


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


def _colors(objectives: list[str]) -> dict[str, str]:
    return {o: COLORS[i % len(COLORS)] for i, o in enumerate(objectives)}


def _centroid_column(metrics: dict[str, Metric]) -> str | None:
    cands = [m for m in metrics.values() if m.leaf == "centroid_distance"]
    best = [m for m in cands if m.plugin == "gap" and not m.middle] or cands
    return best[0].column if best else None


def gap_vs_score(results: pd.DataFrame, agg: Aggregate, metrics: dict[str, Metric], order: list[str], out: Path) -> Plot | None:
    gap_col = _centroid_column(metrics)
    if gap_col is None:
        return None
    data = results.assign(_score=agg.job_scores)
    data = data[(data["status"] == "ok") & data[gap_col].notna() & data["_score"].notna()]
    groups = [(key, g) for key, g in data.groupby(["dataset", "encoder"], sort=True)]
    if not groups:
        return None
    colors = _colors(order)
    fig, axes = _figure(len(groups), 2, (6.0, 4.2))
    for ax, ((dataset, encoder), g) in zip(axes, groups):
        for objective in [o for o in order if o in set(g["objective"])]:
            pts = g[g["objective"] == objective]
            x, y = pts[gap_col].to_numpy(float), pts["_score"].to_numpy(float)
            c = colors[objective]
            ax.scatter(x, y, color=c, alpha=0.35, s=18, linewidths=0)
            xerr = x.std(ddof=1) if len(x) > 1 else 0.0
            yerr = y.std(ddof=1) if len(y) > 1 else 0.0
            ax.errorbar(x.mean(), y.mean(), xerr=xerr, yerr=yerr, fmt="o", color=c, capsize=3, label=_text(f"{objective} (n={len(x)})"))
        ax.set_xlabel(_text(f"centroid distance ({gap_col}) ↓"))
        rule = agg.main_scores.get((dataset, encoder))
        ax.set_ylabel(_text(f"main score: {rule.description}" if rule else "main score"), fontsize=8)
        ax.set_title(_text(f"{dataset} · {encoder}"), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    _save(fig, out / "gap_vs_score.png")
    return Plot("gap_vs_score.png", "Centroid distance vs main score",
                "Each faint point is one seed; the solid point and error bars are the mean ± std over seeds.")


def _embedding_file(run: Run) -> Path | None:
    emb_dir = run.dir / "embeddings"
    if not emb_dir.is_dir():
        return None
    files = sorted(emb_dir.glob("*.npz"), key=lambda p: (p.name != "retrieval.npz", p.name))
    for f in files:
        try:
            with np.load(f) as z:
                if "pair_emb" in z.files and "image_emb" in z.files:
                    return f
        except (OSError, ValueError):
            continue
    return None


def _pca2(image: np.ndarray, pair: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project both towers' embeddings on the top-2 principal components of their union.

    The components are the top eigenvectors of the (d, d) scatter matrix C^T C of the centred
    union C (cheaper than an SVD of C when there are many more points than dimensions).
    """
    both = np.concatenate([image, pair]).astype(np.float64)
    centred = both - both.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)  # eigenvalues ascending
    top = vecs[:, ::-1][:, :2]
    proj = centred @ top
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    return proj[: len(image)], proj[len(image):]


def pca_plots(store: RunStore, order: list[str], out: Path) -> list[Plot]:
    plots, used = [], set()
    groups: dict[tuple[str, str], list[tuple[str, Run, Path]]] = {}
    for objective in order:  # one seed per objective: the lowest that saved embeddings
        ok = sorted((r for r in store.runs if r.status == "ok" and r.objective == objective), key=lambda r: r.seed)
        for key in sorted({(r.dataset, r.encoder) for r in ok}):
            for run in (r for r in ok if (r.dataset, r.encoder) == key):
                f = _embedding_file(run)
                if f is not None:
                    groups.setdefault(key, []).append((objective, run, f))
                    break
    rng = np.random.default_rng(0)
    for (dataset, encoder), panels in sorted(groups.items()):
        fig, axes = _figure(len(panels), 4, (3.6, 3.4))
        for ax, (objective, run, f) in zip(axes, panels):
            with np.load(f) as z:
                image, pair = z["image_emb"], z["pair_emb"]
            xi, xp = _pca2(image, pair)
            for pts, name, c in ((xi, "image tower", "#1f77b4"), (xp, "pair tower", "#d62728")):
                if len(pts) > MAX_POINTS:
                    pts = pts[rng.choice(len(pts), MAX_POINTS, replace=False)]
                ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.5, color=c, linewidths=0, label=name)
            ax.set_title(_text(f"{objective}\nseed {run.seed}, {f.stem}"), fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.legend(fontsize=6, loc="best", markerscale=2)
        name = f"pca_{_slug(dataset)}_{_slug(encoder)}"
        while name in used:
            name += "_"
        used.add(name)
        _save(fig, out / f"{name}.png")
        plots.append(Plot(f"{name}.png", f"PCA of embeddings: {dataset} · {encoder}",
                          "First two principal components of one seed's image-tower and pair-tower (text, or the second "
                          "image tower in the same-modality control) embeddings, fitted on both together."))
    return plots


def _read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    steps, losses = [], []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return np.array([]), np.array([])
    for line in lines:
        try:
            rec = json.loads(line)
            step, loss = float(rec["step"]), float(rec["loss"])
        except (ValueError, KeyError, TypeError):
            continue  # a partial or foreign line: the curve is illustrative, skip it
        steps.append(step)
        losses.append(loss)
    return np.array(steps), np.array(losses)


def loss_curves(store: RunStore, order: list[str], out: Path) -> Plot | None:
    curves: dict[tuple[str, str], list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for run in store.runs:
        if run.status != "ok":
            continue
        steps, losses = _read_log(run.dir / "log.jsonl")
        if len(steps):
            curves.setdefault((run.dataset, run.encoder), []).append((run.objective, steps, losses))
    if not curves:
        return None
    colors = _colors(order)
    fig, axes = _figure(len(curves), 2, (6.0, 4.0))
    for ax, ((dataset, encoder), lines) in zip(axes, sorted(curves.items())):
        seen = set()
        for objective, steps, losses in sorted(lines, key=lambda t: order.index(t[0])):
            label = _text(objective) if objective not in seen else None
            seen.add(objective)
            ax.plot(steps, losses, color=colors[objective], alpha=0.7, linewidth=1.2, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (sum of the objective's terms)", fontsize=8)
        ax.set_title(_text(f"{dataset} · {encoder}"), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    _save(fig, out / "loss_curves.png")
    return Plot("loss_curves.png", "Training loss curves", "One line per seed, from each job's log.jsonl.")


def make_plots(store: RunStore, results: pd.DataFrame, agg: Aggregate, out: Path) -> list[Plot]:
    """Write every applicable figure into ``out``; returns them in page order."""
    order = list(dict.fromkeys(agg.summary.sort_values(["rank", "objective"])["objective"]))
    plots = [gap_vs_score(results, agg, store.metrics, order, out)]
    plots += pca_plots(store, order, out)
    plots.append(loss_curves(store, order, out))
    return [p for p in plots if p is not None]
