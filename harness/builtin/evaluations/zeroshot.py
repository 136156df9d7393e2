"""Zero-shot classification from cached image embeddings and prompt-ensembled class weights.

Class weights follow clip_benchmark's ``zero_shot_classifier`` (CLIP, Radford et al. 2021): for
class c, w_c = normalise(mean_t normalise(text(template_t.format(c=name_c)))), here with every
prompt of every class encoded in one call. Scores are image_emb @ W^T; the metrics are those of
clip_benchmark's ``metrics.zeroshot_classification.evaluate``: top-1, top-5 (>= 5 classes) and
mean per-class recall (sklearn's balanced accuracy).

The evaluation's main score is ``mean_top1``: the unweighted mean of top-1 over the attribute
tasks, i.e. the classification sets tagged with an ``"attribute"`` (shape, colour, size, position,
composition...), or over every set when none is tagged. A dataset that declares its headline
attributes tags those sets ``"headline"``, and the mean is over them alone. Unweighted, so no single
easy attribute dominates the ranking.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.api import ClassificationSet, EvalContext, MainScore, MetricInfo, Skip
from harness.builtin.evaluations.clip_benchmark_compat import accuracy
from harness.builtin.evaluations.keys import safe_key
from harness.builtin.evaluations.references import add_mean, classification_rows

METRICS = {
    "top1": MetricInfo("Zero-shot top-1", "downstream", True),
    "top5": MetricInfo("Zero-shot top-5", "downstream", True),
    "mean_per_class_recall": MetricInfo("Zero-shot mean per-class recall", "downstream", True),
}

MEAN = "mean_top1"


def class_weights(
    encode_texts: Callable[[Sequence[str]], torch.Tensor], classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(C, d) unit class vectors: per class, the normalised mean of its normalised prompt embeddings."""
    if not templates:
        raise ValueError("a classification set needs at least one prompt template")
    prompts = [t.format(c=c) for c in classnames for t in templates]
    emb = F.normalize(encode_texts(prompts).float(), dim=-1)
    emb = emb.view(len(classnames), len(templates), -1).mean(dim=1)
    return F.normalize(emb, dim=-1)


def restrict(scores: torch.Tensor, record: ClassificationSet) -> torch.Tensor:
    """Scores outside each image's ``tags["candidates"]`` (an (N, k) array of class indices) set to -inf.

    A set with candidates is multiple choice: each image is classified among its own k classes (e.g.
    a composition probe's two bindings of the same shapes and colours).
    """
    candidates = record.tags.get("candidates")
    if candidates is None:
        return scores
    allowed = torch.zeros_like(scores, dtype=torch.bool)
    allowed.scatter_(1, torch.as_tensor(np.asarray(candidates), dtype=torch.long), True)
    return scores.masked_fill(~allowed, -math.inf)


def n_choices(scores: torch.Tensor) -> int:
    """How many classes every row can choose among (all, or its candidates)."""
    return int(torch.isfinite(scores).sum(dim=1).min()) if scores.numel() else 0


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """top1, top5 (when every row has >= 5 classes to choose among) and mean per-class recall of
    scores (N, C) against labels (N,); -inf scores are classes a row cannot choose."""
    from sklearn.metrics import balanced_accuracy_score

    n_classes = n_choices(scores)
    out: dict[str, float] = {}
    if n_classes >= 5:
        out["top1"], out["top5"] = accuracy(scores, labels, topk=(1, 5))
    else:
        (out["top1"],) = accuracy(scores, labels, topk=(1,))
    pred = scores.argmax(dim=1)
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": expected, and harmless here
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        out["mean_per_class_recall"] = float(balanced_accuracy_score(labels.numpy(), pred.numpy()))
    return out


def labels_of(record: ClassificationSet) -> torch.Tensor:
    """The set's integer labels as a long tensor."""
    return torch.as_tensor(np.asarray(record.labels), dtype=torch.long)


def main_score_sets(records: list[ClassificationSet]) -> list[ClassificationSet]:
    """The sets whose top-1 the main score averages: the dataset's headline tasks (tagged
    ``headline``), else those tagged with an attribute, else all."""
    headline = [r for r in records if r.tags.get("headline")]
    tagged = [r for r in records if r.tags.get("attribute")]
    return headline or tagged or list(records)


class ZeroShotClassification:
    """Zero-shot classification (top-1, top-5, mean per-class recall) with prompt-ensembled class weights."""

    main_score = MainScore(MEAN, "zero-shot top-1, unweighted mean over the attribute tasks")

    def __init__(self) -> None:
        self.metric_info: dict[str, MetricInfo] = {
            **METRICS, MEAN: MetricInfo("Zero-shot top-1 (mean over tasks)", "downstream", True)}

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        sets = ctx.of_type(ClassificationSet)
        if not sets:
            raise Skip("no classification sets")
        if not ctx.has_text:
            raise Skip(ctx.no_text_reason)
        out: dict[str, Any] = {}
        for es in sets:
            rec = es.record
            weights = class_weights(ctx.encode_texts, rec.classnames, rec.templates)
            scores = restrict(es.image_emb.float() @ weights.T, rec)
            out[safe_key(rec.name)] = classification_metrics(scores, labels_of(rec))
        chosen = main_score_sets([es.record for es in sets])
        out[MEAN] = float(np.mean([out[safe_key(r.name)]["top1"] for r in chosen]))
        return out

    def reference_rows(self, ctx: EvalContext) -> dict[str, dict[str, float]]:
        """Chance and the blind oracle of each set's top-1 and of ``mean_top1`` (see ``references``)."""
        records = [es.record for es in ctx.of_type(ClassificationSet)]
        per_set = self._per_set(records, ctx.cache_dir)
        rows: dict[str, dict[str, float]] = {}
        for name, values in per_set.items():
            for row, value in values.items():
                rows.setdefault(row, {})[f"{name}.top1"] = value
        add_mean(rows, per_set, [safe_key(r.name) for r in main_score_sets(records)], MEAN)
        return rows

    def prepare(self, records: list, cache_dir: Path) -> None:
        """Compute the blind oracles into ``cache_dir`` before any job needs them (once per world)."""
        self._per_set([r for r in records if isinstance(r, ClassificationSet)], cache_dir)

    @staticmethod
    def _per_set(records: list, cache_dir: Path | None) -> dict[str, dict[str, float]]:
        return {safe_key(r.name): classification_rows(r, cache_dir) for r in records}
