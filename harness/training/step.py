"""One optimizer step's gradients, behind one interface: ``step(batch, i) -> (total, terms)``.

A step makes the batch's L2-normalised features in float32 and exactly the extras the loss
declares, calls the loss's ``forward`` once on the whole batch, checks its output (a dict of
named scalar terms, ``BadLossOutput`` otherwise) and their sum (``NonFiniteLoss`` before any
backward), and leaves the sum's gradients in ``.grad`` (scaled by the GradScaler under fp16). The
caller's ``update`` then unscales, clips and steps. ``PlainStep`` does it in one forward and one
backward; ``GradCacheStep`` (``harness.training.gradcache``) in chunks and/or across workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.training.checks import check_finite, check_terms
from harness.training.inputs import step_inputs


@dataclass(eq=False)
class Step:
    """What every step shares: the towers (``encoder``), the loss, the optimizer and its scaler,
    where and how precisely it computes, the loss's extras, the job's number of steps, and the
    momentum towers (``harness.training.momentum.EmaTowers``) when the loss has them."""

    encoder: Any
    loss_fn: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    device: torch.device
    precision: str
    extras: tuple[str, ...]
    steps: int
    loss_name: str
    ema: Any = None

    def __call__(self, batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Leave the gradients of ``batch`` (a ``harness.training.inputs.Batch``, or ``(images,
        captions, negatives or None)``) at the 0-based step ``step`` in ``.grad``; return the loss
        ``(total, terms)``."""
        raise NotImplementedError

    def terms(self, fx: torch.Tensor, fy: torch.Tensor, kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The loss's terms on these features and extras (its one call of the step), checked."""
        return check_terms(self.loss_fn(fx, fy, **kwargs), self.loss_name)

    def total(self, terms: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """The sum of the terms, which training minimises; ``NonFiniteLoss`` when it is not finite."""
        total = sum(terms.values())
        check_finite(total, terms, step, self.steps)
        return total

    def backward(self, total: torch.Tensor) -> None:
        """The sum's gradients into freshly zeroed ``.grad`` (scaled by the GradScaler, if any)."""
        self.opt.zero_grad(set_to_none=True)
        (self.scaler.scale(total) if self.scaler is not None else total).backward()


class PlainStep(Step):
    """One process, the whole batch in one forward (with graph) and one backward."""

    def __call__(self, batch, step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fx, fy, kwargs = step_inputs(self.encoder, batch, self.device, self.precision, self.extras, step, self.steps,
                                     self.ema)
        terms = self.terms(fx, fy, kwargs)
        total = self.total(terms, step)
        self.backward(total)
        return total, terms
