"""The dataset contract (``harness.types.Dataset``) as named rules, and ``check_dataset``.

What a dataset declares (``supplies``, ``splits``) is read from its ``PluginInfo``; the rules call
``eval_sets()`` and ``train_pairs()`` for real.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from harness.api import SUPPLIED_EXTRAS, ArithmeticSet, ClassificationSet, RetrievalSet, one_line
from harness.registry import PluginInfo
from harness.testing._base import fail, guard, run_checks, subject


def _check_images(what: str, images: Any, n: int) -> None:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != n:
            fail(what, f"images must be a uint8 (N, H, W, 3) array with N = {n}, got {images.dtype} {images.shape}")
        return
    if isinstance(images, list) and len(images) == n:
        from PIL import Image

        if all(isinstance(im, Image.Image) for im in images):
            return
    fail(what, f"images must be a uint8 (N, H, W, 3) array or a list of N = {n} PIL images, got {type(images).__name__}")


def _check_record(what: str, rec: Any) -> None:
    if not isinstance(rec, (ClassificationSet, RetrievalSet, ArithmeticSet)):
        fail(what, f"eval_sets() must return ClassificationSet/RetrievalSet/ArithmeticSet records, got {type(rec).__name__}")
    where = f"{what}: set {rec.name!r}"
    if not isinstance(rec.name, str) or not rec.name:
        fail(what, "every evaluation set needs a non-empty name")
    if isinstance(rec, ClassificationSet):
        _check_images(where, rec.images, len(rec.labels))
        labels = np.asarray(rec.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            fail(where, "labels must be a 1-D integer array")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(rec.classnames)):
            fail(where, f"labels must index classnames (0..{len(rec.classnames) - 1})")
        if not rec.templates or not all(isinstance(t, str) and "{c}" in t for t in rec.templates):
            fail(where, "templates must be a non-empty list of strings containing '{c}'")
    elif isinstance(rec, RetrievalSet):
        _check_images(where, rec.images, len(rec.captions))
        if not all(isinstance(c, list) and c and all(isinstance(t, str) for t in c) for c in rec.captions):
            fail(where, "captions must hold a non-empty list of strings per image")
    else:
        n = len(rec.images)
        for t in rec.triplets:
            if not (0 <= t.source < n and all(0 <= i < n for i in t.target_ids)):
                fail(where, "triplet indices must point into the gallery")


def _method(ds: Any, what: str, name: str) -> Callable[..., Any]:
    method = getattr(ds, name, None)  # a method of the built dataset, not plugin metadata
    if not callable(method):
        fail(what, f"has no {name}() method")
    return method


def _eval_sets(ds: Any, what: str) -> list:
    sets = guard(what, "eval_sets()", _method(ds, what, "eval_sets"))
    if not isinstance(sets, list) or not sets:
        fail(what, "eval_sets() must return a non-empty list of evaluation sets")
    return sets


def _train_pairs(ds: Any, what: str) -> Any:
    """Its ``PairSource``, or None for an evaluation-only dataset (which says so with ``ValueError``)."""
    try:
        return _method(ds, what, "train_pairs")()
    except ValueError:
        return None  # an evaluation-only dataset, said with ValueError (e.g. clip_benchmark sets)
    except AssertionError:
        raise
    except Exception as exc:
        fail(what, f"train_pairs() raised {one_line(exc)}")


def _same_images(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(a, b))


def _indices(pairs: Any, what: str) -> np.ndarray:
    n = guard(what, "len(train_pairs())", lambda: len(pairs))
    if n < 1:
        fail(what, "train_pairs() is empty")
    return np.arange(min(4, n))


# ------------------------------------------------------------------------------------------- rules


def check_dataset_methods(ds: Any, info: PluginInfo | None = None) -> None:
    """It has ``train_pairs()`` and ``eval_sets()`` methods."""
    _, what = subject("dataset", ds, info)
    for name in ("train_pairs", "eval_sets"):
        _method(ds, what, name)


def check_dataset_eval_sets(ds: Any, info: PluginInfo | None = None) -> None:
    """``eval_sets()`` returns well-formed records with unique names (labels index class names,
    templates hold ``{c}``, every image has captions, triplets point into the gallery)."""
    _, what = subject("dataset", ds, info)
    sets = _eval_sets(ds, what)
    for rec in sets:
        _check_record(what, rec)
    names = [rec.name for rec in sets]
    if len(set(names)) != len(names):
        fail(what, f"evaluation set names must be unique, got {names}")


def check_dataset_validation_split(ds: Any, info: PluginInfo | None = None) -> None:
    """With ``"validation"`` in its ``splits``, ``eval_sets(split="validation")`` answers sets of the same names."""
    info, what = subject("dataset", ds, info)
    if "validation" not in info.splits:
        return
    names = [rec.name for rec in _eval_sets(ds, what)]
    val = guard(what, "eval_sets(split='validation')", lambda: ds.eval_sets(split="validation"))
    if sorted(r.name for r in val) != sorted(names):
        fail(what, "eval_sets(split='validation') must return sets with the same names as eval_sets()")
    for rec in val:
        _check_record(what, rec)


def check_dataset_supplies(ds: Any, info: PluginInfo | None = None) -> None:
    """The extras it ``supplies`` are ones a dataset can supply (``SUPPLIED_EXTRAS``)."""
    info, what = subject("dataset", ds, info)
    for name in info.supplies:
        if name not in SUPPLIED_EXTRAS:
            fail(what, f"supplies an unknown extra {name!r}; datasets can supply: {', '.join(SUPPLIED_EXTRAS)}")


def check_dataset_train_pairs(ds: Any, info: PluginInfo | None = None) -> None:
    """``train_pairs()`` (unless evaluation-only, said with ``ValueError``) is a ``PairSource`` whose
    ``get_batch`` returns N images and N captions, deterministically for a given rng."""
    _, what = subject("dataset", ds, info)
    pairs = _train_pairs(ds, what)
    if pairs is None:
        return
    idx = _indices(pairs, what)
    first = guard(what, "get_batch", lambda: pairs.get_batch(idx, np.random.default_rng(0)))
    second = guard(what, "get_batch", lambda: pairs.get_batch(idx, np.random.default_rng(0)))
    if not isinstance(first, tuple) or len(first) != 2:
        fail(what, "get_batch(indices, rng) must return (images, captions)")
    _check_images(f"{what}: get_batch", first[0], len(idx))
    if not isinstance(first[1], list) or len(first[1]) != len(idx) or not all(isinstance(c, str) for c in first[1]):
        fail(what, "get_batch must return one caption string per index")
    if first[1] != second[1] or not _same_images(first[0], second[0]):
        fail(what, "get_batch is not deterministic given the rng's seed")


def check_dataset_negatives(ds: Any, info: PluginInfo | None = None) -> None:
    """Supplying ``text_negatives``, ``get_batch_with_negatives`` returns N lists of K >= 1 captions,
    none equal to its positive."""
    info, what = subject("dataset", ds, info)
    if "text_negatives" not in info.supplies:
        return
    pairs = _train_pairs(ds, what)
    if pairs is None:
        return
    idx = _indices(pairs, what)
    getter = getattr(pairs, "get_batch_with_negatives", None)  # a method of the pair source
    if not callable(getter):
        fail(what, "supplies text_negatives but its PairSource has no get_batch_with_negatives()")
    got = guard(what, "get_batch_with_negatives", lambda: getter(idx, np.random.default_rng(0)))
    if not isinstance(got, tuple) or len(got) != 3:
        fail(what, "get_batch_with_negatives must return (images, captions, negatives)")
    _, captions, negatives = got
    k = len(negatives[0]) if negatives else 0
    if len(negatives) != len(idx) or k < 1 or any(len(row) != k for row in negatives):
        fail(what, "negatives must be N lists of the same number K >= 1 of captions")
    for caption, row in zip(captions, negatives):
        if not all(isinstance(c, str) and c for c in row) or caption in row:
            fail(what, f"a hard negative must be a caption other than its positive ({caption!r})")


def check_dataset_caption_groups(ds: Any, info: PluginInfo | None = None) -> None:
    """Supplying ``caption_group``, ``caption_groups(indices, captions)`` returns N integers, the same
    for equal captions, deterministically, and draws nothing from the batch's rng."""
    info, what = subject("dataset", ds, info)
    if "caption_group" not in info.supplies:
        return
    pairs = _train_pairs(ds, what)
    if pairs is None:
        return
    method = getattr(pairs, "caption_groups", None)  # a method of the pair source
    if not callable(method):
        fail(what, "supplies caption_group but its PairSource has no caption_groups(indices, captions)")
    idx = _indices(pairs, what)
    rng = np.random.default_rng(0)
    _, captions = guard(what, "get_batch", lambda: pairs.get_batch(idx, rng))
    state = rng.bit_generator.state
    groups = np.asarray(guard(what, "caption_groups", lambda: method(idx, captions)))
    if groups.shape != (len(idx),) or not np.issubdtype(groups.dtype, np.integer):
        fail(what, f"caption_groups must return {len(idx)} integers (one per pair), got shape {groups.shape}, "
                   f"dtype {groups.dtype}")
    if not np.array_equal(groups, np.asarray(method(idx, captions))):
        fail(what, "caption_groups is not deterministic")
    if rng.bit_generator.state != state:
        fail(what, "caption_groups must draw no random numbers (it would change the run's batches)")
    first: dict[str, int] = {}
    for caption, group in zip(captions, groups.tolist()):
        if first.setdefault(caption, group) != group:
            fail(what, f"caption_groups gives two groups to the same caption {caption!r}")


DATASET_CHECKS: tuple[Callable[..., None], ...] = (
    check_dataset_methods,
    check_dataset_eval_sets,
    check_dataset_validation_split,
    check_dataset_supplies,
    check_dataset_train_pairs,
    check_dataset_negatives,
    check_dataset_caption_groups,
)


def check_dataset(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check a dataset plugin against ``harness.types.Dataset``; None when it fits.

    Every rule of ``DATASET_CHECKS`` runs, each on a freshly built dataset; the ``AssertionError``
    (a ``ChecksFailed``) lists every violated rule, one line each.
    """
    run_checks(DATASET_CHECKS, "dataset", name_or_factory, params)
