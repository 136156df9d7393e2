"""Floors and ceilings of the downstream tasks, computed from the evaluation sets (never typed in).

They become reference rows of the leaderboard (marked, never ranked), so a reader sees at a glance
whether an objective is above the floor. Rows (``ROWS``):

- ``chance``: the best constant guess, i.e. the frequency of the most common label (1/C on a
  balanced set; 1/k for a multiple-choice set of k candidates per image); for arithmetic, the hit
  rate of a uniformly random gallery image.
- ``blind oracle``: an oracle that knows every attribute of the image except the one the task
  asks (for shape: the shape-blind oracle): the Bayes accuracy of predicting the label from the
  known attributes. A dataset that knows its generative model gives it exactly
  (``tags["oracle_accuracy"]``); otherwise a set says which attributes such an oracle knows with
  ``tags["oracle_features"]``, a list of attribute lists (the best counts: for a composition task,
  shape only and colour only) read from ``tags["attributes"]`` (attribute name -> one value per
  image), and the accuracy is estimated by cross-fitting. Sets with neither have no row.
- ``raw pixels``: the linear probe itself on the raw pixels (for linear-probe columns only).
- ``binding-free``: the linear probe itself on what a set declares a classifier may see without
  binding attributes to each other, ``tags["binding_free_features"]`` ((N, F) numbers per image,
  standardised by ``binding_free_features``; the shapes world's composition probe gives per colour
  and per shape the pixel mass it covers, the sizes, shapes and colours present, never which colour
  goes with which shape). A composition probe whose binding-free row is above chance can be solved
  without binding (for linear-probe columns only; sets without the tag have no such row).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from harness.builtin.evaluations.reference_cache import cached, content_key, is_rate, is_rows

CHANCE, ORACLE, PIXELS, BINDING_FREE = "chance", "blind oracle", "raw pixels", "binding-free"
ROWS = (CHANCE, ORACLE, PIXELS, BINDING_FREE)
PIXEL_SIDE = 16  # raw-pixel probes see images average-pooled to at most 16 x 16 x 3


def best_constant(labels: np.ndarray) -> float:
    """Accuracy of always answering the most common label."""
    labels = np.asarray(labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else math.nan


def oracle_accuracy(labels: np.ndarray, attributes: dict[str, np.ndarray], known: list[str]) -> float:
    """Accuracy of the Bayes rule that predicts ``labels`` from the ``known`` attributes, estimated
    by two-fold cross-fitting: each half is predicted by the majority label of its combination in
    the other half (the other half's overall majority for a combination it lacks), ties shared.

    In-sample majorities would overfit small combinations (with 80 of them, a shape-blind oracle
    scored 0.35 in-sample against its true 0.20); cross-fitting does not.
    """
    labels = np.asarray(labels)
    n = len(labels)
    keys = list(zip(*(np.asarray(attributes[a]).tolist() for a in known))) if known else [()] * n
    fold = np.random.default_rng(0).permutation(n) % 2
    credit = 0.0
    for f in (0, 1):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        groups: dict[tuple, Counter] = defaultdict(Counter)
        for i in train:
            groups[keys[i]][int(labels[i])] += 1
        overall = Counter(int(labels[i]) for i in train)
        for i in test:
            counts = groups.get(keys[i]) or overall
            top = max(counts.values())
            winners = [label for label, c in counts.items() if c == top]
            credit += (int(labels[i]) in winners) / len(winners)
    return float(credit / n) if n else math.nan


def blind_oracle(record: Any, cache_dir: Path | None = None) -> float | None:
    """The blind oracle's accuracy: ``tags["oracle_accuracy"]`` when the dataset computes it from
    its generative model (exact), else estimated from ``tags["oracle_features"]`` (the best of
    them; a cross-fitted, slightly conservative estimate; kept in ``cache_dir`` when given), else None."""
    if record.tags.get("oracle_accuracy") is not None:
        return float(record.tags["oracle_accuracy"])
    subsets, attributes = record.tags.get("oracle_features"), record.tags.get("attributes")
    if not subsets or not attributes:
        return None
    subsets = [list(known) for known in subsets]
    used = sorted({a for known in subsets for a in known}, key=str)
    content = {"labels": np.asarray(record.labels), "subsets": subsets,
               "attributes": {str(a): np.asarray(attributes[a]) for a in used}}
    key = content_key("blind-oracle", {}, content)
    return cached(cache_dir, "blind-oracle", key, valid=is_rate, about={"set": str(record.name)},
                  compute=lambda: max(oracle_accuracy(record.labels, attributes, known) for known in subsets))


def pixel_features(images: Any) -> np.ndarray:
    """Raw pixels in [0, 1], average-pooled to at most ``PIXEL_SIDE`` per side, flattened."""
    arr = np.stack([np.asarray(im.convert("RGB").resize((PIXEL_SIDE, PIXEL_SIDE))) for im in images]) \
        if isinstance(images, list) else np.asarray(images)
    n, h, w = arr.shape[:3]
    fh, fw = max(1, h // PIXEL_SIDE), max(1, w // PIXEL_SIDE)
    arr = arr[:, : h // fh * fh, : w // fw * fw].reshape(n, h // fh, fh, w // fw, fw, -1).mean(axis=(2, 4))
    return (arr / 255.0).reshape(n, -1).astype(np.float32)


def binding_free_features(record: Any) -> np.ndarray | None:
    """``tags["binding_free_features"]`` as float64, each column standardised over the set (mean 0,
    standard deviation 1; a constant column becomes 0), so the probe's regularisation treats pixel
    masses and 0/1 indicators alike; None when the set has no such tag."""
    feats = record.tags.get("binding_free_features")
    if feats is None:
        return None
    feats = np.asarray(feats, dtype=np.float64).reshape(len(record.labels), -1)
    sd = feats.std(axis=0)
    return np.where(sd > 0, (feats - feats.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)


def classification_rows(record: Any, cache_dir: Path | None = None) -> dict[str, float]:
    """{row: value} of the label-only rows (chance, blind oracle) of a classification set.

    For a multiple-choice set (``tags["candidates"]``) chance is a uniform pick among each image's
    candidates; the oracle's majority label is then one of them on a set built that way.
    """
    candidates = record.tags.get("candidates")
    chance = float(np.mean([1.0 / len(c) for c in candidates])) if candidates is not None else best_constant(record.labels)
    rows = {CHANCE: chance}
    oracle = blind_oracle(record, cache_dir)
    if oracle is not None:
        rows[ORACLE] = oracle
    return rows


def add_mean(rows: dict[str, dict[str, float]], per_set: dict[str, dict[str, float]], sets: list[str], key: str) -> None:
    """``rows[row][key]`` = the mean of ``per_set[s][row]`` over ``sets``, for rows every set has."""
    for row in ROWS:
        values = [per_set[s][row] for s in sets if row in per_set.get(s, {})]
        if values and len(values) == len(sets):
            rows.setdefault(row, {})[key] = float(np.mean(values))


def arithmetic_rows(record: Any) -> dict[str, dict[str, float]]:
    """{row: {"hit1": .., "hit5": ..}} for an arithmetic set: a random gallery image, and an oracle
    that knows the source's attributes except the one the query changes and picks at random among
    the gallery images that share them (``tags["attributes"]`` per gallery image and
    ``tags["changed"]``, the attribute each triplet changes).

    Linear in the gallery and the target lists: the gallery images are grouped once per changed
    attribute by the values of the attributes kept, so a triplet's candidates are its source's
    group (the source excluded). The per-triplet values and their means are those of a direct
    comparison of every image with every source (``tests/test_references.py`` checks both agree).
    """
    n = len(record.images)
    rows: dict[str, dict[str, float]] = {CHANCE: {}, ORACLE: {}}
    triplets = list(record.triplets)
    if not triplets:
        return {}
    attributes, changed = record.tags.get("attributes"), record.tags.get("changed")
    source = np.array([int(t.source) for t in triplets], dtype=np.int64)
    # (triplet, target) pairs, each target once and never the source, in a flat array
    which, target = [], []
    for i, t in enumerate(triplets):
        ids = set(t.target_ids) - {t.source}
        which += [i] * len(ids)
        target += [int(j) for j in ids]
    which_arr, target_arr = np.array(which, dtype=np.int64), np.array(target, dtype=np.int64)
    n_targets = np.bincount(which_arr, minlength=len(triplets))
    oracle_pair = None
    if attributes and changed:
        if len(changed) < len(triplets):
            raise ValueError(f"tags['changed'] names {len(changed)} attributes for {len(triplets)} triplets")
        changed = list(changed)[: len(triplets)]
        inside = (target_arr >= 0) & (target_arr < n)  # an id outside the gallery is never a candidate
        which_in, target_in = which_arr[inside], target_arr[inside]
        group = np.empty(len(triplets), dtype=np.int64)  # the source's group, per triplet
        size = np.empty(len(triplets), dtype=np.int64)  # images in that group
        shared = np.zeros(len(triplets), dtype=np.int64)  # targets in that group
        for asked in dict.fromkeys(changed):
            rows_of = np.array([i for i, c in enumerate(changed) if c == asked], dtype=np.int64)
            codes = _group_codes([attributes[a] for a in attributes if a != asked], n)
            counts = np.bincount(codes, minlength=int(codes.max()) + 1) if n else np.zeros(0, dtype=np.int64)
            group[rows_of] = codes[source[rows_of]]
            size[rows_of] = counts[group[rows_of]]
            mine = np.isin(which_in, rows_of)
            same = codes[target_in[mine]] == group[which_in[mine]]
            shared += np.bincount(which_in[mine], weights=same, minlength=len(triplets)).astype(np.int64)
        oracle_pair = (shared, size - 1)  # the candidates: the source's group but the source
    for k in (1, 5):
        rows[CHANCE][f"hit{k}"] = float(np.mean(_hits(n_targets, np.full(len(triplets), n - 1), k)))
        if oracle_pair is not None:
            rows[ORACLE][f"hit{k}"] = float(np.mean(_hits(*oracle_pair, k)))
    return {row: values for row, values in rows.items() if values}


def cached_arithmetic_rows(record: Any, cache_dir: Path | None = None) -> dict[str, dict[str, float]]:
    """``arithmetic_rows(record)``, kept in ``cache_dir`` (when given) under the gallery's content."""
    attributes = record.tags.get("attributes") or {}
    content = {
        "gallery": len(record.images),
        "triplets": [[int(t.source), [int(j) for j in t.target_ids]] for t in record.triplets],
        "attributes": {str(a): np.asarray(v) for a, v in attributes.items()},
        "attribute_order": [str(a) for a in attributes],
        "changed": list(record.tags.get("changed") or []),
    }
    key = content_key("arithmetic", {}, content)
    return cached(cache_dir, "arithmetic", key, lambda: arithmetic_rows(record), is_rows,
                  about={"set": str(record.name)})


def _group_codes(columns: list[Any], n: int) -> np.ndarray:
    """(n,) int codes, equal exactly where every column's values are equal (Python ``==``)."""
    codes: dict[tuple, int] = {}
    lists = [col.tolist() if isinstance(col, np.ndarray) else list(col) for col in columns]
    keys = zip(*lists) if lists else [()] * n
    return np.array([codes.setdefault(key, len(codes)) for key in keys], dtype=np.int64).reshape(n)


def _hits(targets: np.ndarray, candidates: np.ndarray, k: int) -> list[float]:
    """``_hit_at`` of each (targets, candidates) pair, each distinct pair computed once."""
    memo: dict[tuple[int, int], float] = {}
    out = []
    for pair in zip(targets.tolist(), candidates.tolist()):
        if pair not in memo:
            memo[pair] = _hit_at(pair[0], pair[1], k)
        out.append(memo[pair])
    return out


def _hit_at(targets: int, candidates: int, k: int) -> float:
    """P(at least one target among k distinct uniform picks from ``candidates`` items)."""
    if candidates <= 0 or targets <= 0:
        return 0.0
    k = min(k, candidates)
    return 1.0 - math.comb(candidates - targets, k) / math.comb(candidates, k)
