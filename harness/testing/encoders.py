"""The encoder contract (``harness.types.Encoder``) as named rules, and ``check_encoder``.

The rules call the encoder on two seeded 32x32 uint8 images and two captions; nothing is
downloaded.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from harness.api import PRECISIONS, one_line
from harness.registry import PluginInfo
from harness.testing._base import fail, run_checks, subject

CAPTIONS = ["a red circle on the left", "a small blue square"]


def images(n: int = 2, side: int = 32) -> np.ndarray:
    """``n`` seeded uint8 (side, side, 3) images."""
    return np.random.default_rng(0).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def _embedding(what: str, name: str, value: Any, n: int, d: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[0] != n:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        fail(what, f"{name} must return an (N, d) tensor for N = {n}, got {got}")
    if d is not None and value.shape[1] != d:
        fail(what, f"{name} returns dimension {value.shape[1]}, the image tower {d}: the towers must share d")
    if not value.is_floating_point() or not torch.isfinite(value).all():
        fail(what, f"{name} must return finite floating-point features")
    return value


def _model(enc: Any, what: str) -> torch.nn.Module:
    model = getattr(enc, "model", None)  # an attribute of the built encoder, not plugin metadata
    if not isinstance(model, torch.nn.Module):
        fail(what, f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def _features(enc: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features, pair features) of the seeded batch in train mode, checked; text tokens too."""
    batch = images()
    try:
        _model(enc, what).train()
        fx = _embedding(what, "encode_image(preprocess_images(images))",
                        enc.encode_image(enc.preprocess_images(batch, train=True)), 2)
        fy = _embedding(what, "encode_pair(pair_inputs(images, captions))",
                        enc.encode_pair(enc.pair_inputs(batch, CAPTIONS, train=True)), 2, fx.shape[1])
        if enc.pair_modality == "text":
            _embedding(what, "encode_pair(tokenize(captions))", enc.encode_pair(enc.tokenize(CAPTIONS)), 2, fx.shape[1])
    except AssertionError:
        raise
    except Exception as exc:
        fail(what, f"raised {one_line(exc)} on a batch of two 32x32 images")
    return fx, fy


# ------------------------------------------------------------------------------------------- rules


def check_encoder_attributes(enc: Any, info: PluginInfo | None = None) -> None:
    """``model`` is an ``nn.Module``, ``pair_modality`` is "text" or "image", ``precision`` None or a known one."""
    _, what = subject("encoder", enc, info)
    _model(enc, what)
    if getattr(enc, "pair_modality", None) not in ("text", "image"):
        fail(what, f"pair_modality must be 'text' or 'image', got {getattr(enc, 'pair_modality', None)!r}")
    if not hasattr(enc, "precision") or enc.precision not in (None, *PRECISIONS):
        fail(what, f"precision must be None or one of {', '.join(PRECISIONS)}")


def check_encoder_trainable(enc: Any, info: PluginInfo | None = None) -> None:
    """``model`` holds trainable parameters."""
    _, what = subject("encoder", enc, info)
    if not any(p.requires_grad for p in _model(enc, what).parameters()):
        fail(what, "model has no trainable parameter")


def check_encoder_features(enc: Any, info: PluginInfo | None = None) -> None:
    """``preprocess_images`` -> ``encode_image`` and ``pair_inputs`` -> ``encode_pair`` (and, with a
    text tower, ``tokenize`` -> ``encode_pair``) give finite (N, d) features of one shared d."""
    _, what = subject("encoder", enc, info)
    _features(enc, what)


def check_encoder_gradients(enc: Any, info: PluginInfo | None = None) -> None:
    """Gradients of the features reach the model's parameters, and are finite."""
    _, what = subject("encoder", enc, info)
    trainable = [p for p in _model(enc, what).parameters() if p.requires_grad]
    fx, fy = _features(enc, what)
    try:
        (fx.float().pow(2).sum() + fy.float().pow(2).sum()).backward()
    except Exception as exc:
        fail(what, f"raised {one_line(exc)} on a batch of two 32x32 images")
    grads = [p.grad for p in trainable if p.grad is not None]
    if not grads or not any(bool((g != 0).any()) for g in grads):
        fail(what, "no gradient reaches the model's parameters from its features")
    if any(not torch.isfinite(g).all() for g in grads):
        fail(what, "a parameter's gradient is not finite")


def check_encoder_deterministic(enc: Any, info: PluginInfo | None = None) -> None:
    """In eval mode, encoding the same images twice gives the same features."""
    _, what = subject("encoder", enc, info)
    batch = images()
    try:
        _model(enc, what).eval()
        with torch.no_grad():
            a = enc.encode_image(enc.preprocess_images(batch, train=False))
            b = enc.encode_image(enc.preprocess_images(batch, train=False))
    except AssertionError:
        raise
    except Exception as exc:
        fail(what, f"raised {one_line(exc)} on a batch of two 32x32 images")
    if not torch.equal(a, b):
        fail(what, "encoding the same images twice in eval mode gives different features")


ENCODER_CHECKS: tuple[Callable[..., None], ...] = (
    check_encoder_attributes,
    check_encoder_trainable,
    check_encoder_features,
    check_encoder_gradients,
    check_encoder_deterministic,
)


def check_encoder(name_or_factory: str | Callable[..., Any], /, **params: Any) -> None:
    """Check an encoder plugin against ``harness.types.Encoder``; None when it fits.

    Every rule of ``ENCODER_CHECKS`` runs, each on a freshly built encoder; the ``AssertionError``
    (a ``ChecksFailed``) lists every violated rule, one line each.
    """
    run_checks(ENCODER_CHECKS, "encoder", name_or_factory, params)
