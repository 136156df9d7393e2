"""README.md: the leaderboard as GitHub Markdown, tables rendered with tabulate.

Strings from plugins, suites and results are escaped: a ``<`` or ``&`` that could start HTML
becomes an entity (GitHub renders it as text) and ``|`` is backslash-escaped so it cannot split a table cell.
"""

from __future__ import annotations

import re
from collections import Counter

from harness.leaderboard.aggregate import MAIN_SCORE_RULES, SIGNIFICANCE_METHOD
from harness.leaderboard.load import RunStore
from harness.leaderboard.plots import Plot
from harness.leaderboard.tables import Cell, Section, Table


def md(s: object) -> str:
    """Escape a string for a Markdown table cell or paragraph (one line).

    ``<`` that could open a tag, comment or autolink and ``&`` that could start an entity become
    ``&lt;`` / ``&amp;`` (so ``<script>`` shows as text but ``n<2`` stays readable); Markdown's
    ``\\ | * ` [ ]`` are backslash-escaped.
    """
    text = " ".join(str(s).split())
    text = re.sub(r"&(?=[A-Za-z#])", "&amp;", text)
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    for ch in "\\|*`[]":
        text = text.replace(ch, "\\" + ch)
    return text


def _cell(c: Cell) -> str:
    return f"**{md(c.text)}**" if c.bold else md(c.text)


def render_table(table: Table) -> str:
    from tabulate import tabulate

    rows = [[_cell(c) for c in row] for row in table.rows]
    return tabulate(rows, headers=[md(h) for h in table.headers], tablefmt="github", disable_numparse=True)


def main_score_doc() -> str:
    rules = "; else ".join(f"{desc} (`{plugin}.*.{leaf}`)" for plugin, leaf, desc in MAIN_SCORE_RULES)
    return (f"**Main score** (rows are sorted by it, descending): {rules}. Cells are mean ± std (sample std) over "
            "the seeds that finished; failed jobs are listed below and never averaged in. Bold: the best mean of a "
            "column with a direction (↑ higher is better, ↓ lower is better).")


def failures(store: RunStore) -> list[list[str]]:
    return [[r.objective, r.encoder, r.dataset, str(r.seed), r.error_line] for r in store.runs if r.status != "ok"]


def skipped(store: RunStore) -> list[tuple[str, str, int]]:
    counts = Counter((ev, reason) for r in store.runs for ev, reason in r.skipped.items())
    return [(ev, reason, n) for (ev, reason), n in sorted(counts.items())]


def render_readme(store: RunStore, prov: list[tuple[str, str]], secs: list[Section], plots: list[Plot]) -> str:
    from tabulate import tabulate

    out = [f"# Leaderboard: {md(store.suite)}", ""]
    for key, value in prov:
        value = f"`{value}`" if key == "command" and "`" not in value else md(value)
        out.append(f"- **{key}**: {value}")
    out += ["", main_score_doc(), "", f"**Significance**: {md(SIGNIFICANCE_METHOD)}.", ""]
    for sec in secs:
        out += [f"## {md(sec.dataset)} · {md(sec.encoder)}", ""]
        out += [f"Main score: {md(sec.main_score.description) if sec.main_score else 'none (no zero-shot, retrieval or linear-probe metric)'}.", ""]
        for table in sec.tables:
            out += [f"### {md(table.title)}", "", render_table(table), ""]
    if plots:
        out += ["## Plots", ""]
        for p in plots:
            out += [f"### {md(p.title)}", "", md(p.caption), "", f"![{md(p.title)}]({p.file})", ""]
    fails = failures(store)
    out += [f"## Failed jobs ({len(fails)})", ""]
    if fails:
        rows = [[md(v) for v in row] for row in fails]
        out += [tabulate(rows, headers=["objective", "encoder", "dataset", "seed", "error"], tablefmt="github", disable_numparse=True), ""]
    else:
        out += ["None.", ""]
    skips = skipped(store)
    if skips:
        out += ["## Skipped evaluations", ""]
        out += [f"- {md(ev)} ({n} job{'s' if n != 1 else ''}): {md(reason)}" for ev, reason, n in skips]
        out.append("")
    return "\n".join(out)
