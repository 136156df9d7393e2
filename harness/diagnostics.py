"""Suppression diagnostics of a training run: what each batch could teach, and when each attribute is learned.

Feature suppression (Chen, Luo & Li 2021; Robinson et al. 2021): easy features (colour, position)
can satisfy a contrastive loss and starve a harder one (shape). Two optional hooks of a
``PairSource`` let a dataset show it; the trainer calls them and writes what they say to the job's
``log.jsonl`` (and a summary into the train metrics):

- ``batch_stats() -> {name: fraction}``: statistics of the batch just returned by ``get_batch``
  (the shapes world: ``shape_only_rows``, the fraction of the batch's rows for which shape is the
  only attribute telling the positive from some in-batch negative). Averaged per log window
  (``"batch"`` in the training records) and over the run (``train.<name>``).
- ``probe_set() -> (images, {attribute: labels})``: a small labelled set from the training
  distribution (never a reported set). Before training and after 1/4, 1/2, 3/4 and all of the
  steps, the image tower embeds it (eval mode, no gradient: training is unchanged) and a
  logistic regression per attribute, fitted on half, is scored on the other half:
  ``{"step": k, "probe": {attribute: accuracy}}`` records.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.precision import autocast

PROBE_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)


def probe_points(steps: int) -> set[int]:
    """The step counts after which the probe runs (0 = before the first step)."""
    return {int(round(f * steps)) for f in PROBE_FRACTIONS}


class TrainingDiagnostics:
    """Collects a run's batch statistics and probe accuracies (a no-op for a PairSource without hooks)."""

    def __init__(self, pairs, encoder, device: torch.device, precision: str, steps: int, seed: int, enabled: bool = True):
        self.batch_stats = getattr(pairs, "batch_stats", None) if enabled else None
        self.probe_set = getattr(pairs, "probe_set", None) if enabled else None
        self.encoder, self.device, self.precision, self.seed = encoder, device, precision, seed
        self.points = probe_points(steps) if callable(self.probe_set) else set()
        self.window: dict[str, list[float]] = {}
        self.total: dict[str, list[float]] = {}
        self.seconds = 0.0  # time spent probing (left out of the training time)
        self._probe: tuple[np.ndarray, dict[str, np.ndarray]] | None = None

    def after_batch(self) -> None:
        if not callable(self.batch_stats):
            return
        for name, value in self.batch_stats().items():
            self.window.setdefault(name, []).append(float(value))
            self.total.setdefault(name, []).append(float(value))

    def window_record(self) -> dict[str, Any]:
        """``{"batch": {name: mean over the window}}`` for a log record (and a new window), or {}."""
        if not self.window:
            return {}
        out = {"batch": {k: float(np.mean(v)) for k, v in self.window.items()}}
        self.window = {}
        return out

    def summary(self) -> dict[str, float]:
        """``{name: mean over the run}`` of the batch statistics, for the train metrics."""
        return {k: float(np.mean(v)) for k, v in self.total.items()}

    def state_dict(self) -> dict[str, Any]:
        """The accumulators (for a mid-run checkpoint: a resumed run's averages are the uninterrupted one's)."""
        return {"window": {k: list(v) for k, v in self.window.items()},
                "total": {k: list(v) for k, v in self.total.items()}, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.window = {k: [float(x) for x in v] for k, v in state["window"].items()}
        self.total = {k: [float(x) for x in v] for k, v in state["total"].items()}
        self.seconds = float(state["seconds"])

    def probe(self, done: int, log_file) -> dict[str, Any] | None:
        """Run the attribute probes if ``done`` steps is a probe point; append the record to the log
        and return it (None when no probe was due)."""
        if done not in self.points:
            return None
        t0 = time.perf_counter()
        if self._probe is None:
            self._probe = self.probe_set()
        images, labels = self._probe
        model = self.encoder.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), autocast(self.precision, self.device):
                x = self.encoder.preprocess_images(images, train=False).to(self.device)
                emb = F.normalize(self.encoder.encode_image(x).float(), dim=-1).cpu().numpy()
        finally:
            model.train(was_training)
        record = {"step": done, "probe": {name: _probe_accuracy(emb, np.asarray(y), self.seed) for name, y in labels.items()}}
        if log_file:
            import json

            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        self.seconds += time.perf_counter() - t0
        return record


def _probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """Test accuracy of a logistic regression fitted on a seeded half of (features, labels)."""
    from sklearn.linear_model import LogisticRegression

    order = np.random.default_rng(seed).permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    if len(np.unique(labels[train])) < 2:
        return float("nan")
    clf = LogisticRegression(max_iter=300, random_state=seed).fit(features[train], labels[train])
    return float(clf.score(features[test], labels[test]))
