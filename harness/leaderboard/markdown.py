"""README.md: the leaderboard as GitHub Markdown, tables rendered with tabulate.

Strings from plugins, suites and results are escaped: a ``<`` or ``&`` that could start HTML
becomes an entity (GitHub renders it as text) and ``|`` is backslash-escaped so it cannot split a table cell.
"""

from __future__ import annotations

import re
from collections import Counter

from harness.leaderboard.aggregate import SIGNIFICANCE_METHOD
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


def reference_label(label: str) -> str:
    return f"{label} (reference)"


def render_table(table: Table) -> str:
    from tabulate import tabulate

    rows = [[_cell(c) for c in row] for row in table.rows]
    for ref in table.references:
        rows.append([f"_{md(reference_label(ref[0].text))}_"] + [md(c.text) for c in ref[1:]])
    return tabulate(rows, headers=[md(h) for h in table.headers], tablefmt="github", disable_numparse=True)


MAIN_SCORE_DOC = (
    "Each table's main score is what its evaluations declare (each evaluation names its headline metric and "
    "direction; the first declared one with values is used) unless the suite names one; a `*` in it means the "
    "mean over every matching column (e.g. every retrieval set). The first table of each section gives, per "
    "objective, the mean main score over its replicates, its 95% bootstrap CI, its rank interval and its tier; rows "
    "are in the order of the means, which is not a ranking: only the tiers rank, and only what the tests resolve. "
    "Detail cells are mean ± std (sample std) over the jobs that finished; failed jobs are listed below and never "
    "averaged in. Bold: the best mean of a detail column with a direction (↑ higher is better, ↓ lower is better); "
    "in the main table, tier 1. Reference rows (chance, oracles, raw-pixel probes), in italics and marked "
    "\"reference\", are floors and ceilings computed from the evaluation sets: never ranked, never tested."
)
RANKS_DOC = (
    "Rank interval: the 2.5–97.5% range of an objective's rank when the replicates (whole world draws, all objectives "
    "together) are resampled with replacement; 1–3 means it ranked anywhere from first to third in 95% of resampled "
    "worlds. Mean rank and Friedman's test use independent blocks only (the replicates; across tables, the "
    "dataset · encoder · replicate cells) and trained objectives only, never the correlated tasks of one image pool; "
    "Nemenyi's critical difference is the smallest gap in mean rank that counts (Demsar 2006) and the "
    "critical-difference diagram joins objectives that cannot be told apart. The mixed model splits the score's "
    "variance into a between-world part (every objective moves together with the world draw) and a residual part."
)
FILES_DOC = (
    "Files: results.csv (one row per final job, with its main_score, replicate and dataset_seed), summary.csv (one "
    "row per objective and table: mean, ci_low/ci_high, rank_low/rank_high, tier, the contrast against the reference), "
    "contrasts.csv (each trained objective against the reference objective: paired t, Holm, detectable difference, "
    "n_needed), pairwise.csv (every pair, paired by replicate: n, means, diff and its CI, paired t, Holm, Wilcoxon, "
    "note), tables.csv (per table: main score, tiers, detectable difference, mixed model, Friedman, Kendall τ), "
    "across.csv (Friedman across tables, Kendall τ between encoders), references.csv (reference rows, long format), "
    "tuning.csv (tuning jobs, when the suite was tuned)."
)


def main_score_doc() -> str:
    return MAIN_SCORE_DOC


def failures(store: RunStore) -> list[list[str]]:
    return [[r.objective + (" (tuning trial)" if r.stage == "tune" else ""), r.encoder, r.dataset, str(r.seed), r.error_line]
            for r in store.runs + store.tuning if r.status != "ok"]


def skipped(store: RunStore) -> list[tuple[str, str, int]]:
    counts = Counter((ev, reason) for r in store.runs for ev, reason in r.skipped.items())
    return [(ev, reason, n) for (ev, reason), n in sorted(counts.items())]


def headline(store: RunStore, prov: list[tuple[str, str]]) -> str:
    facts = dict(prov)
    line = f"Jobs: {facts.get('jobs', '?')}; runs dated {facts.get('runs dated', 'unknown')}; provenance below."
    return f"{incomplete(store)} {line}" if store.missing else line


def incomplete(store: RunStore, shown: int = 5) -> str:
    """"Incomplete: 4 of 27 jobs ...; missing: ..." for a page built before its suite finished ("" when complete)."""
    if not store.missing:
        return ""
    have = store.expected - len(store.missing)
    more = f" and {len(store.missing) - shown} more" if len(store.missing) > shown else ""
    return (f"INCOMPLETE: {have} of {store.expected} jobs of the suite's last run have results, so every "
            f"number below is provisional; missing: {'; '.join(store.missing[:shown])}{more}.")


def _figure(p: Plot) -> list[str]:
    return [f"### {md(p.title)}", "", f"![{md(p.title)}]({p.file})", "", md(p.caption), ""]


def render_readme(store: RunStore, prov: list[tuple[str, str]], secs: list[Section], plots: dict[str, Plot], part=None) -> str:
    """``part``: a ``harness.leaderboard.published.Part`` (or a list of them) shown after the main-score
    tables and their figures."""
    from tabulate import tabulate

    out = [f"# Leaderboard: {md(store.suite)}", "", md(headline(store, prov)), ""]
    for sec in secs:  # the answer first
        out += [f"## {md(sec.dataset)} · {md(sec.encoder)}", ""]
        if sec.main is not None:
            out += ["### Main score", "", render_table(sec.main), ""]
        out += [f"- {md(n)}" for n in sec.notes] + [""]
    for kind in ("cd", "gap"):
        if kind in plots:
            out += _figure(plots[kind])
    for part in ([] if part is None else part if isinstance(part, list) else [part]):
        out += [f"## {md(part.title)}", ""] + [line for text in part.lines for line in (md(text), "")]
        for table in part.tables:
            out += [f"### {md(table.title)}", "", render_table(table), ""]
        out += [f"- {md(n)}" for n in part.notes] + ([""] if part.notes else [])
        for p in part.plots:
            out += _figure(p)
    across = secs[0].across if secs else []
    if across:
        out += ["## Across tables", ""] + [f"- {md(n)}" for n in across] + [""]
    out += ["## How to read this page", "", md(MAIN_SCORE_DOC), "", f"**Significance**: {md(SIGNIFICANCE_METHOD)}.", "",
            md(RANKS_DOC), "", md(FILES_DOC), "", "## Provenance", ""]
    for key, value in prov:
        value = f"`{value}`" if key == "command" and "`" not in value else md(value)
        out.append(f"- **{key}**: {value}")
    out.append("")
    for sec in secs:
        out += [f"## Details: {md(sec.dataset)} · {md(sec.encoder)}", ""]
        for table in sec.details + ([sec.tuning] if sec.tuning else []):
            out += [f"### {md(table.title)}", "", render_table(table), ""]
    if "tuning" in plots:
        out += ["## Tuning", ""] + _figure(plots["tuning"])
    more = [p for k, p in plots.items() if k not in ("cd", "gap", "tuning")]
    if more:
        out += ["## Plots", ""]
        for p in more:
            out += _figure(p)
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
