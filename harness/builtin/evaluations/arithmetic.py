"""Multi-modal arithmetic in the SIMAT style (Couairon et al. 2022), as used by Fahim et al. 2024.

For a triplet (source image s, value word v, target word t) and a scale lambda:
query = normalise(img(s) + lambda * (text(t) - text(v))); the gallery is ranked by cosine with
the query, the source image excluded; hit@k = 1 when one of the k nearest images is in the
triplet's ``target_ids``. Words are embedded as given, each distinct word once.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field

from harness.api import ArithmeticSet, EmbeddedSet, EvalContext, MetricInfo, Skip
from harness.builtin.evaluations.keys import number_key, safe_key
from harness.builtin.evaluations.references import cached_arithmetic_rows

METRICS = {
    "hit1": MetricInfo("Arithmetic hit@1", "downstream", True),
    "hit5": MetricInfo("Arithmetic hit@5", "downstream", True),
}


def arithmetic_hits(
    es: EmbeddedSet, word_emb: dict[str, torch.Tensor], lam: float, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """hit@k (keys ``hit1``, ``hit5``) of one arithmetic set at scale ``lam``; ``word_emb`` maps word -> unit vector."""
    rec: ArithmeticSet = es.record
    gallery = es.image_emb.float()
    src = torch.tensor([t.source for t in rec.triplets], dtype=torch.long)
    shift = torch.stack([word_emb[t.target_word] - word_emb[t.value_word] for t in rec.triplets])
    query = F.normalize(gallery[src] + lam * shift, dim=-1)
    scores = query @ gallery.T
    scores[torch.arange(len(src)), src] = -math.inf  # the source image is not an answer
    kmax = min(max(ks), gallery.shape[0] - 1)
    top = torch.topk(scores, kmax, dim=1).indices
    out = {}
    for k in ks:
        hits = [bool(set(top[n, : min(k, kmax)].tolist()) & set(t.target_ids)) for n, t in enumerate(rec.triplets)]
        out[f"hit{k}"] = sum(hits) / len(hits)
    return out


class Arithmetic:
    """SIMAT-style multi-modal arithmetic: hit@1/5 of img(source) + lambda (text(target) - text(value))."""

    def __init__(
        self,
        lambdas: Annotated[list[Annotated[float, Field(ge=-1e3, le=1e3)]], Field(min_length=1, max_length=32, description=(
            "the scales lambda of the query img(source) + lambda (text(target) - text(value)); one result per scale"))]
        = [0.5, 1.0, 2.0],  # noqa: B006 (read-only default)
    ) -> None:
        lambdas = [float(v) for v in lambdas]
        if len({number_key("lambda", v) for v in lambdas}) != len(lambdas):
            raise ValueError(f"lambdas must be distinct, got {lambdas}")
        self.lambdas = lambdas
        self.metric_info: dict[str, MetricInfo] = dict(METRICS)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        sets = [s for s in ctx.of_type(ArithmeticSet) if len(s.record.triplets) > 0]
        if not sets:
            raise Skip("no arithmetic sets")
        if not ctx.has_text:
            raise Skip("multi-modal arithmetic needs a text tower; this encoder pairs images with images")
        out: dict[str, Any] = {}
        for es in sets:
            if es.image_emb.shape[0] < 2:
                continue  # no image besides the source: nothing to retrieve
            words = sorted({w for t in es.record.triplets for w in (t.value_word, t.target_word)})
            emb = F.normalize(ctx.encode_texts(words).float(), dim=-1)
            word_emb = dict(zip(words, emb))
            out[safe_key(es.record.name)] = {
                number_key("lambda", lam): arithmetic_hits(es, word_emb, lam) for lam in self.lambdas
            }
        if not out:
            raise Skip("no arithmetic set has a gallery of at least 2 images")
        return out

    def reference_rows(self, ctx: EvalContext) -> dict[str, dict[str, float]]:
        """Chance and the blind oracle of each set's hit@k, the same at every lambda (see ``references``;
        kept in ``ctx.cache_dir`` when the runner gives one)."""
        return self._rows([es.record for es in ctx.of_type(ArithmeticSet)], ctx.cache_dir)

    def prepare(self, records: list, cache_dir: Path) -> None:
        """Compute the oracle rows into ``cache_dir`` before any job needs them (once per world)."""
        self._rows([r for r in records if isinstance(r, ArithmeticSet)], cache_dir)

    def _rows(self, records: list, cache_dir: Path | None) -> dict[str, dict[str, float]]:
        rows: dict[str, dict[str, float]] = {}
        for record in records:
            if not record.triplets or len(record.images) < 2:  # one embedding row per image
                continue
            for row, hits in cached_arithmetic_rows(record, cache_dir).items():
                for lam in self.lambdas:
                    for hit, value in hits.items():
                        rows.setdefault(row, {})[f"{safe_key(record.name)}.{number_key('lambda', lam)}.{hit}"] = value
        return rows
