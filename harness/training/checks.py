"""What the trainer refuses, each with a one-line message: a loss output that is not named scalar
terms, a non-finite loss, ragged hard negatives, a batch that workers cannot share, batch norm
under chunking or workers. Messages count steps from 1."""

from __future__ import annotations

from typing import Any

import torch


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


class BadLossOutput(RuntimeError):
    """A loss's ``forward`` returned something other than a dict of named scalar terms."""


def check_terms(terms: Any, loss_name: str) -> dict[str, torch.Tensor]:
    """The loss's output if it is a non-empty dict of named scalar tensors, else ``BadLossOutput``."""
    wanted = f"loss {loss_name!r} must return a dict of named scalar terms"
    if not isinstance(terms, dict) or not terms:
        got = "an empty dict" if isinstance(terms, dict) else f"a {type(terms).__name__}"
        raise BadLossOutput(f"{wanted}, got {got}")
    for key, value in terms.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise BadLossOutput(f"{wanted}; term {key!r} is {shape}")
    return terms


def check_finite(total: torch.Tensor, terms: dict[str, torch.Tensor], step: int, steps: int) -> None:
    """``NonFiniteLoss`` naming the step (from 1) and every term when ``total`` is NaN or infinite."""
    if not torch.isfinite(total):
        shown = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        raise NonFiniteLoss(f"loss is {float(total.detach())} at step {step + 1} of {steps} ({shown})")


def check_negatives(negatives: list[list[str]]) -> int:
    """K, the number of hard-negative captions of each of the N >= 1 pairs; ``ValueError`` unless
    every pair has the same K >= 1."""
    k = len(negatives[0]) if negatives else 0
    if k == 0 or any(len(row) != k for row in negatives):
        raise ValueError("the dataset's hard negatives must be N lists of the same number K >= 1 of captions")
    return k


def check_split(batch: int, n: int, workers: int) -> None:
    """``ValueError`` unless a batch of ``batch`` pairs splits evenly over ``workers``."""
    if batch % workers:
        raise ValueError(f"a batch of {batch} pairs (train.batch_size, or the dataset's {n} pairs if fewer) cannot be "
                         f"split evenly over {workers} workers")


def refuse_batch_norm(model: torch.nn.Module, why: str) -> None:
    """``ValueError`` (one line) if ``model`` has a batch-norm layer in train mode.

    Its statistics would be those of a chunk or of one worker's shard, not of the batch, so the
    step would no longer compute the one-process, whole-batch gradient.
    """
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.training:
            raise ValueError(
                f"{why} cannot train a tower with batch norm in train mode ({name or 'model'}: "
                f"{type(module).__name__}): its statistics would be per chunk or per worker, not the batch's; "
                f"freeze the batch norm (e.g. freeze: image) or train without it"
            )
