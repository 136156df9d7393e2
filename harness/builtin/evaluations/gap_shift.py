"""Liang et al. 2022 ("Mind the Gap"): close or widen the modality gap post hoc by shifting embeddings.

With the gap vector g = mean(x) - mean(y) of the paired set and u = g / ||g||, every image
embedding becomes x' = normalise(x - delta/2 u) and every text (second-tower) embedding
y' = normalise(y + delta/2 u); in zero-shot the class text weights are shifted as y. delta = ||g||
moves the centroids (before renormalisation) onto each other. For each delta we report the
centroid distance of the shifted paired set, image<->text R@1 on it and, when the model has a
text tower, the zero-shot top-1 averaged over the classification sets.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from harness.api import ClassificationSet, EvalContext, MetricInfo, Skip
from harness.builtin.evaluations.clip_benchmark_compat import accuracy
from harness.builtin.evaluations.gap import select_paired_set
from harness.builtin.evaluations.keys import number_key
from harness.builtin.evaluations.retrieval import retrieval_recalls
from harness.builtin.evaluations.zeroshot import class_weights, labels_of

METRICS = {
    "delta": MetricInfo("Shift delta", "gap", None),
    "centroid_distance": MetricInfo("Centroid distance after shift", "gap", False),
    "zeroshot_top1": MetricInfo("Zero-shot top-1 after shift", "downstream", True),
    "image_to_text_r1": MetricInfo("Image->text R@1 after shift", "downstream", True),
    "text_to_image_r1": MetricInfo("Text->image R@1 after shift", "downstream", True),
}


def shift(emb: torch.Tensor, u: torch.Tensor, amount: float) -> torch.Tensor:
    """normalise(emb + amount * u), row-wise."""
    return F.normalize(emb.float() + amount * u, dim=-1)


class GapShift:
    """Liang et al.'s post-hoc shift along the gap vector: centroid distance, zero-shot top-1 and R@1 per delta."""

    def __init__(
        self,
        deltas: Annotated[list[Annotated[float, Field(ge=-10, le=10)]], Field(max_length=32, description=(
            "shifts delta along the gap vector, applied as x - delta/2 u, y + delta/2 u (Liang et al. 2022)"))]
        = [-0.5, 0.0, 0.5],  # noqa: B006 (read-only default)
        include_measured_gap: Annotated[bool, Field(strict=True, description=(
            "also shift by the measured gap (closing it)"))] = True,
        set: Annotated[str | None, Field(max_length=200, description=(
            "the paired set to shift (default: the first retrieval set)"))] = None,
    ) -> None:
        deltas = [float(d) for d in deltas]
        if len({number_key("delta", d) for d in deltas}) != len(deltas):
            raise ValueError(f"deltas must be distinct, got {deltas}")
        if not deltas and not include_measured_gap:
            raise ValueError("deltas is empty and include_measured_gap is false: nothing to evaluate")
        self.deltas = deltas
        self.include_measured_gap = include_measured_gap
        self.set_name = set
        self.metric_info: dict[str, MetricInfo] = dict(METRICS)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        es = select_paired_set(ctx, self.set_name)
        owner = es.pair_image_index.numpy()
        images, first_row = np.unique(owner, return_index=True)
        images, first_row = torch.from_numpy(images), torch.from_numpy(first_row)
        g = es.image_emb[images].double().mean(dim=0) - es.pair_emb[first_row].double().mean(dim=0)
        gap = g.norm().item()
        if gap == 0.0:
            raise Skip("the paired set has no gap (equal centroids): there is no direction to shift along")
        u = (g / gap).float()

        zeroshot = []  # (image_emb, class weights, labels) per classification set
        if ctx.has_text:
            for cs in ctx.of_type(ClassificationSet):
                rec = cs.record
                zeroshot.append((cs.image_emb, class_weights(ctx.encode_texts, rec.classnames, rec.templates), labels_of(rec)))

        runs = [(number_key("delta", d), d) for d in self.deltas]
        if self.include_measured_gap:
            runs.append(("measured_gap", gap))
        out: dict[str, Any] = {}
        for key, delta in runs:
            x, y = shift(es.image_emb, u, -delta / 2), shift(es.pair_emb, u, delta / 2)
            entry = {"centroid_distance": (x[images].double().mean(dim=0) - y[first_row].double().mean(dim=0)).norm().item()}
            r1 = retrieval_recalls(x, y, es.pair_image_index, ks=(1,))
            entry.update(image_to_text_r1=r1["image_to_text_r1"], text_to_image_r1=r1["text_to_image_r1"])
            if zeroshot:
                top1 = [accuracy(shift(img, u, -delta / 2) @ shift(w, u, delta / 2).T, lab)[0] for img, w, lab in zeroshot]
                entry["zeroshot_top1"] = sum(top1) / len(top1)
            if key == "measured_gap":
                entry["delta"] = delta
            out[key] = entry
        return out
