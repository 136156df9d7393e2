"""An example third-party loss plugin for contrastive-harness: ``example_margin``.

Installed, it is found through the ``harness`` entry-point group (see pyproject.toml) and shows up
in ``harness plugins``; a suite then names it like a built-in: ``objectives: [example_margin]``.
It uses only the public plugin API: ``harness.api.hookimpl``, ``harness.api.prepare_features`` and a
``torch.nn.Module`` whose parameters are ``Annotated[..., Field(...)]`` keyword arguments.
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness.api import hookimpl, prepare_features

Margin = Annotated[float, Field(ge=0, le=2, description=(
    "margin m by which a pair's cosine should beat each negative's (cosines lie in [-1, 1], so m <= 2)"))]
Smoothing = Annotated[float, Field(ge=0.01, le=1, description=(
    "width tau of the soft hinge tau * log(1 + exp(z / tau)); smaller is closer to the hard hinge [z]_+"))]


def soft_hinge(z: Tensor, tau: float) -> Tensor:
    """tau * log(1 + exp(z / tau)): the hinge [z]_+ smoothed over a width tau (never exactly flat)."""
    return tau * F.softplus(z / tau)


class MarginLoss(nn.Module):
    """Bidirectional margin loss on cosine similarities with a soft hinge, averaged over all negatives.

    With unit-norm x_i (image), y_i (text), s_ij = x_i.y_j, margin m and the soft hinge
    h(z) = tau * log(1 + exp(z / tau)), which tends to [z]_+ as tau -> 0 (Kiros et al. 2014, the
    sum-of-hinges form of VSE, smoothed so that a batch whose margins all hold still has a gradient)::

        loss = 1 / (2 N (N - 1)) * sum_{i != j} ( h(m - s_ii + s_ij) + h(m - s_ii + s_ji) )

    Terms: ``margin``. No temperature and no learnable parameter. Needs a batch of at least 2.
    """

    def __init__(self, margin: Margin = 0.2, smoothing: Smoothing = 0.05) -> None:
        super().__init__()
        # the registry checks the annotations' limits for a suite; a direct MarginLoss(...) is checked here
        for name, value, low, high in (("margin", margin, 0, 2), ("smoothing", smoothing, 0.01, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high:
                raise ValueError(f"{name} must be a finite number >= {low} and <= {high}, got {value!r}")
        self.margin, self.smoothing = float(margin), float(smoothing)

    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        # checked, the global batch under several workers, half precision cast up to float32
        x, y = prepare_features(image_features, text_features, "example_margin", at_least=2)
        n = x.shape[0]
        sim = x @ y.T
        positives = sim.diagonal()
        off = ~torch.eye(n, dtype=torch.bool, device=sim.device)
        image_to_text = soft_hinge(self.margin - positives[:, None] + sim, self.smoothing)[off]  # h(m - s_ii + s_ij)
        text_to_image = soft_hinge(self.margin - positives[None, :] + sim, self.smoothing)[off]  # h(m - s_jj + s_ij)
        return {"margin": (image_to_text.sum() + text_to_image.sum()) / (2 * n * (n - 1))}

    def extra_repr(self) -> str:
        return f"margin={self.margin}, smoothing={self.smoothing}"


@hookimpl
def harness_register_losses(register):
    register("example_margin", MarginLoss)
