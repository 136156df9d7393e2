"""The leaderboard: every ``result.json`` of a suite's runs -> tables, plots and CSV.

``build_leaderboard(runs_dir, out)`` writes into ``out`` (default ``leaderboard/<suite>``):

- ``results.csv``: one row per job (objective, encoder, dataset, seed, status, then a column per
  metric named ``<evaluation>.<key>[.<key>...]``), failed jobs included with their status;
- ``summary.csv``: per (dataset, encoder, objective): rank, n_ok, n_failed, the main score's
  mean/std/n, Welch's p against the top row, then ``<metric>.mean|std|n`` (ok jobs only);
- ``README.md`` (tabulate) and ``index.html`` (standalone, sortable): gap, downstream and training
  tables per (dataset, encoder), failed jobs, skipped evaluations, provenance, and the plots
  (``*.png``, embedded in the page as data URIs).

The main score and the significance test are documented in ``harness.leaderboard.aggregate``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Iterable

from harness.errors import HarnessError

FORMATS = ("md", "html", "csv")
__all__ = ["build_leaderboard", "FORMATS"]


def _default_out(suite: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", suite).strip(".-") or "suite"
    return Path("leaderboard") / name


def build_leaderboard(
    runs_dir: str | Path,
    out: str | Path | None = None,
    formats: Iterable[str] = FORMATS,
    command: str | None = None,
) -> Path:
    """Aggregate the results under ``runs_dir`` and write the requested formats; returns the output dir.

    Bad input (no such directory, no ``result.json``, a corrupt one) raises a one-line ``HarnessError``.
    ``command`` is the command line printed on the page (default: the equivalent ``harness leaderboard``).
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise HarnessError(f"formats: unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")

    from harness.leaderboard.aggregate import aggregate
    from harness.leaderboard.load import load_runs

    store = load_runs(runs_dir)
    out_dir = Path(out) if out is not None else _default_out(store.suite)
    if command is None:
        args = ["harness", "leaderboard", str(runs_dir), "--out", str(out_dir)]
        if set(formats) != set(FORMATS):
            args += ["--format", ",".join(formats)]
        command = shlex.join(args)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"{out_dir}: cannot create the output directory: {exc.strerror}") from None

    results = store.frame()
    agg = aggregate(results, store.metrics)
    if "csv" in formats:
        results.to_csv(out_dir / "results.csv", index=False)
        agg.summary.to_csv(out_dir / "summary.csv", index=False)
    if "md" in formats or "html" in formats:
        from harness.leaderboard.plots import make_plots
        from harness.leaderboard.provenance import provenance
        from harness.leaderboard.tables import sections

        plots = make_plots(store, results, agg, out_dir)
        secs = sections(agg, store.metrics)
        prov = provenance(store, command)
        if "md" in formats:
            from harness.leaderboard.markdown import render_readme

            (out_dir / "README.md").write_text(render_readme(store, prov, secs, plots), encoding="utf-8")
        if "html" in formats:
            from harness.leaderboard.html import render_page

            (out_dir / "index.html").write_text(render_page(store, prov, secs, plots, out_dir), encoding="utf-8")
    return out_dir
