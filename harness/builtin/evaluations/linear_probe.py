"""Linear probe: logistic regression on frozen image embeddings, on CPU.

Per classification set, a seeded stratified split (``test_fraction`` held out; a plain seeded
split when some class is too small to stratify), sklearn ``LogisticRegression(C, max_iter)``
trained on the train part, accuracy on the test part. (clip_benchmark's linear probe asserts
CUDA and trains its own torch head, so it is not used.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from harness.api import ClassificationSet, EvalContext, MainScore, MetricInfo, Skip
from harness.builtin.evaluations.keys import safe_key
from harness.builtin.evaluations.reference_cache import cached, content_key, is_rate
from harness.builtin.evaluations.references import (
    BINDING_FREE,
    PIXEL_SIDE,
    PIXELS,
    binding_free_features,
    classification_rows,
    pixel_features,
)

METRICS = {"accuracy": MetricInfo("Linear probe accuracy", "downstream", True)}


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: stratified by label when every class has >= 2 members and fits, else plain."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        return tuple(train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels))
    except ValueError:  # a class with one member, or fewer test slots than classes
        return tuple(train_test_split(idx, test_size=test_fraction, random_state=seed))


def probe_accuracy(
    features: np.ndarray, labels: np.ndarray, test_fraction: float, C: float, max_iter: int, seed: int,
    candidates: np.ndarray | None = None, threads: int | None = None,
) -> float:
    """Test accuracy of a logistic regression trained on a seeded split of (features, labels).

    With ``candidates`` ((N, k) class indices) each test image is classified among its own k
    classes (the probe's highest score among them), as zero-shot does for multiple-choice sets.
    Every BLAS/OpenMP pool works with ``threads`` (default: torch's, the job's pin) while it runs,
    including those scikit-learn and scipy load after the job pinned its pools: unpinned, they
    spread over every core, which made the probe several times slower and machine-dependent.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads if threads is not None else _job_threads()):
        return _probe_accuracy(features, labels, test_fraction, C, max_iter, seed, candidates, LogisticRegression)


def _job_threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def _probe_accuracy(features, labels, test_fraction, C, max_iter, seed, candidates, LogisticRegression) -> float:
    train, test = split_indices(labels, test_fraction, seed)
    classes = np.unique(labels[train])
    if len(classes) == 1:  # one class in train: the only possible prediction
        return float(np.mean(labels[test] == classes[0]))
    clf = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    clf.fit(features[train], labels[train])
    if candidates is None:
        return float(clf.score(features[test], labels[test]))
    scores = clf.decision_function(features[test])
    scores = scores[:, None] * np.array([-1.0, 1.0]) if scores.ndim == 1 else scores  # binary: two columns
    full = np.full((len(test), int(labels.max()) + 1), -np.inf)
    full[:, classes] = scores
    allowed = np.zeros_like(full, dtype=bool)
    np.put_along_axis(allowed, np.asarray(candidates)[test], True, axis=1)
    pred = np.where(allowed, full, -np.inf).argmax(axis=1)
    return float(np.mean(pred == labels[test]))


