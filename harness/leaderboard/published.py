"""Published numbers beside a suite's runs: ``harness leaderboard RUNS --published FILE``.

A published-numbers file (e.g. ``suites/paper-dims.published.csv``, kept next to its suite) is a
CSV read as plain data, never executed:

- a line starting with ``#`` is a comment (where the numbers come from, how the columns map);
- the header names ``objective`` (required: the objective label of the runs a row stands beside),
  ``encoder.<param>`` (any number: the row matches the encoders whose job record has that param at
  that value, e.g. ``encoder.embed_dim``), ``name`` (optional: what the source calls the objective),
  ``source`` (required: where the numbers come from, said on the page) and one column per metric: a
  ``results.csv`` metric column, or a pattern with ``*`` for one component (each job's mean over the
  matching columns first, as main scores do);
- a metric cell is a decimal number or empty (not reported): no NaN, no infinity, no formula.

Bounded: at most ``MAX_BYTES``, ``MAX_ROWS`` rows, ``MAX_COLUMNS`` columns, ``MAX_TEXT`` characters a
cell; a symbolic link, FIFO or device is refused (``harness.safefiles``). Bad input is one
``HarnessError`` line naming the file, the line and the field. No row may repeat another's objective
and encoder values.

The page's section (``Part``) shows, per dataset, each (encoder, objective) of the runs as two rows:
ours (mean ± sample std over the jobs that finished) and the published value as the file writes it;
``published.csv`` holds the same in long form.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.columns import matches
from harness.errors import HarnessError, printable
from harness.leaderboard.load import Metric, RunStore
from harness.leaderboard.sweep import encoder_params, sweep_plot
from harness.leaderboard.tables import ARROW, Cell, Table, fmt_cell

MAX_BYTES = 2**20
MAX_ROWS = 10_000
MAX_COLUMNS = 100
MAX_TEXT = 500
NUMBER = re.compile(r"[+-]?(\d{1,30}\.?\d{0,30}|\.\d{1,30})([eE][+-]?\d{1,3})?")
PARAM = re.compile(r"encoder\.([A-Za-z_][A-Za-z0-9_]{0,63})")
METRIC = re.compile(r"[^\s.*,\"'=]{1,100}(\.([^\s.*,\"'=]{1,100}|\*)){1,10}")
TEXT_COLUMNS = ("objective", "name", "source")


@dataclass(frozen=True)
class PublishedRow:
    line: int
    objective: str
    keys: dict[str, str]  # encoder param -> the cell's text
    name: str
    source: str
    values: dict[str, float]  # metric column or pattern -> value (NaN: not reported)
    texts: dict[str, str]  # the same, as the file writes it ("" when not reported)


@dataclass(frozen=True)
class Published:
    path: Path
    sha256: str
    keys: tuple[str, ...]  # encoder params a row matches on
    metrics: tuple[str, ...]  # metric columns or patterns, in file order
    rows: tuple[PublishedRow, ...]

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(r.source for r in self.rows))

    @property
    def objectives(self) -> list[str]:
        return list(dict.fromkeys(r.objective for r in self.rows))


def _fail(path: Path, why: str, line: int | None = None, name: str | None = None) -> HarnessError:
    where = "".join([f", line {line}" if line is not None else "", f", field {printable(name)!r}" if name is not None else ""])
    return HarnessError(f"{printable(str(path))}{where}: {why}")


def _text(path: Path) -> tuple[str, str]:
    from harness.safefiles import Refused, read_bytes

    try:
        data = read_bytes(path, MAX_BYTES)
    except FileNotFoundError:
        raise _fail(path, "no such file (expected a CSV of published numbers)") from None
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror or exc}") from None
    except Refused as exc:
        raise _fail(path, f"refused: {exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise _fail(path, "holds a NUL byte: not a text file")
    return text, hashlib.sha256(data).hexdigest()


def _header(path: Path, cells: list[str], line: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if len(cells) > MAX_COLUMNS:
        raise _fail(path, f"{len(cells)} columns (at most {MAX_COLUMNS})", line)
    keys, metrics, seen = [], [], set()
    for name in cells:
        if name in seen:
            raise _fail(path, "named twice in the header", line, name)
        seen.add(name)
        if name in TEXT_COLUMNS:
            continue
        if PARAM.fullmatch(name):
            keys.append(PARAM.fullmatch(name).group(1))
        elif METRIC.fullmatch(name) and name.count("*") <= 1 and not name.startswith("encoder."):
            metrics.append(name)
        else:
            raise _fail(path, "not a column of this format (objective, name, source, encoder.<param>, or a dotted "
                              "metric column such as gap.centroid_distance, one component may be *)", line, name)
    for required in ("objective", "source"):
        if required not in seen:
            raise _fail(path, "missing from the header", line, required)
    if not metrics:
        raise _fail(path, "the header names no metric column (such as gap.centroid_distance)", line)
    return tuple(keys), tuple(metrics)


def _number(path: Path, text: str, line: int, name: str) -> float:
    if not text:
        return math.nan
    if len(text) > 40 or not NUMBER.fullmatch(text):
        raise _fail(path, f"expected a number or an empty cell, got {printable(text[:40])!r}", line, name)
    value = float(text)
    if not math.isfinite(value):
        raise _fail(path, f"number out of range ({printable(text)})", line, name)
    return value


def _key(text: str) -> float | str:
    """An encoder value as a row's identity: 32 and 32.0 are one value."""
    return float(text) if NUMBER.fullmatch(text) else text


