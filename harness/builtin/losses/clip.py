"""``clip``: the symmetric InfoNCE loss of CLIP, and the temperature every scaled loss shares.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (2021);
as ``open_clip.loss.ClipLoss``. With unit-norm image embeddings x_i, text embeddings y_i and
s = exp(logit_scale) = 1 / temperature (clamped at 100)::

    logits = s * X Y^T
    loss   = (CE(logits, I) + CE(logits^T, I)) / 2
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness.api import clamp_logit_scale, full_precision, prepare_features, register_scalar

MAX_SCALE = 100.0  # the largest 1 / temperature, exp(harness.api.MAX_LOGIT_SCALE), written exactly for the limit


Temperature = Annotated[float, Field(ge=1 / MAX_SCALE, le=100.0, description=(
    "initial temperature tau; logits are cos / tau, so 1/tau is at most 100 (open_clip's clamp)"))]
LearnableTemperature = Annotated[bool, Field(strict=True, description=(
    "learn log(1/tau) with the model (else a fixed buffer)"))]


class TemperatureLoss(nn.Module):
    """Base of the losses with a temperature: owns ``logit_scale`` = log(1 / temperature)."""

    def __init__(self, temperature: float, learnable_temperature: bool) -> None:
        super().__init__()
        self.learnable_temperature = bool(learnable_temperature)
        register_scalar(self, "logit_scale", math.log(1.0 / temperature), self.learnable_temperature)

    def scale(self) -> Tensor:
        """s = exp(logit_scale), clamped at 100 (as open_clip's trainer clamps logit_scale at log 100)."""
        return clamp_logit_scale(self.logit_scale.float()).exp()

    def extra_repr(self) -> str:
        return f"temperature={1.0 / self.scale().item():.4g}, learnable_temperature={self.learnable_temperature}"


def clip_contrastive(logits: Tensor) -> Tensor:
    """(CE(logits, I) + CE(logits^T, I)) / 2 for an (N, N) logit matrix whose diagonal holds the pairs."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class _FusedClipContrastive(torch.autograd.Function):
    """``clip_contrastive`` from one logits matrix: the row and column log-sum-exps in the forward;
    in the backward the whole gradient, (softmax over rows + softmax over columns - 2 I) / 2N, in one
    N x N buffer (autograd of two cross-entropies keeps two log-softmax matrices and a transposed copy)."""

    @staticmethod
    def forward(ctx, logits: Tensor) -> Tensor:
        lse_rows, lse_cols = torch.logsumexp(logits, 1), torch.logsumexp(logits, 0)
        ctx.save_for_backward(logits, lse_rows, lse_cols)
        return (lse_rows.sum() + lse_cols.sum() - 2 * logits.diagonal().sum()) / (2 * logits.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        logits, lse_rows, lse_cols = ctx.saved_tensors
        out = torch.exp(logits - lse_rows[:, None])
        out += torch.exp(logits - lse_cols[None, :])
        out.diagonal().sub_(2.0)
        return out.mul_(grad / (2 * logits.shape[0]))


def fused_clip_contrastive(logits: Tensor) -> Tensor:
    """``clip_contrastive(logits)`` with one fused backward: the same gradients (equal to 1e-10 in
    float64, tested), 0.6-0.9x its time on a CPU (``benchmarks/losses.py``); float32 results differ
    from it in the last bits (another order of the same sums)."""
    return _FusedClipContrastive.apply(logits)


class ClipLoss(TemperatureLoss):
    """CLIP's symmetric InfoNCE: (CE(s X Y^T, I) + CE(s Y X^T, I)) / 2 (Radford et al. 2021).

    Terms: ``contrastive``. ``temperature`` is the initial temperature (s = 1/temperature, at most 100).
    """

    def __init__(self, temperature: Temperature = 0.07, learnable_temperature: LearnableTemperature = True) -> None:
        super().__init__(temperature, learnable_temperature)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features)
        # fused_clip_contrastive has the same gradients, faster, but other float32 bits: it waits for
        # the next change of these jobs' ids (a stored number never changes under an unchanged id)
        return {"contrastive": clip_contrastive((self.scale() * x) @ y.T)}
