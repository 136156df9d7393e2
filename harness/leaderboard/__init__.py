"""The leaderboard: every ``result.json`` of a suite's runs -> tables, plots and CSV.

``build_leaderboard(runs_dir, out)`` writes into ``out`` (default ``leaderboard/<suite>``):

- ``results.csv``: one row per final job: ``objective, encoder, dataset, seed, replicate, dataset_seed,
  status, train.lr, main_score``, then ``<evaluation>.<key>[.<key>...]`` per metric; failed jobs with
  their status (main_score NaN). ``replicate``: the job's world draw (its seed in runs of seeds).
- ``summary.csv``: per (dataset, encoder, objective): ``rank`` (order of the means; empty without a main
  score), ``trained, n_ok, n_failed, replicates, main_score.mean|std|n, ci_low, ci_high, rank_low,
  rank_high, tier, vs_reference, diff_vs_reference, p_vs_reference, p_holm_vs_reference, mean_rank``,
  then ``<metric>.mean|std|n`` (ok jobs only). Objectives only: no reference row is ever here.
- ``pairwise.csv``: ``dataset, encoder, objective_a, objective_b, n, mean_a, mean_b, diff, ci_low, ci_high,
  test, p_value, p_holm, significant``, then ``p_wilcoxon, note, sd_diff, n_needed`` (every pair, paired
  by replicate: ``harness.leaderboard.stats.pairwise``).
- ``contrasts.csv``: each trained objective against the table's reference objective
  (``harness.leaderboard.stats.contrasts``), with its detectable difference and ``n_needed``.
- ``tables.csv``: per (dataset, encoder): the main score (pattern, columns, direction, source, description
  or why there is none), tier 1, the reference objective, the detectable difference, the mixed model's
  variance components, Friedman over replicates, Kendall's tau against another encoder of the dataset.
- ``across.csv``: Friedman's test across tables and Kendall's tau for every pair of encoders of a dataset.
- ``references.csv``: ``dataset, encoder, reference, metric, mean, std, n``, one row per reference
  row and metric (plus ``metric = main_score`` when the reference has every main-score column).
- ``tuning.csv`` (tuned suites): the results columns, ``trial.<name>..., metric, score`` (the
  validation column selected by and its value), then the tuning jobs' metric columns.
- ``published.csv`` (``--published FILE``): ours beside a file's published numbers (``.published``).
- ``board.json``: the facts ``build_index`` shows for this suite.
- ``README.md`` (tabulate) and ``index.html`` (standalone, sortable): the answer first (main-score
  table with CI, rank interval and tier, critical-difference diagram, gap-vs-score plot), then how to
  read it, provenance, the details per (dataset, encoder), tuning, the other plots, failed jobs and
  skipped evaluations.

CSV cells that a spreadsheet would run are neutralised (``write_csv``); library warnings stay off
the terminal (``_quiet``); jobs of an earlier configuration of the suite are left out (one line).

``build_index(root)`` writes ``root/index.html`` linking every suite page under ``root``;
``build_leaderboard`` refreshes it (in ``out``'s parent) by itself when that parent is named
``leaderboard`` (``index=True``/``False`` forces it either way).

The main score and the statistics: ``harness.leaderboard.aggregate``, ``harness.leaderboard.stats``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from harness.errors import HarnessError, printable

FORMATS = ("md", "html", "csv")
__all__ = ["build_leaderboard", "build_index", "FORMATS"]
PLOT_FILES = ("cd_diagram.png", "gap_vs_score.png", "tuning.png", "loss_curves.png", "param_sweep.png", "gap_curve.png")


def _default_out(suite: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", suite).strip(".-") or "suite"
    return Path("leaderboard") / name


def build_leaderboard(
    runs_dir: str | Path,
    out: str | Path | None = None,
    formats: Iterable[str] = FORMATS,
    command: str | None = None,
    index: bool | None = None,
    published: str | Path | None = None,
) -> Path:
    """Aggregate the results under ``runs_dir`` and write the requested formats; returns the output dir.

    Bad input (no such directory, no ``result.json``, a corrupt or hostile one) raises a one-line
    ``HarnessError``. ``command`` is the command line printed on the page (default: the equivalent
    ``harness leaderboard``). ``index=True`` also rewrites ``<out>/../index.html`` (``build_index``);
    the default (None) does so when ``out``'s parent directory is named ``leaderboard``, as in
    ``harness leaderboard runs/gap --out leaderboard/gap``, so the top-level index stays current.
    ``published``: a CSV of published numbers shown beside the runs' (``harness.leaderboard.published``).
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise HarnessError(f"formats: unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")

    with _quiet():
        return _build(runs_dir, out, formats, command, index, published)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """numpy's, pandas', scipy's and matplotlib's warnings (and matplotlib's log records) go nowhere
    while the leaderboard builds, not to the terminal; ``HARNESS_DEBUG=1`` lets them through."""
    if os.environ.get("HARNESS_DEBUG"):
        yield
        return
    logger = logging.getLogger("matplotlib")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    logger.handlers, logger.propagate = [logging.NullHandler()], False
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