def read_published(path: str | Path) -> Published:
    """The file at ``path``, checked cell by cell; one ``HarnessError`` line on bad input."""
    path = Path(path)
    text, digest = _text(path)
    # comments become empty lines, so the reader's line numbers stay the file's
    lines = ["" if line.lstrip().startswith("#") else line for line in text.split("\n")]
    reader = csv.reader(io.StringIO("\n".join(lines), newline=""), strict=True)
    header: list[str] | None = None
    keys: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    rows: list[PublishedRow] = []
    seen: dict[tuple, int] = {}
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            cells = [c.strip() for c in cells]
            for name, cell in zip(header or cells, cells):
                if len(cell) > MAX_TEXT or "\n" in cell or "\r" in cell:
                    raise _fail(path, f"a cell of more than one line or over {MAX_TEXT} characters", line, name)
            if header is None:
                header, (keys, metrics) = cells, _header(path, cells, line)
                continue
            if len(cells) != len(header):
                raise _fail(path, f"{len(cells)} fields, the header has {len(header)}", line)
            if len(rows) >= MAX_ROWS:
                raise _fail(path, f"more than {MAX_ROWS} rows", line)
            row = dict(zip(header, cells))
            for required in ("objective", "source", *(f"encoder.{k}" for k in keys)):
                if not row[required]:
                    raise _fail(path, "empty (every row names it)", line, required)
            values = {m: _number(path, row[m], line, m) for m in metrics}
            ident = (row["objective"], *(_key(row[f"encoder.{k}"]) for k in keys))
            if ident in seen:
                raise _fail(path, f"repeats the objective and encoder values of line {seen[ident]}", line)
            seen[ident] = line
            rows.append(PublishedRow(line, printable(row["objective"]), {k: row[f"encoder.{k}"] for k in keys},
                                     printable(row.get("name", "")), printable(row["source"]), values,
                                     {m: row[m] for m in metrics}))
    except csv.Error as exc:
        raise _fail(path, f"not CSV: {exc}", reader.line_num) from None
    if header is None:
        raise _fail(path, "no header line (objective,source,... then metric columns)")
    if not rows:
        raise _fail(path, "a header and no row of numbers")
    return Published(path, digest, keys, metrics, tuple(rows))


# ----------------------------------------------------------------------------- beside the runs


def same_value(text: str, value: Any) -> bool:
    """Whether a file's cell ``text`` names the job record's ``value`` (numbers compared as numbers)."""
    if isinstance(value, bool):
        return text.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        return bool(NUMBER.fullmatch(text)) and float(text) == float(value)
    return isinstance(value, str) and text == value


