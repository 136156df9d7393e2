"""Where the numbers come from: command, run dates, hardware, harness version/commit, wall time.

Everything is read from the results (``env`` of each job), not from the machine that renders the
page, so regenerating a leaderboard from the same runs gives the same text.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.leaderboard.load import RunStore


def fmt_duration(seconds: float) -> str:
    """``42.0 s``, ``12 min 03 s``, ``2 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _distinct(values: list[Any]) -> str:
    counts = Counter(str(v) for v in values if v not in (None, ""))
    if not counts:
        return "unknown"
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{v} ({n} jobs)" for v, n in sorted(counts.items()))


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def provenance(store: RunStore, command: str) -> list[tuple[str, str]]:
    """(label, text) lines for the top of README.md and index.html."""
    envs = [r.env for r in store.runs]
    dates = sorted(str(e["started_at"])[:10] for e in envs if e.get("started_at"))
    when = "unknown" if not dates else dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    threads = _distinct([e.get("torch_threads") for e in envs])
    hardware = _distinct([e.get("device_name") or e.get("device") for e in envs])
    if threads != "unknown":
        hardware += f", torch threads: {threads}"
    version = f"{_distinct([e.get('harness_version') for e in envs])}, git commit {_distinct([e.get('git_commit') for e in envs])}"
    failed = sum(r.status != "ok" for r in store.runs)
    wall = sum(_number(e.get("wall_time_s")) for e in envs)
    train = sum(_number(e.get("train_time_s")) for e in envs)
    jobs = f"{len(store.runs)} ({len(store.runs) - failed} ok, {failed} failed)"
    return [
        ("command", command),
        ("runs dated", when),
        ("hardware", hardware),
        ("harness", version),
        ("jobs", jobs),
        ("total job wall time", f"{fmt_duration(wall)} (of which training {fmt_duration(train)}), summed over jobs"),
    ]
