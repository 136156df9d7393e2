"""index.html: a standalone page (inline CSS and JS, plots as base64 PNG data URIs, no network).

Every string from a plugin, a suite or a result goes through ``html.escape``. As a second line of
defence the page's Content-Security-Policy allows only its own inline script and style (by hash)
and ``data:`` images, so nothing is fetched and an injected ``<script>`` would not run.
Tables sort by clicking a header (numeric on each cell's ``data-value``, else text; click again to
reverse; cells without a value stay last). Reference rows sit in a second ``<tbody class="references">``
that sorting never touches, so they stay marked at the bottom.
"""

from __future__ import annotations

import base64
from html import escape as e
from pathlib import Path

from harness.leaderboard.aggregate import SIGNIFICANCE_METHOD
from harness.leaderboard.assets import CSS, JS, content_security_policy
from harness.leaderboard.index import table_anchor
from harness.leaderboard.load import RunStore
from harness.leaderboard.markdown import FILES_DOC, MAIN_SCORE_DOC, RANKS_DOC, failures, headline, skipped
from harness.leaderboard.plots import Plot
from harness.leaderboard.tables import Section, Table

WRAP_AT = 40  # a cell with longer text (a note, a reason) wraps instead of widening its table


def render_table(table: Table) -> str:
    head = "".join(f'<th scope="col">{e(h)}</th>' for h in table.headers)
    body = []
    for row in table.rows:
        cells = []
        for c in row:
            value = "" if c.value is None else f' data-value="{c.value!r}"'
            names = " ".join(n for n, on in (("best", c.bold), ("wrap", len(c.text) > WRAP_AT)) if on)
            cls = f' class="{names}"' if names else ""
            cells.append(f"<td{cls}{value}>{e(c.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    refs = []
    for row in table.references:
        cells = [f'<td>{e(row[0].text)} <span class="tag">reference</span></td>']
        for c in row[1:]:
            value = "" if c.value is None else f' data-value="{c.value!r}"'
            cells.append(f"<td{value}>{e(c.text)}</td>")
        refs.append('<tr class="reference">' + "".join(cells) + "</tr>")
    ref_body = f'<tbody class="references">{"".join(refs)}</tbody>' if refs else ""
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody>{ref_body}</table></div>')


def _image(out: Path, plot: Plot) -> str:
    data = base64.b64encode((out / plot.file).read_bytes()).decode()
    return f'<figure><img alt="{e(plot.title)}" src="data:image/png;base64,{data}"><figcaption class="note">{e(plot.caption)}</figcaption></figure>'


def render_page(store: RunStore, prov: list[tuple[str, str]], secs: list[Section], plots: dict[str, Plot], out: Path,
                part=None) -> str:
    parts = [f"<h1>Leaderboard: {e(store.suite)}</h1>", f'<p class="note">{e(headline(store, prov))}</p>']
    for sec in secs:  # the answer first
        parts.append(f'<h2 id="{table_anchor(sec.dataset, sec.encoder)}">{e(sec.dataset)} · {e(sec.encoder)}</h2>')
        if sec.main is not None:
            parts += ["<h3>Main score</h3>", render_table(sec.main)]
        parts.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in sec.notes) + "</ul>")
    for kind in ("cd", "gap"):
        if kind in plots:
            parts += [f"<h3>{e(plots[kind].title)}</h3>", _image(out, plots[kind])]
    for part in ([] if part is None else part if isinstance(part, list) else [part]):  # published.Part
        parts += [f"<h2>{e(part.title)}</h2>"] + [f"<p>{e(text)}</p>" for text in part.lines]
        for table in part.tables:
            parts += [f"<h3>{e(table.title)}</h3>", render_table(table)]
        if part.notes:
            parts.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in part.notes) + "</ul>")
        for p in part.plots:
            parts += [f"<h3>{e(p.title)}</h3>", _image(out, p)]
    across = secs[0].across if secs else []
    if across:
        parts += ["<h2>Across tables</h2>", '<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in across) + "</ul>"]
    parts.append("<h2>How to read this page</h2>")
    parts.append(f"<p>{e(MAIN_SCORE_DOC)} Click a column header to sort.</p>")
    parts.append(f"<p><strong>Significance</strong>: {e(SIGNIFICANCE_METHOD)}.</p>")
    parts += [f"<p>{e(RANKS_DOC)}</p>", f"<p>{e(FILES_DOC)}</p>"]
    parts += ["<h2>Provenance</h2>", '<dl class="meta">']
    parts += [f"<dt>{e(k)}</dt><dd>{f'<code>{e(v)}</code>' if k == 'command' else e(v)}</dd>" for k, v in prov]
    parts.append("</dl>")
    for sec in secs:
        parts.append(f"<h2>Details: {e(sec.dataset)} · {e(sec.encoder)}</h2>")
        for table in sec.details + ([sec.tuning] if sec.tuning else []):
            parts += [f"<h3>{e(table.title)}</h3>", render_table(table)]
    if "tuning" in plots:
        parts += ["<h2>Tuning</h2>", f"<h3>{e(plots['tuning'].title)}</h3>", _image(out, plots["tuning"])]
    more = [p for k, p in plots.items() if k not in ("cd", "gap", "tuning")]
    if more:
        parts.append("<h2>Plots</h2>")
        for p in more:
            parts += [f"<h3>{e(p.title)}</h3>", _image(out, p)]
    fails = failures(store)
    parts.append(f"<h2>Failed jobs ({len(fails)})</h2>")
    if fails:
        head = "".join(f"<th>{h}</th>" for h in ("objective", "encoder", "dataset", "seed", "error"))
        rows = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in fails)
        parts.append(f'<div class="scroll"><table class="sortable failed"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>')
    else:
        parts.append("<p>None.</p>")
    skips = skipped(store)
    if skips:
        parts.append("<h2>Skipped evaluations</h2><ul>")
        parts += [f"<li>{e(ev)} ({n} job{'s' if n != 1 else ''}): {e(reason)}</li>" for ev, reason, n in skips]
        parts.append("</ul>")
    csp = content_security_policy()
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Leaderboard: {e(store.suite)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        *parts,
        f"<script>{JS}</script>",
        "</body>",
        "</html>",
        "",
    ])
