"""Does a freshly built page reproduce a committed one? ``harness leaderboard ... --compare DIR``.

Both ``results.csv`` files are read (bounded, regular files only), rows matched on the job's
identity columns, and every metric column compared except the ones that time a run (wall clock,
throughput, memory): those differ from machine to machine by design. The answer is one line.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError, printable
from harness.safefiles import Refused, read_bytes

KEY = ["objective", "encoder", "dataset", "seed"]
MAX_CSV_BYTES = 64 * 2**20
#: columns that measure the machine, not the model
TIMING = ("train_time_s", "samples_per_s", "wall_time_s", "eval_time_s", "peak_", "rss", "memory")


def _read(path: Path) -> pd.DataFrame:
    import io

    try:
        data = read_bytes(path, MAX_CSV_BYTES)
    except FileNotFoundError:
        raise HarnessError(f"--compare: {path}: no such file (expected a leaderboard directory with results.csv)") from None
    except (OSError, Refused) as exc:
        raise HarnessError(f"--compare: {path}: cannot read ({exc})") from None
    try:
        frame = pd.read_csv(io.BytesIO(data))
    except (ValueError, pd.errors.ParserError) as exc:
        raise HarnessError(f"--compare: {path}: not a results table ({str(exc)[:120]})") from None
    missing = [c for c in KEY if c not in frame.columns]
    if missing:
        raise HarnessError(f"--compare: {path}: no column {missing[0]!r}; not a harness results.csv")
    return frame


def _equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b or (pd.isna(a) and pd.isna(b))


def compare(built: Path, committed: Path) -> str:
    """One line: whether ``built``'s results.csv reproduces ``committed``'s, job by job and metric by metric."""
    new, old = _read(built / "results.csv"), _read(committed / "results.csv")
    columns = [c for c in old.columns if c in new.columns and c not in KEY and not any(t in c for t in TIMING)]
    old_rows = {tuple(r[k] for k in KEY): r for _, r in old.iterrows()}
    same, differ, worst = 0, 0, (0.0, "")
    for _, row in new.iterrows():
        ref = old_rows.get(tuple(row[k] for k in KEY))
        if ref is None:
            continue
        bad = [c for c in columns if not _equal(row[c], ref[c])]
        if not bad:
            same += 1
            continue
        differ += 1
        for c in bad:
            try:
                gap = abs(float(row[c]) - float(ref[c]))
            except (TypeError, ValueError):
                gap = math.inf
            if not math.isnan(gap) and gap >= worst[0]:
                worst = (gap, c)
    extra = len(new) - same - differ
    where = printable(str(committed))
    if differ == 0 and same == len(old) and extra == 0:
        return f"matches the committed numbers in {where}: all {same} jobs, every metric equal (timings excepted)"
    if differ == 0 and extra == 0 and 0 < same < len(old):  # e.g. harness run --replicates N: a subset
        return (f"matches the committed numbers in {where} for every job run here: {same} of its {len(old)} jobs, "
                f"every metric equal (timings excepted)")
    parts = [f"{same} of {len(old)} committed jobs reproduced exactly"]
    if differ:
        parts.append(f"{differ} differ (largest difference {worst[0]:.3g} in {printable(worst[1])})")
    if extra:
        parts.append(f"{extra} not in the committed table")
    return f"differs from the committed numbers in {where}: " + "; ".join(parts)
