"""The gap metrics (``harness.metrics.gap.gap_metrics``) as an evaluation plugin.

Runs on one paired set: each image of a retrieval set with its first caption (or, in the
same-modality control, its second view). By default the first retrieval set that has paired
embeddings; ``set`` names another.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from harness.api import EmbeddedSet, EvalContext, MetricInfo, Skip, gap_metrics
from harness.builtin.evaluations.retrieval import paired_sets

METRICS = {
    "centroid_distance": MetricInfo("Centroid distance", "gap", False),
    "linear_separability": MetricInfo("Linear separability", "gap", False),
    "mean_paired_cosine": MetricInfo("Mean paired cosine", "gap", True),
    "uniformity_image": MetricInfo("Uniformity (image)", "gap", False),
    "uniformity_text": MetricInfo("Uniformity (text)", "gap", False),
    "uniformity": MetricInfo("Uniformity", "gap", False),
    "cross_uniformity": MetricInfo("Cross-uniformity", "gap", False),
    "alignment": MetricInfo("Alignment", "gap", False),
    "rmg": MetricInfo("Relative modality gap", "gap", False),
    "l2i": MetricInfo("Mean paired distance (L2I)", "gap", False),
    "effective_rank_image": MetricInfo("Effective rank (image)", "gap", True),
    "effective_rank_text": MetricInfo("Effective rank (text)", "gap", True),
    "pairs_sampled": MetricInfo("Pairs sampled", "gap", None),
    "separability_pairs": MetricInfo("Separability pairs", "gap", None),
}


def select_paired_set(ctx: EvalContext, name: str | None) -> EmbeddedSet:
    """The first retrieval set with paired embeddings, or the one called ``name``; Skip when there is none."""
    sets = paired_sets(ctx)
    if name is None:
        if not sets:
            raise Skip("no retrieval set with paired embeddings")
        return sets[0]
    for s in sets:
        if s.record.name == name:
            return s
    have = ", ".join(repr(s.record.name) for s in sets) or "none"
    raise Skip(f"no paired set named {name!r} (paired sets: {have})")


class Gap:
    """Gap geometry (centroid distance, separability, uniformity, alignment, RMG, ...) of a paired set."""

    def __init__(
        self,
        set: Annotated[str | None, Field(max_length=200, description=(
            "the paired set to measure (default: the first retrieval set with paired embeddings)"))] = None,
        max_pairs: Annotated[int | None, Field(ge=1, le=10**9, description=(
            "sample this many pairs for the pairwise metrics (default: exact, all pairs)"))] = None,
        separability_max_pairs: Annotated[int, Field(ge=2, le=10**7, description=(
            "at most this many pairs enter the linear-separability probe"))] = 10000,
    ) -> None:
        self.set_name = set
        self.max_pairs = max_pairs
        self.separability_max_pairs = separability_max_pairs
        self.metric_info: dict[str, MetricInfo] = dict(METRICS)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        x, y = select_paired_set(ctx, self.set_name).paired()
        if x.shape[0] < 2:
            raise Skip("gap metrics need at least 2 pairs")
        return gap_metrics(
            x, y, seed=ctx.seed, max_pairs=self.max_pairs, separability_max_pairs=self.separability_max_pairs
        )
