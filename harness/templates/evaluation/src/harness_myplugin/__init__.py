"""myplugin: an evaluation plugin for contrastive-harness (a starting point: replace the metric)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from harness.api import EvalContext, MetricInfo, RetrievalSet, Skip, hookimpl


class MyPlugin:
    """Mean cosine of each image with its first caption, over the paired retrieval sets.

    ``evaluate`` works from the embeddings the job computed once (``ctx.sets``; L2-normalised) and
    returns a nested dict of numbers; ``metric_info`` describes each leaf key. Declare a
    ``main_score = harness.types.MainScore(key, description)`` to let it rank a leaderboard.
    """

    def __init__(self, min_pairs: Annotated[int, Field(ge=1, le=10**9, description="skip sets with fewer pairs")] = 2):
        self.min_pairs = min_pairs
        self.metric_info = {"mean_paired_cosine": MetricInfo("Mean paired cosine", "gap", None)}

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        out = {}
        for es in ctx.of_type(RetrievalSet):
            if es.pair_emb is None or len(es.record) < self.min_pairs:
                continue
            x, y = es.paired()
            out[es.record.name.replace(".", "_")] = {"mean_paired_cosine": float((x * y).sum(1).mean())}
        if not out:
            raise Skip(f"no paired retrieval set with at least {self.min_pairs} pairs")
        return out


@hookimpl
def harness_register_evaluations(register):
    register("myplugin", MyPlugin)
