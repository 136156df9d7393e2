"""What the losses of this distribution share beyond the harness's public API (private).

Everything generic (parameter validation, ``full_precision``, ``prepare_features``, learnable
scalars, ``self_gram``, ``MAX_LOGIT_SCALE``) comes from ``harness.api``; only these small helpers
are particular to the way this distribution writes its losses.
"""

import operator
from typing import Any, Callable

import torch
from torch import Tensor, nn


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


# --------------------------------------------------------------------------------------------
# contract v3: per-pair extras, loss state


def check_dataset_size(value: Any) -> int:
    """``setup``'s argument: the number of training pairs, an integer >= 1 (a bool is refused)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point() and value.dtype != torch.bool:
        value = int(value.item())
    if not isinstance(value, bool):
        try:
            value = operator.index(value)  # int, numpy integers
        except TypeError:
            pass
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"setup(dataset_size): the number of training pairs must be an integer >= 1, got {value!r}")
    return value


def check_int_rows(name: str, value: Any, n: int) -> Tensor:
    """A per-pair integer extra (``index``, ``caption_group``): an integer tensor (N,), N the gathered batch."""
    if not isinstance(value, Tensor) or value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
        got = f"a {value.dtype} tensor" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be an integer (int64) tensor of shape ({n},), got {got}")
    if tuple(value.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},), one entry per pair of the (gathered) batch, got {tuple(value.shape)}")
    return value.long()


def check_feature_rows(name: str, value: Any, like: Tensor) -> Tensor:
    """A batch-shaped feature extra (``image_momentum``...): a tensor of ``like``'s (N, d) shape, cast to its dtype."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        got = f"a {value.dtype} tensor" if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a floating-point tensor of shape {tuple(like.shape)}, got {got}")
    if value.shape != like.shape:
        raise ValueError(f"{name} must have the (gathered) features' shape {tuple(like.shape)}, got {tuple(value.shape)}")
    return value.detach().to(device=like.device, dtype=like.dtype)


def write_rows_(buffer: Tensor, rows: Tensor, values: Tensor) -> None:
    """``buffer[rows] = values`` in place, a row listed twice taking its LAST value (deterministically).

    What sequential assignment (and numpy's fancy assignment, and torch's on CPU in practice) does;
    torch's ``index_put_`` leaves the winner undefined on CUDA, so duplicates are dropped first.
    """
    if rows.shape[0] == 0:
        return
    distinct, which = torch.unique(rows, return_inverse=True)
    order = torch.arange(rows.shape[0], device=rows.device)
    # for each distinct row, the position of its last occurrence in the batch
    last = torch.full_like(distinct, -1).scatter_reduce_(0, which, order, reduce="amax")
    buffer[distinct] = values[last].to(buffer.dtype)


def adopt_unsized_(module: nn.Module, state_dict: dict, prefix: str, names: tuple[str, ...], unsized: Callable[[Tensor], bool]) -> None:
    """Before ``load_state_dict`` copies: each buffer ``names`` still ``unsized`` takes the stored tensor's shape.

    So a fresh instance (built without knowing its sizes) can restore a saved state; a sized buffer
    keeps its shape, and a mismatch is torch's usual size-mismatch error.
    """
    for name in names:
        stored = state_dict.get(prefix + name)
        mine = getattr(module, name)
        if isinstance(stored, Tensor) and unsized(mine) and stored.shape != mine.shape:
            setattr(module, name, torch.empty(stored.shape, dtype=mine.dtype, device=mine.device))


def need_extra(loss: str, name: str, value: Any) -> None:
    """``ValueError`` when a declared extra was not passed (the trainer passes every declared one)."""
    if value is None:
        raise ValueError(f"{loss} needs the {name} extra (a keyword argument of forward; the trainer passes it)")
