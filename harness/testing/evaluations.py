"""The evaluation contract (``harness.types.Evaluation``) as named rules, and ``check_evaluation``.

The rules evaluate on ``synthetic_context``: a classification, a retrieval and an arithmetic set
already embedded (20 images, d = 16), with a stand-in text tower, and once more without one.
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from harness.api import (
    ArithmeticSet,
    ArithmeticTriplet,
    ClassificationSet,
    EmbeddedSet,
    EvalContext,
    MainScore,
    MetricInfo,
    RetrievalSet,
    Skip,
    one_line,
)
from harness.columns import pattern_values
from harness.registry import PluginInfo
from harness.testing._base import fail, run_checks, subject

D = 16


def _text_fn(texts) -> torch.Tensor:
    """A deterministic stand-in text tower: a seeded unit vector per text."""
    rows = [torch.randn(D, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
    return F.normalize(torch.stack(rows), dim=-1) if rows else torch.zeros(0, D)


def synthetic_context(pair_modality: str = "text") -> EvalContext:
    """An embedded evaluation context with one set of each kind (20 images, d = 16), for checks."""
    g = torch.Generator().manual_seed(1)
    n = 20
    images = np.zeros((n, 8, 8, 3), np.uint8)
    labels = np.arange(n) % 3
    image_emb = F.normalize(torch.randn(n, D, generator=g), dim=-1)
    cls = ClassificationSet("toy_classes", images, labels, ["red", "green", "blue"], ["a {c} thing", "{c}"])
    ret = RetrievalSet("toy_retrieval", images, [[f"image {i}", f"picture {i}"] for i in range(n)])
    pair_emb = F.normalize(image_emb.repeat_interleave(2, 0) + 0.5 * torch.randn(2 * n, D, generator=g), dim=-1)
    triplets = [ArithmeticTriplet(i, "red", "blue", [j for j in range(n) if labels[j] == 2 and j != i]) for i in range(4)]
    ari = ArithmeticSet("toy_arithmetic", images, triplets)
    sets = [
        EmbeddedSet(cls, image_emb),
        EmbeddedSet(ret, image_emb, pair_emb, torch.arange(n).repeat_interleave(2)),
        EmbeddedSet(ari, image_emb),
    ]
    text = _text_fn if pair_modality == "text" else None
    return EvalContext(sets=sets, pair_modality=pair_modality, seed=0, encode_texts_fn=text)


def resolve_main_score(result: dict[str, Any], key: str) -> list[float]:
    """The values a main-score key names in an evaluation's result (``*`` matches one level)."""
    return pattern_values(result, key)


def _leaves(tree: Any, path: tuple[str, ...] = ()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, path + (key,))
    else:
        yield path, tree


def _normalised(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _normalised(v) for k, v in tree.items()}
    if isinstance(tree, float) and math.isnan(tree):
        return "nan"
    return tree


def _results(ev: Any, what: str) -> Iterator[tuple[EvalContext, Any]]:
    """(context, result) for the text-paired and the image-paired context; a ``Skip`` (with a reason) skips one."""
    for modality in ("text", "image"):
        ctx = synthetic_context(modality)
        try:
            out = ev.evaluate(ctx)
        except Skip as why:
            if not str(why).strip():
                fail(what, "a Skip must say why")
            continue
        except Exception as exc:
            fail(what, f"evaluate() raised {one_line(exc)} on a {modality}-paired context")
        yield ctx, out


# ------------------------------------------------------------------------------------------- rules
# ``metric_info``, ``main_score`` and ``reference_rows`` are read from the built evaluation: an
# instance may set them from its params (``gap`` does), and the runner reads the instance too.


def check_evaluation_metric_info(ev: Any, info: PluginInfo | None = None) -> None:
    """``metric_info`` maps leaf keys to ``harness.types.MetricInfo``."""
    _, what = subject("evaluation", ev, info)
    described = getattr(ev, "metric_info", None)
    if not isinstance(described, dict) or not all(isinstance(k, str) and isinstance(v, MetricInfo)
                                                  for k, v in described.items()):
        fail(what, "metric_info must be a dict of leaf key -> harness.types.MetricInfo")


def check_evaluation_results(ev: Any, info: PluginInfo | None = None) -> None:
    """``evaluate`` returns a nested dict with non-empty string keys holding no dots and numeric (or
    None) leaves, each leaf key described in ``metric_info``, or raises ``Skip`` with a reason; with
    and without a text tower, never an error."""
    _, what = subject("evaluation", ev, info)
    described = getattr(ev, "metric_info", None)
    described = described if isinstance(described, dict) else {}
    for _, out in _results(ev, what):
        if not isinstance(out, dict):
            fail(what, f"evaluate() must return a dict, got {type(out).__name__}")
        for path, value in _leaves(out):
            if any(not isinstance(k, str) or not k or "." in k for k in path):
                fail(what, f"result keys must be non-empty strings without dots, got {'/'.join(map(str, path))!r}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                fail(what, f"result {'.'.join(path)} must be a number or None, got {type(value).__name__}")
            if path[-1] not in described:
                fail(what, f"result key {path[-1]!r} has no metric_info entry")


def check_evaluation_deterministic(ev: Any, info: PluginInfo | None = None) -> None:
    """``evaluate`` gives the same result twice on the same context."""
    _, what = subject("evaluation", ev, info)
    for ctx, out in _results(ev, what):
        if _normalised(ev.evaluate(ctx)) != _normalised(out):
            fail(what, "evaluate() is not deterministic on the same context")


def check_evaluation_main_score(ev: Any, info: PluginInfo | None = None) -> None:
    """A declared ``main_score`` is a ``harness.types.MainScore`` naming values of the result."""
    _, what = subject("evaluation", ev, info)
    declared = getattr(ev, "main_score", None)
    if declared is None:
        return
    if not isinstance(declared, MainScore):
        fail(what, f"main_score must be a harness.types.MainScore or None, got {type(declared).__name__}")
    for _, out in _results(ev, what):
        if isinstance(out, dict) and not resolve_main_score(out, declared.key):
            fail(what, f"main_score key {declared.key!r} names no value of its result")


def check_evaluation_reference_rows(ev: Any, info: PluginInfo | None = None) -> None:
    """An optional ``reference_rows(ctx)`` returns ``{row: {key: number}}``."""
    _, what = subject("evaluation", ev, info)
    rows = getattr(ev, "reference_rows", None)
    if not callable(rows):
        return
    for ctx, _ in _results(ev, what):
        got = rows(ctx)
        if not isinstance(got, dict) or not all(
            isinstance(r, str) and isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, (int, float))
                                                               for k, x in v.items())
            for r, v in got.items()
        ):
            fail(what, "reference_rows(ctx) must return {row: {key: number}}")


EVALUATION_CHECKS: tuple[Callable[..., None], ...] = (
    check_evaluation_metric_info,
    check_evaluation_results,
    check_evaluation_deterministic,
    check_evaluation_main_score,
    check_evaluation_reference_rows,
)


def check_evaluation(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check an evaluation plugin against ``harness.types.Evaluation``; None when it fits.

    Every rule of ``EVALUATION_CHECKS`` runs, each on a freshly built evaluation; the
    ``AssertionError`` (a ``ChecksFailed``) lists every violated rule, one line each.
    """
    run_checks(EVALUATION_CHECKS, "evaluation", name_or_factory, params)
