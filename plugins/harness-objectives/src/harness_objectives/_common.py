"""What the losses of this distribution share beyond the harness's public API (private).

Everything generic (parameter validation, ``full_precision``, ``prepare_features``, learnable
scalars, ``self_gram``, ``MAX_LOGIT_SCALE``) comes from ``harness.api``; only these small helpers
are particular to the way this distribution writes its losses.
"""

from typing import Any

from torch import Tensor


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    """An integer extra (``step``, ``total_steps``): a Python or 0-d tensor integer >= ``minimum``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def mask_diagonal_(z: Tensor) -> Tensor:
    """``z`` (a fresh square matrix not needed by autograd) with its diagonal set to -inf, in place."""
    z.diagonal().fill_(float("-inf"))
    return z


def row_dots(a: Tensor, b: Tensor) -> Tensor:
    """(a_i . b_i)_i: the paired similarities, without an N x N product."""
    return (a * b).sum(dim=1)
