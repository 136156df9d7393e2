"""An example third-party loss plugin for contrastive-harness: ``example_margin``.

Installed, it is found through the ``harness`` entry-point group (see pyproject.toml) and shows up
in ``harness plugins``; a suite then names it like a built-in: ``objectives: [example_margin]``.
It uses only the public plugin API: ``harness.hookimpl`` and a ``torch.nn.Module``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness import hookimpl


class MarginLoss(nn.Module):
    """Bidirectional margin (hinge) loss on cosine similarities, averaged over all negatives.

    With unit-norm x_i (image), y_i (text), s_ij = x_i.y_j and margin m (Kiros et al. 2014, the
    sum-of-hinges form of VSE; Faghri et al. 2018 use the hardest negative instead)::

        loss = 1 / (2 N (N - 1)) * sum_{i != j} ( [m - s_ii + s_ij]_+ + [m - s_ii + s_ji]_+ )

    Terms: ``margin``. No temperature and no learnable parameter. Needs a batch of at least 2.
    """

    def __init__(self, margin: float = 0.2) -> None:
        super().__init__()
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        self.margin = float(margin)

    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = image_features.float(), text_features.float()
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"example_margin needs a batch of at least 2 (it has no negatives), got {n}")
        sim = x @ y.T
        positives = sim.diagonal()
        off = ~torch.eye(n, dtype=torch.bool, device=sim.device)
        image_to_text = (self.margin - positives[:, None] + sim).clamp_min(0)[off]  # [m - s_ii + s_ij]_+
        text_to_image = (self.margin - positives[None, :] + sim).clamp_min(0)[off]  # [m - s_jj + s_ij]_+
        return {"margin": (image_to_text.sum() + text_to_image.sum()) / (2 * n * (n - 1))}

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


@hookimpl
def harness_register_losses(register):
    register("example_margin", MarginLoss)
