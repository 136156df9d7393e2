"""What the leaderboard's figures read from a job's directory: its log and its saved embeddings.

Read as hostile data (``harness.safefiles``): a ``log.jsonl`` or ``.npz`` that is a symbolic link,
a FIFO or a device is never opened; a log is read up to ``MAX_LOG_BYTES`` and only its JSON-object
lines of at most 100,000 characters count; an embedding array of more than ``MAX_ARRAY_BYTES`` is
never loaded, and a PCA is fitted on at most ``MAX_FIT_VALUES`` values per tower (rows drawn at
random beyond that, so a large or hostile array costs bounded memory); a damaged or inconsistent
file (towers of different widths, not 2-D, not floats, pickled objects) is skipped. At most
``MAX_TRIES`` seeds of an objective are tried for its PCA panel. The figures are illustrative: what
cannot be read is left out, never an error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from harness.errors import printable
from harness.leaderboard.load import Run
from harness.safefiles import Refused, npz_names, npz_rows, read_lines

MAX_POINTS = 400  # per tower in a PCA panel
MAX_TRIES = 5  # seeds tried for an objective's PCA panel
MAX_LOG_BYTES = 64 * 2**20  # a job's log.jsonl (a long run's is a few MiB)
MAX_ARRAY_BYTES = 256 * 2**20  # one embedding array read for a PCA panel
MAX_FIT_VALUES = 2**20  # rows x dimensions per tower that a PCA is fitted on
DRAWABLE = 1e300  # matplotlib cannot place values near the float limit (ticks overflow): such points are left out


def drawable(*values: float) -> bool:
    """Whether every value is finite and at most ``DRAWABLE`` in absolute value."""
    return all(math.isfinite(v) and abs(v) <= DRAWABLE for v in values)


def drawable_mask(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.isfinite(values) & (np.abs(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)) <= DRAWABLE)


def embeddings(run: Run) -> tuple[Path, np.ndarray, np.ndarray] | None:
    """(file, image rows, pair rows) of the run's first usable ``.npz`` (``retrieval.npz`` first)
    with both towers, or None; damaged files are skipped."""
    emb_dir = run.dir / "embeddings"
    if not emb_dir.is_dir():
        return None
    try:
        files = sorted((p for p in emb_dir.iterdir() if p.suffix == ".npz"), key=lambda p: (p.name != "retrieval.npz", p.name))[:64]
    except OSError:
        return None
    for f in files:
        try:
            if not {"pair_emb", "image_emb"} <= set(npz_names(f)):
                continue
            image, pair = (_rows(f, name) for name in ("image_emb", "pair_emb"))
        except (Refused, OSError, ValueError, MemoryError):
            continue
        if image.shape[1] == pair.shape[1] and len(image) and len(pair):
            return f, image, pair
    return None


def _rows(f: Path, name: str) -> np.ndarray:
    return npz_rows(f, name, MAX_FIT_VALUES, MAX_ARRAY_BYTES, np.random.default_rng(0), min_rows=MAX_POINTS)[0]


def pca2(image: np.ndarray, pair: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project both towers' embeddings on the top-2 principal components of their union.

    The components are the top eigenvectors of the (d, d) scatter matrix C^T C of the centred
    union C (cheaper than an SVD of C when there are many more points than dimensions). Rows that
    are not finite are left out; a union with values beyond 1e100 is scaled to at most 1 in
    absolute value first (the same directions, and no overflow for values near 1e308).
    """
    image = image[np.isfinite(image).all(axis=1)].astype(np.float64)
    pair = pair[np.isfinite(pair).all(axis=1)].astype(np.float64)
    both = np.concatenate([image, pair])
    if len(both) < 2:
        raise ValueError("fewer than two finite embeddings")
    scale = np.abs(both).max()
    if scale > 1e100:  # values near the float limit: the scatter matrix would overflow (a figure has no ticks)
        both = both / scale
    centred = both - both.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)  # eigenvalues ascending
    top = vecs[:, ::-1][:, :2]
    proj = centred @ top
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    return proj[: len(image)], proj[len(image):]


def _log_lines(path: Path) -> list[str]:
    """A job's log.jsonl lines; none when it is missing, damaged, not a regular file or too large."""
    try:
        return read_lines(path, MAX_LOG_BYTES)
    except (OSError, Refused):
        return []


def _records(path: Path):
    for line in _log_lines(path):
        if len(line) > 100_000 or not line.startswith("{"):
            continue  # not one of our records (a probe record is a few hundred bytes)
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict):
            yield rec


def read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    steps, losses = [], []
    for rec in _records(path):
        try:
            step, loss = float(rec["step"]), float(rec["loss"])
        except (ValueError, KeyError, TypeError, OverflowError):
            continue  # a partial or foreign line: the curve is illustrative, skip it
        if drawable(step, loss):
            steps.append(step)
            losses.append(loss)
    return np.array(steps), np.array(losses)


def read_probes(path: Path) -> dict[str, list[tuple[float, float]]]:
    """attribute -> [(step, accuracy)] from a job's log (its ``probe`` records)."""
    out: dict[str, list[tuple[float, float]]] = {}
    for rec in _records(path):
        try:
            step, probe = float(rec["step"]), rec["probe"]
            if not drawable(step):
                continue
            for name, value in list(probe.items())[:100]:
                if isinstance(value, (int, float)) and drawable(value):
                    out.setdefault(printable(str(name))[:80], []).append((step, float(value)))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            continue
    return out


def read_gap_curve(path: Path) -> dict[str, list[tuple[float, float, float]]]:
    """metric -> [(step, epoch, value)] from a job's log (its ``gap`` records, ``harness.training.gapcurve``)."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for rec in _records(path):
        try:
            step, epoch, gap = float(rec["step"]), float(rec["epoch"]), rec["gap"]
            if not drawable(step, epoch):
                continue
            for name, value in list(gap.items())[:100]:
                if isinstance(value, (int, float)) and not isinstance(value, bool) and drawable(value):
                    out.setdefault(printable(str(name))[:80], []).append((step, epoch, float(value)))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            continue
    return out
