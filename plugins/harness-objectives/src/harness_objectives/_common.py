"""What the losses of this distribution share (private: not part of its API).

Only the harness's public API is used here: ``harness.gather_features``. Everything else is plain
torch and pydantic, as an outside author would write it.
"""

import functools
import math
import typing
from typing import Any, Callable

import torch
from torch import Tensor, nn

import harness

#: open_clip (and the harness's trainer) clamp a learnable logit scale at log(100).
MAX_LOGIT_SCALE = math.log(100.0)


# --------------------------------------------------------------------------------------------
# parameters


def validate(init: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked against ``init``'s ``Annotated[type, Field(...)]`` annotations.

    The registry validates a suite's params the same way before building a loss; this repeats the
    check for a loss built directly (``CLOOBLoss(inv_tau=-1)``), from the one description in the
    signature. Raises ``ValueError`` naming the parameter; returns the coerced values.
    """
    import pydantic

    hints = typing.get_type_hints(init, include_extras=True)
    out = {}
    for name, value in values.items():
        try:
            # booleans only where the annotation admits one (lax mode would read True as 1.0)
            coerced = pydantic.TypeAdapter(hints[name]).validate_python(value, strict=True if isinstance(value, bool) else None)
        except pydantic.ValidationError as exc:
            raise ValueError(f"{name}: {exc.errors()[0]['msg']} (got {value!r})") from None
        if isinstance(coerced, float) and not math.isfinite(coerced):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        out[name] = coerced
    return out


def register_scalar(module: nn.Module, name: str, value: float, learnable: bool = False) -> None:
    """A float32 scalar on ``module``: an ``nn.Parameter`` when learnable, else a buffer."""
    tensor = torch.tensor(float(value), dtype=torch.float32)
    if learnable:
        module.register_parameter(name, nn.Parameter(tensor))
    else:
        module.register_buffer(name, tensor)


# --------------------------------------------------------------------------------------------
# inputs


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half and bfloat16 are cast up)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def full_precision(forward):
    """Decorate a loss ``forward``: autocast off inside, so every product runs in float32 (or float64)."""

    @functools.wraps(forward)
    def wrapper(self, image_features: Tensor, text_features: Tensor, **extras: Any) -> dict[str, Tensor]:
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            return forward(self, image_features, text_features, **extras)

    return wrapper


def check_pair(a: Tensor, b: Tensor, what: str = "image_features and text_features") -> None:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise ValueError(f"{what} must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{what} must both be (N, d) with the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty")


def need_batch(n: int, loss: str, at_least: int = 2, why: str = "it needs negatives") -> None:
    if n < at_least:
        raise ValueError(f"{loss} is undefined for a batch of {n}: {why}, so it needs at least {at_least}")


def prepare(image_features: Tensor, text_features: Tensor, loss: str, at_least: int = 2,
            why: str = "it needs negatives") -> tuple[Tensor, Tensor]:
    """Check a batch of paired embeddings, gather it across ranks, cast it up to float32 (float64 stays).

    (N, d) and (N, d) in; the gathered (N_all, d) pair out, ``ValueError`` when N_all < ``at_least``.
    """
    check_pair(image_features, text_features)
    x, y = harness.gather_features(image_features, text_features)
    need_batch(x.shape[0], loss, at_least, why)
    dtype = compute_dtype(x, y)
    return x.to(dtype), y.to(dtype)


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    """An integer extra (``step``, ``total_steps``): a Python or 0-d tensor integer >= ``minimum``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------
# numerics


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
    """x @ x.T (exact gradient; see ``_SelfGram``)."""
    return _SelfGram.apply(x)


def mask_diagonal_(z: Tensor) -> Tensor:
    """``z`` (a fresh square matrix not needed by autograd) with its diagonal set to -inf, in place."""
    z.diagonal().fill_(float("-inf"))
    return z


def row_dots(a: Tensor, b: Tensor) -> Tensor:
    """(a_i . b_i)_i: the paired similarities, without an N x N product."""
    return (a * b).sum(dim=1)