class LinearProbe:
    """Linear probe: logistic regression on frozen image embeddings (seeded stratified split), on CPU."""

    main_score = MainScore("*.accuracy", "linear-probe accuracy (mean over classification sets)")

    def __init__(
        self,
        test_fraction: Annotated[float, Field(gt=0, lt=1, description="fraction of each set held out to test the probe")] = 0.5,
        C: Annotated[float, Field(gt=0, le=1e6, description="inverse L2 regularisation of the logistic regression")] = 1.0,
        max_iter: Annotated[int, Field(ge=1, le=10**6, description="solver iterations of the logistic regression")] = 1000,
    ) -> None:
        self.test_fraction, self.C, self.max_iter = float(test_fraction), float(C), int(max_iter)
        self.metric_info: dict[str, MetricInfo] = dict(METRICS)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        sets = ctx.of_type(ClassificationSet)
        if not sets:
            raise Skip("no classification sets")
        out: dict[str, Any] = {}
        for es in sets:
            labels = np.asarray(es.record.labels)
            if len(labels) < 2 or len(np.unique(labels)) < 2:
                continue  # nothing to learn
            feats = es.image_emb.float().numpy()
            acc = probe_accuracy(feats, labels, self.test_fraction, self.C, self.max_iter, ctx.seed,
                                 es.record.tags.get("candidates"))
            out[safe_key(es.record.name)] = {"accuracy": acc}
        if not out:
            raise Skip("no classification set has 2 or more samples of 2 or more classes")
        return out

    def reference_rows(self, ctx: EvalContext) -> dict[str, dict[str, float]]:
        """Chance, the blind oracle, the same probe on raw pixels and, for sets that declare them, on
        their binding-free features, per set (see ``references``; the job-independent values are
        kept in ``ctx.cache_dir`` when the runner gives one)."""
        return self._rows([es.record for es in ctx.of_type(ClassificationSet)], ctx.cache_dir)

    def prepare(self, records: list, cache_dir: Path) -> None:
        """Compute the reference rows' job-independent values into ``cache_dir`` before any job
        needs them (the executors call it once per world, on the jobs' threads)."""
        self._rows([r for r in records if isinstance(r, ClassificationSet)], cache_dir)

    def _rows(self, records: list, cache_dir: Path | None) -> dict[str, dict[str, float]]:
        rows: dict[str, dict[str, float]] = {}
        for record in records:
            labels = np.asarray(record.labels)
            if len(labels) < 2 or len(np.unique(labels)) < 2:
                continue
            values = classification_rows(record, cache_dir)
            values[PIXELS] = self._pixel_probe(record, labels, cache_dir)
            free = self._binding_free_probe(record, labels, cache_dir)
            if free is not None:
                values[BINDING_FREE] = free
            for row, value in values.items():
                rows.setdefault(row, {})[f"{safe_key(record.name)}.accuracy"] = value
        return rows

    def _pixel_probe(self, record, labels: np.ndarray, cache_dir=None, seed: int = 0) -> float:
        """The probe on raw pixels, on the split of seed 0 (it does not depend on the job, only on the
        set and the probe's settings): computed once per process, and once per run of jobs when
        ``cache_dir`` is given (``reference_cache``), under the features', labels' and settings' key.
        On the job's threads, which are part of the key: the thread count changes the order of the
        solver's floating-point sums, so the value is a function of that key alone, and a job gets the
        number it would compute itself."""
        return self._cached_probe("pixel-probe", pixel_features(record.images), record, labels, cache_dir, seed,
                                  {"pixel_side": PIXEL_SIDE})

    def _binding_free_probe(self, record, labels: np.ndarray, cache_dir=None, seed: int = 0) -> float | None:
        """The probe on the set's standardised ``tags["binding_free_features"]`` (``references``), cached
        like ``_pixel_probe`` under its own kind; None when the set declares none."""
        feats = binding_free_features(record)
        if feats is None:
            return None
        return self._cached_probe("binding-free-probe", feats, record, labels, cache_dir, seed, {})

    def _cached_probe(self, kind: str, feats: np.ndarray, record, labels: np.ndarray, cache_dir, seed: int,
                      extra: dict[str, Any]) -> float:
        candidates = record.tags.get("candidates")
        threads = _job_threads()
        params = {"test_fraction": self.test_fraction, "C": self.C, "max_iter": self.max_iter, "seed": seed,
                  **extra, "threads": threads}
        content = {"features": feats, "labels": labels,
                   "candidates": np.asarray(candidates) if candidates is not None else None}
        key = content_key(kind, params, content, libraries=("numpy", "scikit-learn", "scipy"))
        return cached(cache_dir, kind, key, valid=is_rate, about={"set": str(record.name), **params},
                      compute=lambda: probe_accuracy(feats, labels, self.test_fraction, self.C, self.max_iter, seed,
                                                     candidates, threads=threads))