def _build(runs_dir, out, formats: list[str], command: str | None, index: bool | None, published=None) -> Path:
    from harness.leaderboard.aggregate import aggregate
    from harness.leaderboard.load import load_runs
    from harness.leaderboard.published import read_published

    pub = read_published(published) if published is not None else None  # bad input stops here, before any output
    store = load_runs(runs_dir)
    if store.left_out:
        print(f"note: left out {store.left_out} job(s) of an earlier configuration of suite "
              f"{printable(store.suite)!r} (not among the jobs of its last `harness run`, in .suite.json)", file=sys.stderr)
    out_dir = Path(out) if out is not None else _default_out(store.suite)
    if command is None:
        args = ["harness", "leaderboard", str(runs_dir), "--out", str(out_dir)]
        if set(formats) != set(FORMATS):
            args += ["--format", ",".join(formats)]
        if published is not None:
            args += ["--published", str(published)]
        command = shlex.join(args)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"{out_dir}: cannot create the output directory: {exc.strerror}") from None

    from harness.leaderboard.provenance import provenance

    agg = aggregate(store)
    prov = provenance(store, command)
    if store.left_out:
        prov.append(("left out", f"{store.left_out} job(s) of an earlier configuration of the suite (not in .suite.json)"))
    if pub is not None:
        prov.append(("published numbers", f"{pub.path} (sha256 {pub.sha256[:16]}, {len(pub.rows)} rows)"))
    try:
        _write(store, agg, prov, out_dir, formats, pub)
    except OSError as exc:
        raise HarnessError(f"{out_dir}: cannot write the leaderboard: {exc.strerror or exc}") from None
    if index or (index is None and out_dir.resolve().parent.name == "leaderboard"):
        build_index(out_dir.parent)
    return out_dir


def _write(store, agg, prov, out_dir: Path, formats: list[str], pub=None) -> None:
    from harness.leaderboard.index import board_facts
    from harness.leaderboard.published import comparison, page_extras

    compared = comparison(store, agg.results, pub) if pub is not None else None

    (out_dir / "board.json").write_text(json.dumps(board_facts(store, agg, prov, formats), indent=2) + "\n", encoding="utf-8")
    if "csv" in formats:
        write_csv(agg.results, out_dir / "results.csv")
        write_csv(agg.summary, out_dir / "summary.csv")
        write_csv(agg.pairwise, out_dir / "pairwise.csv")
        write_csv(agg.contrasts, out_dir / "contrasts.csv")
        write_csv(agg.across_frame(), out_dir / "across.csv")
        write_csv(agg.table_frame, out_dir / "tables.csv")
        write_csv(agg.references, out_dir / "references.csv")
        tuning = tuning_frame(store)
        if tuning is not None:
            write_csv(tuning, out_dir / "tuning.csv")
        else:
            (out_dir / "tuning.csv").unlink(missing_ok=True)  # stale from an earlier, tuned build
        if compared is not None:
            write_csv(compared, out_dir / "published.csv")
        else:
            (out_dir / "published.csv").unlink(missing_ok=True)
    if "md" in formats or "html" in formats:
        from harness.leaderboard.plots import make_plots
        from harness.leaderboard.tables import sections

        for stale in [*PLOT_FILES, *(p.name for p in out_dir.glob("pca_*.png"))]:
            (out_dir / stale).unlink(missing_ok=True)
        plots = make_plots(store, agg, out_dir)
        part, more = page_extras(store, agg, out_dir, pub, compared)
        plots.update(more)
        from harness.leaderboard.progress import curve_part

        part = [p for p in (part, curve_part(store, out_dir)) if p is not None]
        secs = sections(agg, store)
        if "md" in formats:
            from harness.leaderboard.markdown import render_readme

            (out_dir / "README.md").write_text(render_readme(store, prov, secs, plots, part), encoding="utf-8")
        if "html" in formats:
            from harness.leaderboard.html import render_page

            (out_dir / "index.html").write_text(render_page(store, prov, secs, plots, out_dir, part), encoding="utf-8")


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", re.IGNORECASE)


def safe_cell(value):
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a leading ``'``
    (unless it is a plain number such as ``-0.5``), control characters are shown escaped; anything
    that is not text (numbers, booleans, NaN) is returned as it is."""
    if not isinstance(value, str):
        return value
    if value.startswith(FORMULA_START) and not _NUMBER.fullmatch(value):
        value = "'" + value
    return printable(value)


def write_csv(frame, path: Path) -> None:
    """``frame.to_csv(path)`` with every text cell and header made safe (``safe_cell``): OWASP's rule
    against spreadsheet formula injection (a leading ``'`` before ``=``, ``+``, ``-``, ``@``, tab, CR),
    numbers untouched, control characters (terminal escapes) shown escaped."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    frame = frame.copy()
    frame.columns = [safe_cell(str(c)) for c in frame.columns]
    for column in range(frame.shape[1]):
        series = frame.iloc[:, column]
        if not (is_numeric_dtype(series.dtype) or is_bool_dtype(series.dtype)):  # object, str, category
            frame.isetitem(column, series.astype(object).map(safe_cell))
    frame.to_csv(path, index=False)


def tuning_frame(store):
    """tuning.csv, or None when the runs hold no tuning job."""
    if not store.tuning:
        return None
    import math

    import pandas as pd

    from harness.leaderboard.aggregate import tuning_scores
    from harness.leaderboard.load import ID_COLUMNS, LR_COLUMN

    frame = store.tuning_frame()
    keys = list(dict.fromkeys(k for r in store.tuning for k in r.trial))
    extra = {f"trial.{k}": [r.trial.get(k) for r in store.tuning] for k in keys}
    metric, score = zip(*tuning_scores(store))
    lead = frame[ID_COLUMNS + [LR_COLUMN]]
    rest = frame.drop(columns=ID_COLUMNS + [LR_COLUMN])
    middle = pd.DataFrame({**extra, "metric": list(metric), "score": list(score)}, index=frame.index)
    return pd.concat([lead, middle, rest], axis=1)


def build_index(root: str | Path = "leaderboard") -> Path:
    """Write ``root/index.html``: a sortable table linking every suite page under ``root``.

    A suite is a direct subdirectory holding ``board.json`` (written by ``build_leaderboard``) or at
    least an ``index.html``/``README.md``. Returns the path written. A hand-written ``root/README.md``
    is left alone.
    """
    from harness.leaderboard.index import write_index

    return write_index(Path(root))
