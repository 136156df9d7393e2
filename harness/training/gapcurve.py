"""The gap over training: a job's ``train: {gap_curve: K}`` measures the modality gap of a fixed set
of training pairs at K evenly spaced points of its run (step 0 and the last step included).

The pairs are the first ``min(GAP_PAIRS, n)`` of a permutation of the training split drawn from
their own random stream (``default_rng([seed, STREAM])``), read once with ``get_batch`` and a
second stream of their own, so the training run draws exactly what it would without the curve
(its numbers do not change; only the log gains records). At each point the model embeds them in
eval mode without gradient (the image side, and the text side or, for a same-modality encoder, the
second view) and ``harness.metrics.gap_metrics`` reads the geometry; the record
``{"step": k, "epoch": e, "gap": {metric: value}}`` goes to ``log.jsonl`` (and TensorBoard); when
the metrics cannot be computed (embeddings that are not finite, fewer than 2 pairs) the record holds
``"gap": {}`` and a one-line ``gap_error``, and the job goes on. The time it takes is left out of
the training time. This is the paper's gap-against-training-progress
experiment (Fahim et al. 2024, the 3-D experiment).
"""

from __future__ import annotations

import json
import time
from typing import IO, Any

import numpy as np
import torch

from harness.embed import embed_images, embed_texts
from harness.metrics.gap import gap_metrics

GAP_PAIRS = 256
STREAM, CAPTION_STREAM = 7_001, 7_002
CURVE_METRICS = ("centroid_distance", "linear_separability", "mean_paired_cosine", "uniformity",
                 "cross_uniformity", "alignment")


def curve_points(steps: int, points: int) -> set[int]:
    """The step counts after which the gap is measured: ``points`` evenly spaced from 0 to ``steps``."""
    if points <= 1 or steps == 0:
        return {steps}
    return {int(round(k * steps / (points - 1))) for k in range(points)}


class GapCurve:
    """Measures the gap of a fixed set of training pairs at the curve's points (``measure``)."""

    def __init__(self, pairs, encoder, device: torch.device, precision: str, steps: int, points: int, n: int,
                 seed: int, batch_size: int = 256) -> None:
        self.pairs, self.encoder, self.device, self.precision = pairs, encoder, device, precision
        self.points = curve_points(steps, points)
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self.seconds = 0.0
        self._pairs: tuple[Any, list[str]] | None = None

    def _fixed_pairs(self) -> tuple[Any, list[str]]:
        if self._pairs is None:
            order = np.random.default_rng([self.seed, STREAM]).permutation(self.n)[:min(GAP_PAIRS, self.n)]
            images, texts = self.pairs.get_batch(np.sort(order), np.random.default_rng([self.seed, CAPTION_STREAM]))
            self._pairs = (images, list(texts))
        return self._pairs

    def measure(self, done: int, epoch: float, log_file: IO[str] | None) -> dict[str, Any] | None:
        """The record after ``done`` steps when it is a point of the curve (written to ``log_file``), else None."""
        if done not in self.points:
            return None
        t0 = time.perf_counter()
        images, texts = self._fixed_pairs()
        model = self.encoder.model
        was_training = model.training
        model.eval()
        try:
            x = embed_images(self.encoder, images, self.device, self.batch_size, self.precision)
            if getattr(self.encoder, "pair_modality", "text") == "text":
                y = embed_texts(self.encoder, texts, self.device, self.batch_size, self.precision)
            else:
                y = embed_images(self.encoder, images, self.device, self.batch_size, self.precision, pair=True)
        finally:
            model.train(was_training)
        try:
            metrics = gap_metrics(x, y, seed=self.seed)
            record = {"step": done, "epoch": epoch, "gap": {k: float(metrics[k]) for k in CURVE_METRICS}}
        except ValueError as exc:  # e.g. non-finite embeddings: the point is lost, never the job
            record = {"step": done, "epoch": epoch, "gap": {}, "gap_error": " ".join(str(exc).split())[:200]}
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        self.seconds += time.perf_counter() - t0
        return record