def match(published: Published, objective: str, params: dict[str, Any]) -> PublishedRow | None:
    for row in published.rows:
        if row.objective == objective and all(k in params and same_value(v, params[k]) for k, v in row.keys.items()):
            return row
    return None


def _job_values(ok: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Each ok job's mean over ``columns`` (its finite values), NaN-free: one value per job that has one."""
    if not columns:
        return np.array([])
    block = ok[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    block = np.where(np.isfinite(block), block, np.nan)
    has = ~np.isnan(block).all(axis=1)
    with np.errstate(all="ignore"):
        return np.nanmean(block[has], axis=1) if has.any() else np.array([])


def comparison(store: RunStore, results: pd.DataFrame, published: Published) -> pd.DataFrame:
    """published.csv: per (dataset, encoder, objective) of the runs and metric of the file: ours
    (mean, sample std, n over ok jobs) and the published value (NaN: not reported)."""
    params = encoder_params(store)
    keys = [f"encoder.{k}" for k in published.keys]
    rows = []
    for (dataset, encoder, objective), jobs in results.groupby(["dataset", "encoder", "objective"], sort=True):
        ok = jobs[jobs["status"] == "ok"]
        p = params.get((dataset, encoder), {})
        row = match(published, objective, p)
        for metric in published.metrics:
            vals = _job_values(ok, [c for c in store.metrics if matches(metric, c)])
            with np.errstate(all="ignore"):
                mean = float(vals.mean()) if len(vals) else math.nan
                std = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            rows.append({"dataset": dataset, "encoder": encoder, **{k: p.get(k[8:]) for k in keys},
                         "objective": objective, "name": row.name if row else "", "metric": metric, "mean": mean,
                         "std": std, "n": len(vals), "n_ok": len(ok), "published": row.values[metric] if row else math.nan,
                         "published_text": row.texts[metric] if row else "", "source": row.source if row else ""})
    columns = ["dataset", "encoder", *keys, "objective", "name", "metric", "mean", "std", "n", "n_ok", "published",
               "published_text", "source"]
    return pd.DataFrame(rows, columns=columns)


@dataclass
class Part:
    """A section of the page after the main-score tables (rendered by ``markdown`` and ``html``)."""

    title: str
    lines: list[str]  # paragraphs before the tables
    tables: list[Table]
    notes: list[str] = field(default_factory=list)
    plots: list = field(default_factory=list)  # harness.leaderboard.plots.Plot


def header(metric: str, metrics: dict[str, Metric]) -> str:
    """A metric pattern's header: the display name of the first column it matches (its direction's arrow)."""
    found = [m for c, m in metrics.items() if matches(metric, c)]
    if not found:
        return metric
    m = found[0]
    name = (" ".join([*m.middle, m.display]) if "*" not in metric else m.display) + ARROW[m.higher_is_better]
    return name + (f" (mean over {metric})" if len(found) > 1 else "")


def _sort_key(text: Any) -> tuple:
    try:
        return (0, float(text), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(text))


def tables(frame: pd.DataFrame, published: Published, metrics: dict[str, Metric]) -> list[Table]:
    """One table per dataset: for each encoder and objective, our row then the published row."""
    out = []
    keys = [f"encoder.{k}" for k in published.keys]
    headers = ["encoder", *published.keys, "objective", "numbers", *(header(m, metrics) for m in published.metrics)]
    in_file = published.objectives
    for dataset, frame_d in frame.groupby("dataset", sort=True):
        cells = frame_d.drop_duplicates(["encoder", "objective"])
        encoders = sorted(dict.fromkeys(cells["encoder"]),
                          key=lambda e: [_sort_key(v) for v in cells[cells["encoder"] == e][keys].iloc[0]] + [e])
        rank = {o: i for i, o in enumerate(in_file)}
        rows = []
        for encoder in encoders:
            objectives = sorted(set(cells[cells["encoder"] == encoder]["objective"]), key=lambda o: (rank.get(o, len(rank)), o))
            for objective in objectives:
                block = frame_d[(frame_d["encoder"] == encoder) & (frame_d["objective"] == objective)].set_index("metric")
                first = block.iloc[0]
                lead = [Cell(encoder), *(Cell(_fmt_key(first[k])) for k in keys), Cell(objective)]
                ours = [Cell(fmt_cell(block.at[m, "mean"], block.at[m, "std"], int(block.at[m, "n"])),
                             float(block.at[m, "mean"]) if math.isfinite(block.at[m, "mean"]) else None)
                        for m in published.metrics]
                rows.append(lead + [Cell(f"ours (n={int(first['n_ok'])})")] + ours)
                if objective not in in_file:
                    continue
                reported = bool(first["source"])
                label = ("published" + (f": {first['name']}" if first["name"] else "")) if reported else "published: not reported"
                theirs = [Cell(_fmt_published(block.at[m, "published_text"]) or "—",
                               float(block.at[m, "published"]) if math.isfinite(block.at[m, "published"]) else None)
                          for m in published.metrics]
                rows.append(lead + [Cell(label)] + theirs)
        out.append(Table(f"Against the published numbers: {dataset}", headers, rows))
    return out


def _fmt_key(value: Any) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else printable(str(value))


def _fmt_published(text: str) -> str:
    """The file's number as written (its precision), with a leading zero: ``.275`` -> ``0.275``."""
    return re.sub(r"^([+-]?)\.", r"\g<1>0.", text) if text else ""


def unmatched(store: RunStore, published: Published) -> list[PublishedRow]:
    """Published rows that stand beside no (encoder, objective) of the runs."""
    params = encoder_params(store)
    pairs = {(r.encoder, r.objective, r.dataset) for r in store.runs}
    hit = {id(row) for enc, obj, ds in pairs if (row := match(published, obj, params.get((ds, enc), {}))) is not None}
    return [row for row in published.rows if id(row) not in hit]


def part(store: RunStore, frame: pd.DataFrame, published: Published, plots: list) -> Part:
    keys = ", ".join(f"encoder.{k}" for k in published.keys)
    lines = [f"Published: {s}." for s in published.sources]
    lines.append(
        "Each encoder and objective of these runs has two rows: ours, the mean ± sample std over the replicates that "
        f"finished (n), and the published value as the file gives it (no spread). Rows match by objective label"
        f"{' and ' + keys if keys else ''}; a metric with * is each job's mean over the matching columns. The published "
        "numbers come from another setting (see the source): they are shown for orientation, never tested against ours.")
    lines.append(f"File: {printable(str(published.path))} (sha256 {published.sha256[:16]}), read as data; "
                 "published.csv holds this comparison in long form.")
    notes = [f"line {row.line}: {row.objective} "
             + ", ".join(f"{k}={printable(v)}" for k, v in row.keys.items()) + " matches no run here"
             for row in unmatched(store, published)]
    return Part("Against the published numbers", lines, tables(frame, published, store.metrics), notes, plots)


def overlay(store: RunStore, frame: pd.DataFrame) -> pd.DataFrame:
    """The published points of ``frame`` per metric column of the runs they stand for (for the sweep figure)."""
    rows = [{"dataset": r.dataset, "encoder": r.encoder, "objective": r.objective, "column": c, "value": r.published}
            for r in frame.itertuples(index=False) if math.isfinite(r.published)
            for c in store.metrics if matches(r.metric, c)]
    return pd.DataFrame(rows, columns=["dataset", "encoder", "objective", "column", "value"])


def page_extras(store: RunStore, agg, out: Path, published: Published | None,
                frame: pd.DataFrame | None) -> tuple[Part | None, dict]:
    """The sweep figure (``harness.leaderboard.sweep``) and, with published numbers, their section
    holding it: (part, {}) then; (None, {"sweep": plot}) without them (the figure joins the others)."""
    from harness.leaderboard.plots import _guarded

    points = overlay(store, frame) if published is not None and frame is not None else None
    plot = _guarded("param_sweep", sweep_plot, store, agg, out, points)
    if published is None or frame is None:
        return None, ({"sweep": plot} if plot is not None else {})
    return part(store, frame, published, [plot] if plot is not None else []), {}
