"""The top-level index: ``leaderboard/index.html`` linking every suite's page.

Each suite's ``build_leaderboard`` writes ``board.json`` beside its page: the suite name, provenance,
and per (dataset, encoder) table the main score, the replicates, tier 1 (the best mean and every
objective the Holm-corrected paired tests do not resolve from it, never a single "top" objective
unless it is resolved from every other), the range of tier 1's means, the reference objective and
how many contrasts against it are resolved, and the smallest detectable difference. ``write_index``
reads those files (never the runs) and renders one standalone, sortable page (the suite page's CSS,
script and Content-Security-Policy) that fits a 1,400 px window (long cells wrap), so re-running one
suite and then the index is enough.
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
        h = t.head
        tier1 = h.tier(1) if t.main is not None else []
        means = [_num(h.intervals.loc[o, "mean"]) for o in tier1 if o in h.intervals.index]
        means = [m for m in means if m is not None]
        con = h.contrasts
        tables.append({
            "anchor": table_anchor(dataset, encoder),
            "dataset": dataset,
            "encoder": encoder,
            "main_score": t.main.pattern if t.main else None,
            "description": t.main.description if t.main else t.why_none,
            "higher_is_better": t.main.higher_is_better if t.main else None,
            "objectives": len(t.order),
            "replicates": h.replicates,
            "tier1": tier1,
            "tier1_means": [min(means), max(means)] if means else None,
            "reference": h.reference,
            "contrasts_tested": int(con["p_value"].notna().sum()),
            "contrasts_resolved": int(con["significant"].sum()) if len(con) else 0,
            "min_detectable_diff": _num(h.detectable.mdd) if h.detectable else None,
            "friedman_p": _num(h.friedman.p_value) if h.friedman else None,
        })
    return {
        "suite": store.suite,
        "provenance": dict(prov),
        "jobs": len(store.runs),
        "tuning_jobs": len(store.tuning),
        "incomplete": (f"{store.expected - len(store.missing)} of {store.expected} jobs" if store.missing else None),
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


def _td(html_text: str, value: float | None, wrap: bool = False) -> str:
    cls = ' class="wrap"' if wrap else ""
    return f'<td{cls} data-value="{value!r}">{html_text}</td>' if value is not None else f"<td{cls}>{html_text}</td>"


def _strings(x: Any) -> list[str]:
    return [str(v) for v in x] if isinstance(x, list) else []


def _range(x: list | None) -> str:
    if x is None:
        return "—"
    lo, hi = _fmt(x[0]), _fmt(x[1])
    return lo if lo == hi else f"{lo} to {hi}"


def _contrasts(t: dict[str, Any]) -> str:
    tested, ref = _num(t.get("contrasts_tested")), t.get("reference")
    if not tested or not isinstance(ref, str):
        return "—"
    return f"{_fmt_int(t.get('contrasts_resolved'))} of {_fmt_int(tested)} vs {e(ref)}"


def _fmt_int(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else str(int(v))


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
            arrow = {True: " ↑", False: " ↓"}.get(t.get("higher_is_better"), "")
            tier1, means = _strings(t.get("tier1")), t.get("tier1_means")
            means = means if isinstance(means, list) and len(means) == 2 else None
            cells = [
                ((f'<a href="{e(sub.name)}/{pages[0]}">{e(str(board.get("suite", sub.name)))}</a>' if pages
                  else e(str(board.get("suite", sub.name))))
                 + (f' <strong>(incomplete: {e(str(board["incomplete"]))})</strong>' if board.get("incomplete") else ""),
                 None, True),
                (_table_link(sub.name, pages, t), None, True),
                (e(str(t.get("description") or "—")) + e(arrow), None, True),
                (e(str(t.get("replicates", "—"))), _num(t.get("replicates")), False),
                (e(", ".join(tier1)) or "—", float(len(tier1)), True),
                (_range(means), _num(means[1]) if means else None, False),
                (_contrasts(t), _num(t.get("contrasts_resolved")), True),
                (_fmt(t.get("min_detectable_diff")), _num(t.get("min_detectable_diff")), False),
                (e(str(board.get("jobs", "—"))), _num(board.get("jobs")), False),
                (e(str(prov.get("runs dated", "—"))), None, True),
                (links, None, False),
            ]
            rows.append("<tr>" + "".join(_td(text, v, wrap) for text, v, wrap in cells) + "</tr>")
    heads = ["suite", "table", "main score", "replicates", "tier 1 (not resolved from the best mean)", "tier-1 means",
             "contrasts resolved (vs reference, Holm)", "smallest detectable difference", "jobs", "runs dated", "pages"]
    head = "".join(f'<th scope="col">{h}</th>' for h in heads)
    body = "".join(rows) if rows else f'<tr><td colspan="{len(heads)}">No suite page under this directory yet.</td></tr>'
    csp = content_security_policy()
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Leaderboards</title>", f"<style>{CSS}</style>", "</head>", "<body>",
        "<h1>Leaderboards</h1>",
        '<p class="note">One row per suite and (dataset, encoder) table. Tier 1 is the objective with the best mean '
        "main score plus every objective that the Holm-corrected paired tests (paired by replicate) do not resolve "
        "from it: the objectives in it are not ranked among themselves. \"Contrasts resolved\" counts the trained "
        "objectives resolved from the suite's reference objective; the smallest detectable difference says how large "
        "a gap those replicates could have resolved. Each suite's page has the tables, the critical-difference "
        "diagram and the plots. Click a column header to sort.</p>",
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>',
        f"<script>{JS}</script>", "</body>", "</html>", "",
    ])
    path = root / "index.html"
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"{path}: cannot write: {exc.strerror}") from None
    return path
