"""The plugin contract as checks a plugin author runs (like scikit-learn's ``check_estimator``).

    from harness.testing import check_loss, check_encoder, check_dataset, check_evaluation

    check_loss("my_loss")                   # a registered plugin, by name (params as keywords)
    check_loss(MyLoss, temperature=0.1)     # or its factory, with params validated as the registry does

Each builds the plugin and exercises it with real calls on small seeded inputs: the protocols of
``harness.types``, not only ``isinstance``. It returns None when the plugin fits the contract and
raises ``AssertionError`` with a one-line reason at the first violation. Nothing is downloaded;
the checks run on CPU (and on CUDA too for a loss, when a GPU is present).
"""

from __future__ import annotations

import inspect
import math
import zlib
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.columns import pattern_values
from harness.errors import HarnessError, one_line
from harness.types import (
    LOSS_EXTRAS,
    SUPPLIED_EXTRAS,
    ArithmeticSet,
    ArithmeticTriplet,
    ClassificationSet,
    EmbeddedSet,
    EvalContext,
    MainScore,
    MetricInfo,
    RetrievalSet,
    Skip,
)

__all__ = ["check_loss", "check_encoder", "check_dataset", "check_evaluation"]

N, D, K = 8, 16, 3  # batch, embedding dim, hard negatives per pair


def _fail(what: str, reason: str) -> None:
    raise AssertionError(f"{what}: {reason}")


def _build(kind: str, name_or_factory: str | Callable[..., Any], params: dict[str, Any]) -> tuple[Any, str, Any]:
    """(plugin, description for messages, its factory), params resolved as the registry resolves them."""
    from harness import params as params_mod
    from harness.registry import get_registry

    if isinstance(name_or_factory, str):
        entry = get_registry().get(kind, name_or_factory)
        factory, what = entry.factory, f"{kind} {name_or_factory!r}"
        build = lambda: entry.create(**entry.resolve(params))  # noqa: E731
    else:
        factory = name_or_factory
        what = f"{kind} {getattr(factory, '__name__', repr(factory))}"
        build = lambda: factory(**params_mod.resolve(factory, params, what))  # noqa: E731
    try:
        return build(), what, factory
    except HarnessError as exc:
        _fail(what, f"its params are refused: {' '.join(str(exc).split())}")
    except Exception as exc:
        _fail(what, f"building it raised {one_line(exc)}")


# ------------------------------------------------------------------------------------------ losses


def _loss_inputs(extras: tuple[str, ...], dtype: torch.dtype, device: torch.device, n: int = N) -> tuple:
    """Seeded (x, y, kwargs, leaves): unit-norm pairs with y near x, the declared extras, grad leaves."""
    g = torch.Generator().manual_seed(0)
    raw_x = 3 * torch.randn(n, D, generator=g, dtype=torch.float64)
    raw_y = raw_x + 1.5 * torch.randn(n, D, generator=g, dtype=torch.float64)
    neg = F.normalize(torch.randn(n, K, D, generator=g, dtype=torch.float64), dim=-1)
    leaf = lambda t: t.to(device=device, dtype=dtype).detach().requires_grad_(True)  # noqa: E731
    x, y = leaf(F.normalize(raw_x, dim=-1)), leaf(F.normalize(raw_y, dim=-1))
    available = {"step": 3, "total_steps": 10, "image_raw": leaf(raw_x), "text_raw": leaf(raw_y),
                 "text_negatives": leaf(neg)}
    kwargs = {name: available[name] for name in extras}
    leaves = {"image_features": x, "text_features": y, **{k: v for k, v in kwargs.items() if torch.is_tensor(v)}}
    return x, y, kwargs, leaves


def _terms(what: str, out: Any) -> dict[str, torch.Tensor]:
    if not isinstance(out, dict) or not out:
        _fail(what, f"forward must return a non-empty dict of named scalar terms, got {type(out).__name__}"
                    + (" (empty)" if isinstance(out, dict) else ""))
    for key, value in out.items():
        if not isinstance(key, str) or not key:
            _fail(what, f"term names must be non-empty strings, got {key!r}")
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            _fail(what, f"term {key!r} must be a scalar tensor, got {got}")
    return out


