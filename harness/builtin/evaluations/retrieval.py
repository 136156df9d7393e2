"""Image <-> text retrieval recall@k from cached embeddings, several captions per image.

As in CLIP papers and clip_benchmark's ``metrics.zeroshot_retrieval.evaluate``: text->image R@k is
the fraction of captions whose image is among the k images of highest cosine; image->text R@k the
fraction of images with at least one of their captions among the k captions of highest cosine.
Scores are computed in row blocks (memory O(block x candidates)).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from harness.api import EmbeddedSet, EvalContext, MainScore, MetricInfo, RetrievalSet, Skip
from harness.builtin.evaluations.keys import safe_key

KS = (1, 5, 10)
METRICS = {
    f"{direction}_r{k}": MetricInfo(f"{label} R@{k}", "downstream", True)
    for direction, label in (("image_to_text", "Image->text"), ("text_to_image", "Text->image"))
    for k in KS
}


def _hits_at_k(query: torch.Tensor, gallery: torch.Tensor, is_hit, ks: Sequence[int], block: int) -> list[float]:
    """For each k, the fraction of query rows with a hit among their top-k gallery rows (by dot product)."""
    kmax = min(max(ks), gallery.shape[0])
    counts = [0] * len(ks)
    for r0 in range(0, query.shape[0], block):
        top = torch.topk(query[r0:r0 + block] @ gallery.T, kmax, dim=1).indices
        hit = is_hit(r0, top)  # (rows, kmax) bool
        for n, k in enumerate(ks):
            counts[n] += int(hit[:, : min(k, kmax)].any(dim=1).sum())
    return [c / query.shape[0] for c in counts]


def retrieval_recalls(
    image_emb: torch.Tensor,
    pair_emb: torch.Tensor,
    pair_image_index: torch.Tensor,
    ks: Sequence[int] = KS,
    block: int = 1024,
) -> dict[str, float]:
    """``image_to_text_r{k}`` and ``text_to_image_r{k}`` for unit image rows (N, d) and caption rows (M, d)."""
    image_emb, pair_emb = image_emb.float(), pair_emb.float()
    owner = pair_image_index.long()

    def text_hit(r0: int, top: torch.Tensor) -> torch.Tensor:  # top: image ids of caption rows r0...
        return top == owner[r0:r0 + top.shape[0], None]

    def image_hit(r0: int, top: torch.Tensor) -> torch.Tensor:  # top: caption rows of images r0...
        return owner[top] == torch.arange(r0, r0 + top.shape[0])[:, None]

    t2i = _hits_at_k(pair_emb, image_emb, text_hit, ks, block)
    i2t = _hits_at_k(image_emb, pair_emb, image_hit, ks, block)
    out = {f"image_to_text_r{k}": v for k, v in zip(ks, i2t)}
    out.update({f"text_to_image_r{k}": v for k, v in zip(ks, t2i)})
    return out


def paired_sets(ctx: EvalContext) -> list[EmbeddedSet]:
    """The retrieval sets that carry second-tower embeddings (captions, or second views)."""
    return [s for s in ctx.of_type(RetrievalSet) if s.pair_emb is not None and s.pair_image_index is not None]


class Retrieval:
    """Image<->text retrieval recall@1/5/10 (image<->view in the same-modality control)."""

    main_score = MainScore("*.image_to_text_r1", "image→text R@1 (mean over retrieval sets)")

    def __init__(self) -> None:
        self.metric_info: dict[str, MetricInfo] = dict(METRICS)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        sets = paired_sets(ctx)
        if not sets:
            raise Skip("no retrieval sets with paired embeddings")
        return {
            safe_key(s.record.name): retrieval_recalls(s.image_emb, s.pair_emb, s.pair_image_index) for s in sets
        }
