"""Building blocks every loss plugin needs, built-in or third-party: one implementation each.

Plugins reach these through ``harness.api`` (never this module directly):

- ``full_precision``: decorate ``forward`` so autocast is off inside it (products in float32/float64);
- ``prepare_features``: check the (N, d) pair, gather it across workers, cast it up (half and
  bfloat16 to float32; float64 stays float64);
- ``check_pair``, ``need_batch``, ``compute_dtype``: the pieces of ``prepare_features``, for other
  batch-shaped inputs (e.g. the ``image_raw``/``text_raw`` extras);
- ``register_scalar`` and ``clamp_logit_scale``: a float32 scalar state (an ``nn.Parameter`` when
  learnable, else a buffer) and open_clip's clamp of a logit scale at ``MAX_LOGIT_SCALE``;
- ``self_gram`` (exact gradient) and ``symmetric_self_gram`` (for consumers symmetric in the Gram
  matrix): x @ x.T with a backward of one product instead of autograd's two.

Below the registry: this module imports only ``harness.types`` and ``harness.distributed``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from harness.distributed import gather_features
from harness.types import MAX_LOGIT_SCALE

__all__ = [
    "MAX_LOGIT_SCALE",
    "check_pair",
    "clamp_logit_scale",
    "compute_dtype",
    "full_precision",
    "need_batch",
    "prepare_features",
    "register_scalar",
    "self_gram",
    "symmetric_self_gram",
]


# --------------------------------------------------------------------------------------------
# inputs


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half and bfloat16 are cast up)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def full_precision(forward):
    """Decorate a loss ``forward``: autocast off inside, so every product runs in float32 (or float64).

    Keyword extras (``step``, ``image_raw``...) pass through; ``inspect.signature`` of the decorated
    method still shows the original parameters (the registry and ``harness.testing`` read them).
    """

    @functools.wraps(forward)
    def wrapper(self, image_features: Tensor, text_features: Tensor, **extras: Any) -> dict[str, Tensor]:
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            return forward(self, image_features, text_features, **extras)

    return wrapper


def check_pair(a: Tensor, b: Tensor, what: str = "image_features and text_features") -> None:
    """``ValueError`` unless ``a`` and ``b`` are tensors of one (N, d) shape with N >= 1."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise ValueError(f"{what} must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{what} must both be (N, d) with the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty")


def need_batch(n: int, loss: str, at_least: int = 2, why: str = "it needs negatives") -> None:
    """``ValueError`` (the contract's way to say "undefined") when the batch has fewer than ``at_least`` rows."""
    if n < at_least:
        raise ValueError(f"{loss} is undefined for a batch of {n}: {why}, so it needs at least {at_least}")


def prepare_features(
    image_features: Tensor,
    text_features: Tensor,
    loss: str = "the loss",
    at_least: int = 1,
    why: str = "it needs negatives",
) -> tuple[Tensor, Tensor]:
    """Check a batch of paired embeddings, gather it across workers and cast it up.

    (N, d) and (N, d) in (``check_pair``); the gathered (N_all, d) pair out, both in
    ``compute_dtype`` (float32, or float64 when an input is float64). With ``at_least`` > 1, a
    gathered batch smaller than that raises ``ValueError`` (``need_batch``, naming ``loss``).
    Every loss starts its ``forward`` with this.
    """
    check_pair(image_features, text_features)
    x, y = gather_features(image_features, text_features)
    if at_least > 1:
        need_batch(x.shape[0], loss, at_least, why)
    dtype = compute_dtype(x, y)
    return x.to(dtype), y.to(dtype)


# --------------------------------------------------------------------------------------------
# learnable scalars


def register_scalar(module: nn.Module, name: str, value: float, learnable: bool = False) -> None:
    """A float32 scalar on ``module``: an ``nn.Parameter`` when learnable, else a buffer.

    Either way it is in ``state_dict`` and follows ``module.to(device)``. A loss's temperature is
    ``logit_scale`` = log(1 / temperature): the trainer reports it and clamps a learnable one to
    [0, ``MAX_LOGIT_SCALE``] after each step.
    """
    tensor = torch.tensor(float(value), dtype=torch.float32)
    if learnable:
        module.register_parameter(name, nn.Parameter(tensor))
    else:
        module.register_buffer(name, tensor)


def clamp_logit_scale(logit_scale: Tensor) -> Tensor:
    """``logit_scale`` clamped at ``MAX_LOGIT_SCALE`` = log 100 (so exp of it, 1/temperature, is at most 100)."""
    return logit_scale.clamp(max=MAX_LOGIT_SCALE)


# --------------------------------------------------------------------------------------------
# Gram matrices


class _SelfGram(torch.autograd.Function):
    """G = x @ x.T with the backward (g + g^T) @ x: one product instead of autograd's two."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x @ x.T

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        # a contiguous transpose first: torch copies it blockwise, far faster than a strided add
        return (grad + grad.T.contiguous()) @ x


def self_gram(x: Tensor) -> Tensor:
    """x @ x.T, with the exact gradient for any consumer (see ``_SelfGram``)."""
    return _SelfGram.apply(x)


class _SymmetricSelfGram(_SelfGram):
    """G = x @ x.T for a consumer symmetric in G (f(G) = f(G^T)), such as in-modal uniformity.

    Such a consumer's gradient g is symmetric, so dL/dx = (g + g^T) x = 2 g x: one product in the
    backward and no transposed N x N read.
    """

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return 2 * (grad @ x)


def symmetric_self_gram(x: Tensor) -> Tensor:
    """x @ x.T, to be consumed only by functions symmetric in it (else the gradient is wrong; use ``self_gram``)."""
    return _SymmetricSelfGram.apply(x)
