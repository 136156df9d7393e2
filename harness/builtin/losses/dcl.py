"""``dcl``: decoupled contrastive loss, cross-modal and symmetric.

Yeh, Hong, Hsu, Liu, Chen & LeCun, "Decoupled Contrastive Learning" (ECCV 2022): InfoNCE with the
positive pair removed from the denominator. With s = exp(logit_scale) = 1 / temperature::

    l_i^{x->y} = -s x_i.y_i + log sum_{j != i} exp(s x_i.y_j)
    l_i^{y->x} = -s x_i.y_i + log sum_{j != i} exp(s y_i.x_j)
    loss = (mean_i l_i^{x->y} + mean_i l_i^{y->x}) / 2

Negatives are cross-modal only: the other modality's embeddings of the batch's other pairs
(j != i). SimCLR-style DCL over two augmented views also counts the same view's other samples
(x_i.x_k, k != i) as negatives; this two-tower form does not.

Temperature fixed at 0.1 by default, as in the paper. With N = 1 the negative set is empty and the
loss undefined: it raises ``ValueError``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.api import full_precision, prepare_features
from harness.builtin.losses.clip import LearnableTemperature, Temperature, TemperatureLoss


class DclLoss(TemperatureLoss):
    """Decoupled contrastive loss (Yeh et al. 2022): InfoNCE without the positive in the denominator.

    Terms: ``contrastive`` (both directions averaged). Negatives are the other modality's embeddings
    only (no same-modality negatives, unlike SimCLR's two-view form). Temperature fixed at 0.1 by default.
    Needs a batch of at least 2 (with one pair there are no negatives).
    """

    def __init__(self, temperature: Temperature = 0.1, learnable_temperature: LearnableTemperature = False) -> None:
        super().__init__(temperature, learnable_temperature)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features)
        n = x.shape[0]
        if n < 2:
            raise ValueError(f"dcl needs a batch of at least 2: with {n} pair the negative set is empty")
        scaled = self.scale() * x
        positives = (scaled * y).sum(1)
        negatives = scaled @ y.T
        negatives.diagonal().fill_(float("-inf"))  # the positive leaves the denominator
        image_to_text = (torch.logsumexp(negatives, dim=1) - positives).mean()
        text_to_image = (torch.logsumexp(negatives, dim=0) - positives).mean()
        return {"contrastive": (image_to_text + text_to_image) / 2}