def check_loss(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check a loss plugin against the contract (``harness.types.Loss``); None when it fits.

    Checked with real calls: an ``nn.Module`` declaring only known ``extras`` that its ``forward``
    accepts; on a seeded batch with exactly those extras, a dict of finite scalar terms whose
    dtype and device follow the inputs (float32 stays float32, float64 stays float64, bfloat16 is
    cast up); differentiable, with finite gradients reaching the embeddings it is given;
    deterministic; inputs left unchanged; and for a batch of one, finite terms or a ``ValueError``.
    """
    from harness.registry import declared_extras

    loss, what, _ = _build("loss", name_or_factory, params)
    if not isinstance(loss, torch.nn.Module):
        _fail(what, f"must be a torch.nn.Module, got {type(loss).__name__}")
    extras = declared_extras(loss)
    for name in extras:
        if name not in LOSS_EXTRAS:
            _fail(what, f"declares an unknown extra {name!r}; known extras: {', '.join(LOSS_EXTRAS)}")
    if len(set(extras)) != len(extras):
        _fail(what, f"declares an extra twice: {list(extras)}")
    sig = inspect.signature(loss.forward)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for name in extras:
        if not takes_any and name not in sig.parameters:
            _fail(what, f"declares the extra {name!r} but forward() does not accept it as a keyword argument")

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        loss.to(device)
        _check_loss_call(loss, what, extras, torch.float32, device)
        _check_loss_call(loss, what, extras, torch.float64, device)
    loss.to("cpu")
    x, y, kwargs, _ = _loss_inputs(extras, torch.bfloat16, torch.device("cpu"))
    for key, value in _call(loss, what, x, y, kwargs).items():
        if value.dtype not in (torch.float32, torch.float64) or not torch.isfinite(value).all():
            _fail(what, f"on bfloat16 inputs term {key!r} must be finite and cast up to float32 (got {value.dtype})")
    x, y, kwargs, _ = _loss_inputs(extras, torch.float32, torch.device("cpu"), n=1)
    try:
        out = _terms(what, loss(x, y, **kwargs))
    except ValueError:
        pass  # undefined for one pair, said with ValueError: as the contract asks
    except Exception as exc:
        _fail(what, f"a batch of one must give finite terms or raise ValueError, got {one_line(exc)}")
    else:
        if not all(torch.isfinite(v).all() for v in out.values()):
            _fail(what, "a batch of one gives non-finite terms; raise ValueError where the loss is undefined")


def _call(loss, what: str, x, y, kwargs) -> dict[str, torch.Tensor]:
    try:
        return _terms(what, loss(x, y, **kwargs))
    except AssertionError:
        raise
    except Exception as exc:
        _fail(what, f"forward raised {one_line(exc)} on a valid batch of {x.shape[0]} pairs "
                    f"(dtype {x.dtype}, extras: {', '.join(kwargs) or 'none'})")


def _check_loss_call(loss, what: str, extras: tuple[str, ...], dtype: torch.dtype, device: torch.device) -> None:
    x, y, kwargs, leaves = _loss_inputs(extras, dtype, device)
    before = {k: v.detach().clone() for k, v in leaves.items()}
    out = _call(loss, what, x, y, kwargs)
    for key, value in out.items():
        if not torch.isfinite(value).all():
            _fail(what, f"term {key!r} is not finite ({float(value.detach())}) on a valid batch")
        if value.dtype != dtype:
            _fail(what, f"term {key!r} is {value.dtype} for {dtype} inputs; keep the inputs' precision (cast up only half)")
        if value.device.type != device.type:
            _fail(what, f"term {key!r} is on {value.device} for inputs on {device}")
    total = sum(out.values())
    if not total.requires_grad:
        _fail(what, "the terms do not depend on the inputs (no gradient)")
    total.backward()
    reached = [k for k, v in leaves.items() if v.grad is not None and bool((v.grad != 0).any())]
    for key, value in leaves.items():
        if value.grad is not None and not torch.isfinite(value.grad).all():
            _fail(what, f"the gradient of {key} is not finite")
        if not torch.equal(value.detach(), before[key]):
            _fail(what, f"forward modified its input {key} in place")
    if not reached:
        _fail(what, "no gradient reaches the embeddings it is given")
    again = _call(loss, what, *_loss_inputs(extras, dtype, device)[:3])
    for key in out:
        if key not in again or not torch.allclose(out[key].detach(), again[key].detach(), rtol=1e-6, atol=1e-7):
            _fail(what, f"not deterministic: term {key!r} differs between two calls on the same inputs")


# ---------------------------------------------------------------------------------------- encoders


def _images(n: int = 2, side: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def _embedding(what: str, name: str, value: Any, n: int, d: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[0] != n:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        _fail(what, f"{name} must return an (N, d) tensor for N = {n}, got {got}")
    if d is not None and value.shape[1] != d:
        _fail(what, f"{name} returns dimension {value.shape[1]}, the image tower {d}: the towers must share d")
    if not value.is_floating_point() or not torch.isfinite(value).all():
        _fail(what, f"{name} must return finite floating-point features")
    return value


def check_encoder(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check an encoder plugin against ``harness.types.Encoder``; None when it fits.

    Checked with real calls on two seeded 32x32 uint8 images (and two captions): ``model`` holds
    trainable parameters; ``preprocess_images`` -> ``encode_image`` and ``pair_inputs`` ->
    ``encode_pair`` give finite (N, d) features of one shared d; with a text tower, ``tokenize``
    feeds ``encode_pair``; gradients reach the model's parameters; in eval mode encoding is
    deterministic.
    """
    from harness.precision import PRECISIONS

    enc, what, _ = _build("encoder", name_or_factory, params)
    model = getattr(enc, "model", None)
    if not isinstance(model, torch.nn.Module):
        _fail(what, f"model must be a torch.nn.Module, got {type(model).__name__}")
    if getattr(enc, "pair_modality", None) not in ("text", "image"):
        _fail(what, f"pair_modality must be 'text' or 'image', got {getattr(enc, 'pair_modality', None)!r}")
    if not hasattr(enc, "precision") or enc.precision not in (None, *PRECISIONS):
        _fail(what, f"precision must be None or one of {', '.join(PRECISIONS)}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        _fail(what, "model has no trainable parameter")
    images, captions = _images(), ["a red circle on the left", "a small blue square"]
    try:
        model.train()
        fx = _embedding(what, "encode_image(preprocess_images(images))",
                        enc.encode_image(enc.preprocess_images(images, train=True)), 2)
        fy = _embedding(what, "encode_pair(pair_inputs(images, captions))",
                        enc.encode_pair(enc.pair_inputs(images, captions, train=True)), 2, fx.shape[1])
        (fx.float().pow(2).sum() + fy.float().pow(2).sum()).backward()
        if enc.pair_modality == "text":
            _embedding(what, "encode_pair(tokenize(captions))", enc.encode_pair(enc.tokenize(captions)), 2, fx.shape[1])
        model.eval()
        with torch.no_grad():
            a = enc.encode_image(enc.preprocess_images(images, train=False))
            b = enc.encode_image(enc.preprocess_images(images, train=False))
    except AssertionError:
        raise
    except Exception as exc:
        _fail(what, f"raised {one_line(exc)} on a batch of two 32x32 images")
    grads = [p.grad for p in trainable if p.grad is not None]
    if not grads or not any(bool((g != 0).any()) for g in grads):
        _fail(what, "no gradient reaches the model's parameters from its features")
    if any(not torch.isfinite(g).all() for g in grads):
        _fail(what, "a parameter's gradient is not finite")
    if not torch.equal(a, b):
        _fail(what, "encoding the same images twice in eval mode gives different features")


# ---------------------------------------------------------------------------------------- datasets


def _check_images(what: str, images: Any, n: int) -> None:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != n:
            _fail(what, f"images must be a uint8 (N, H, W, 3) array with N = {n}, got {images.dtype} {images.shape}")
        return
    if isinstance(images, list) and len(images) == n:
        from PIL import Image

        if all(isinstance(im, Image.Image) for im in images):
            return
    _fail(what, f"images must be a uint8 (N, H, W, 3) array or a list of N = {n} PIL images, got {type(images).__name__}")


def _check_record(what: str, rec: Any) -> None:
    if not isinstance(rec, (ClassificationSet, RetrievalSet, ArithmeticSet)):
        _fail(what, f"eval_sets() must return ClassificationSet/RetrievalSet/ArithmeticSet records, got {type(rec).__name__}")
    where = f"{what}: set {rec.name!r}"
    if not isinstance(rec.name, str) or not rec.name:
        _fail(what, "every evaluation set needs a non-empty name")
    if isinstance(rec, ClassificationSet):
        _check_images(where, rec.images, len(rec.labels))
        labels = np.asarray(rec.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            _fail(where, "labels must be a 1-D integer array")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(rec.classnames)):
            _fail(where, f"labels must index classnames (0..{len(rec.classnames) - 1})")
        if not rec.templates or not all(isinstance(t, str) and "{c}" in t for t in rec.templates):
            _fail(where, "templates must be a non-empty list of strings containing '{c}'")
    elif isinstance(rec, RetrievalSet):
        _check_images(where, rec.images, len(rec.captions))
        if not all(isinstance(c, list) and c and all(isinstance(t, str) for t in c) for c in rec.captions):
            _fail(where, "captions must hold a non-empty list of strings per image")
    else:
        n = len(rec.images)
        for t in rec.triplets:
            if not (0 <= t.source < n and all(0 <= i < n for i in t.target_ids)):
                _fail(where, "triplet indices must point into the gallery")


def check_dataset(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check a dataset plugin against ``harness.types.Dataset``; None when it fits.

    Checked with real calls: ``eval_sets()`` returns well-formed records with unique names (labels
    index class names, templates hold ``{c}``, every image has captions, triplets point into the
    gallery); ``train_pairs()`` (unless the dataset is evaluation-only and says so with a
    ``ValueError``) gives a ``PairSource`` whose ``get_batch`` returns N images and N captions,
    deterministically for a given rng; the extras it ``supplies`` are known and, for
    ``text_negatives``, ``get_batch_with_negatives`` returns N lists of K >= 1 captions other than
    the positive; a ``"validation"`` entry in ``splits`` is answered with sets of the same names.
    """
    ds, what, factory = _build("dataset", name_or_factory, params)
    for attr in ("train_pairs", "eval_sets"):
        if not callable(getattr(ds, attr, None)):
            _fail(what, f"has no {attr}() method")
    sets = _guard(what, "eval_sets()", ds.eval_sets)
    if not isinstance(sets, list) or not sets:
        _fail(what, "eval_sets() must return a non-empty list of evaluation sets")
    for rec in sets:
        _check_record(what, rec)
    names = [rec.name for rec in sets]
    if len(set(names)) != len(names):
        _fail(what, f"evaluation set names must be unique, got {names}")
    splits = tuple(getattr(factory, "splits", ("test",)))
    if "validation" in splits:
        val = _guard(what, "eval_sets(split='validation')", lambda: ds.eval_sets(split="validation"))
        if sorted(r.name for r in val) != sorted(names):
            _fail(what, "eval_sets(split='validation') must return sets with the same names as eval_sets()")
        for rec in val:
            _check_record(what, rec)
    supplies = tuple(getattr(factory, "supplies", ()) or ())
    for name in supplies:
        if name not in SUPPLIED_EXTRAS:
            _fail(what, f"supplies an unknown extra {name!r}; datasets can supply: {', '.join(SUPPLIED_EXTRAS)}")
    try:
        pairs = ds.train_pairs()
    except ValueError:
        return  # an evaluation-only dataset, said with ValueError (e.g. clip_benchmark sets)
    except Exception as exc:
        _fail(what, f"train_pairs() raised {one_line(exc)}")
    n = _guard(what, "len(train_pairs())", lambda: len(pairs))
    if n < 1:
        _fail(what, "train_pairs() is empty")
    idx = np.arange(min(4, n))
    first = _guard(what, "get_batch", lambda: pairs.get_batch(idx, np.random.default_rng(0)))
    second = _guard(what, "get_batch", lambda: pairs.get_batch(idx, np.random.default_rng(0)))
    if not isinstance(first, tuple) or len(first) != 2:
        _fail(what, "get_batch(indices, rng) must return (images, captions)")
    _check_images(f"{what}: get_batch", first[0], len(idx))
    if not isinstance(first[1], list) or len(first[1]) != len(idx) or not all(isinstance(c, str) for c in first[1]):
        _fail(what, "get_batch must return one caption string per index")
    if first[1] != second[1] or not _same_images(first[0], second[0]):
        _fail(what, "get_batch is not deterministic given the rng's seed")
    if "text_negatives" in supplies:
        getter = getattr(pairs, "get_batch_with_negatives", None)
        if not callable(getter):
            _fail(what, "supplies text_negatives but its PairSource has no get_batch_with_negatives()")
        got = _guard(what, "get_batch_with_negatives", lambda: getter(idx, np.random.default_rng(0)))
        if not isinstance(got, tuple) or len(got) != 3:
            _fail(what, "get_batch_with_negatives must return (images, captions, negatives)")
        _, captions, negatives = got
        k = len(negatives[0]) if negatives else 0
        if len(negatives) != len(idx) or k < 1 or any(len(row) != k for row in negatives):
            _fail(what, "negatives must be N lists of the same number K >= 1 of captions")
        for caption, row in zip(captions, negatives):
            if not all(isinstance(c, str) and c for c in row) or caption in row:
                _fail(what, f"a hard negative must be a caption other than its positive ({caption!r})")


def _guard(what: str, call: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except AssertionError:
        raise
    except Exception as exc:
        _fail(what, f"{call} raised {one_line(exc)}")


def _same_images(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in zip(a, b))


# ------------------------------------------------------------------------------------- evaluations


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


def _leaves(tree: Any, path: tuple[str, ...] = ()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, path + (key,))
    else:
        yield path, tree


def resolve_main_score(result: dict[str, Any], key: str) -> list[float]:
    """The values a main-score key names in an evaluation's result (``*`` matches one level)."""
    return pattern_values(result, key)


def check_evaluation(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check an evaluation plugin against ``harness.types.Evaluation``; None when it fits.

    Checked with real calls on a synthetic embedded context (a classification, a retrieval and an
    arithmetic set, and a stand-in text tower): ``metric_info`` maps names to ``MetricInfo``;
    ``evaluate`` returns a nested dict with string keys holding no dots and numeric (or None)
    leaves, each leaf key described in ``metric_info``, the same on a second call, or raises
    ``Skip`` with a reason; a declared ``main_score`` names values of the result; optional
    ``reference_rows`` are numbers; and without a text tower it returns or skips, never crashes.
    """
    ev, what, _ = _build("evaluation", name_or_factory, params)
    info = getattr(ev, "metric_info", None)
    if not isinstance(info, dict) or not all(isinstance(k, str) and isinstance(v, MetricInfo) for k, v in info.items()):
        _fail(what, "metric_info must be a dict of leaf key -> harness.types.MetricInfo")
    declared = getattr(ev, "main_score", None)
    if declared is not None and not isinstance(declared, MainScore):
        _fail(what, f"main_score must be a harness.types.MainScore or None, got {type(declared).__name__}")
    for modality in ("text", "image"):
        ctx = synthetic_context(modality)
        try:
            out = ev.evaluate(ctx)
        except Skip as why:
            if not str(why).strip():
                _fail(what, "a Skip must say why")
            continue
        except Exception as exc:
            _fail(what, f"evaluate() raised {one_line(exc)} on a {modality}-paired context")
        if not isinstance(out, dict):
            _fail(what, f"evaluate() must return a dict, got {type(out).__name__}")
        for path, value in _leaves(out):
            if any(not isinstance(k, str) or not k or "." in k for k in path):
                _fail(what, f"result keys must be non-empty strings without dots, got {'/'.join(map(str, path))!r}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                _fail(what, f"result {'.'.join(path)} must be a number or None, got {type(value).__name__}")
            if path[-1] not in info:
                _fail(what, f"result key {path[-1]!r} has no metric_info entry")
        if _normalised(ev.evaluate(ctx)) != _normalised(out):
            _fail(what, "evaluate() is not deterministic on the same context")
        if declared is not None and not resolve_main_score(out, declared.key):
            _fail(what, f"main_score key {declared.key!r} names no value of its result")
        rows = getattr(ev, "reference_rows", None)
        if callable(rows):
            got = rows(ctx)
            if not isinstance(got, dict) or not all(
                isinstance(r, str) and isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, (int, float))
                                                                   for k, x in v.items())
                for r, v in got.items()
            ):
                _fail(what, "reference_rows(ctx) must return {row: {key: number}}")


def _normalised(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _normalised(v) for k, v in tree.items()}
    if isinstance(tree, float) and math.isnan(tree):
        return "nan"
    return tree
