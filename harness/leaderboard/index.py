"""The top-level index: ``leaderboard/index.html`` linking every suite's page.

Each suite's ``build_leaderboard`` writes ``board.json`` beside its page: the suite name, provenance,
and per (dataset, encoder) table the main score, the top objective, which objectives the Holm-corrected
tests cannot separate from it, the smallest detectable difference and Friedman's p. ``write_index``
reads those files (never the runs) and renders one standalone, sortable page (the suite page's CSS,
script and Content-Security-Policy), so re-running one suite and then the index is enough.
"""

from __future__ import annotations

import json
import math
import re
from html import escape as e
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.leaderboard.assets import CSS, JS, content_security_policy

BOARD = "board.json"


def _num(x: Any) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def table_anchor(dataset: str, encoder: str) -> str:
    """The id of a table's heading on the suite page (``index.html#<anchor>``)."""
    return "t-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{dataset}-{encoder}").strip("-")[:80]


def board_facts(store, agg, prov: list[tuple[str, str]], formats: list[str]) -> dict[str, Any]:
    """What the index shows for one suite (JSON-safe: NaN become null)."""
    tables = []
    for (dataset, encoder), t in agg.tables.items():
        top = t.order[0] if t.main is not None and t.order else None
        tied = []
        if top is not None:
            pw = t.pairwise
            for r in pw.itertuples(index=False):
                other = r.objective_b if r.objective_a == top else r.objective_a if r.objective_b == top else None
                if other is not None and not r.significant and not math.isnan(r.p_holm):
                    tied.append(other)
        s = agg.summary
        row = s[(s["dataset"] == dataset) & (s["encoder"] == encoder) & (s["objective"] == top)] if top else s.iloc[0:0]
        tables.append({
            "anchor": table_anchor(dataset, encoder),
            "dataset": dataset,
            "encoder": encoder,
            "main_score": t.main.pattern if t.main else None,
            "description": t.main.description if t.main else t.why_none,
            "higher_is_better": t.main.higher_is_better if t.main else None,
            "objectives": len(t.order),
            "top": top,
            "top_mean": _num(row["main_score.mean"].iloc[0]) if len(row) else None,
            "not_separable_from_top": tied,
            "min_detectable_diff": _num(t.detectable.mdd) if t.detectable else None,
            "friedman_p": _num(t.friedman.p_value) if t.friedman else None,
        })
    return {
        "suite": store.suite,
        "provenance": dict(prov),
        "jobs": len(store.runs),
        "tuning_jobs": len(store.tuning),
        "pages": [f for f, fmt in (("index.html", "html"), ("README.md", "md")) if fmt in formats],
        "tables": tables,
    }


def _read_board(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _fmt(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "—"
    return f"{v:.3f}" if abs(v) >= 0.001 or v == 0 else f"{v:.1e}"


def _table_link(suite_dir: str, pages: list[str], t: dict[str, Any]) -> str:
    text = e(f"{t.get('dataset', '—')} · {t.get('encoder', '—')}")
    anchor = t.get("anchor")
    if "index.html" in pages and isinstance(anchor, str) and re.fullmatch(r"[A-Za-z0-9_-]+", anchor):
        return f'<a href="{e(suite_dir)}/index.html#{anchor}">{text}</a>'
    return text


def _td(html_text: str, value: float | None) -> str:
    return f'<td data-value="{value!r}">{html_text}</td>' if value is not None else f"<td>{html_text}</td>"


def write_index(root: Path) -> Path:
    if not root.is_dir():
        raise HarnessError(f"{root}: no such directory (expected the leaderboard root, e.g. leaderboard/)")
    rows = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        board = _read_board(sub / BOARD) if (sub / BOARD).is_file() else None
        pages = [f for f in ("index.html", "README.md") if (sub / f).is_file()]
        if board is None and not pages:
            continue
        board = board or {"suite": sub.name, "tables": [{}]}
        links = " ".join(f'<a href="{e(sub.name)}/{f}">{"page" if f == "index.html" else "README"}</a>' for f in pages)
        prov = board.get("provenance") if isinstance(board.get("provenance"), dict) else {}
        tables = board.get("tables") if isinstance(board.get("tables"), list) and board.get("tables") else [{}]
        for t in tables:
            t = t if isinstance(t, dict) else {}
            tied = t.get("not_separable_from_top") or []
            arrow = {True: " ↑", False: " ↓"}.get(t.get("higher_is_better"), "")
            cells = [
                (f'<a href="{e(sub.name)}/{pages[0]}">{e(str(board.get("suite", sub.name)))}</a>' if pages
                 else e(str(board.get("suite", sub.name))), None),
                (_table_link(sub.name, pages, t), None),
                (e(str(t.get("description") or "—")) + e(arrow), None),
                (e(str(t.get("top") or "—")), None),
                (_fmt(t.get("top_mean")), _num(t.get("top_mean"))),
                (e(", ".join(map(str, tied))) if tied else "none", float(len(tied))),
                (_fmt(t.get("min_detectable_diff")), _num(t.get("min_detectable_diff"))),
                (_fmt(t.get("friedman_p")), _num(t.get("friedman_p"))),
                (e(str(board.get("jobs", "—"))), _num(board.get("jobs"))),
                (e(str(prov.get("runs dated", "—"))), None),
                (e(str(prov.get("harness", "—"))), None),
                (links, None),
            ]
            rows.append("<tr>" + "".join(_td(text, v) for text, v in cells) + "</tr>")
    heads = ["suite", "table", "main score", "top objective", "top main score", "not separable from top (Holm)",
             "smallest detectable difference", "Friedman p", "jobs", "runs dated", "harness", "pages"]
    head = "".join(f'<th scope="col">{h}</th>' for h in heads)
    body = "".join(rows) if rows else f'<tr><td colspan="{len(heads)}">No suite page under this directory yet.</td></tr>'
    csp = content_security_policy()
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Leaderboards</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        "<h1>Leaderboards</h1>",
        '<p class="note">One row per suite and (dataset, encoder) table. "Not separable from top" lists the objectives '
        "whose main score the Holm-corrected Welch tests cannot tell from the top one; the smallest detectable "
        "difference says how large a gap those seeds could have resolved. Each suite's page has the tables, the "
        "critical-difference diagram and the plots. Click a column header to sort.</p>",
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>',
        f"<script>{JS}</script>", "</body>", "</html>", "",
    ])
    path = root / "index.html"
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"{path}: cannot write: {exc.strerror}") from None
    return path
