"""``siglip``: the pairwise sigmoid loss.

Zhai, Mustafa, Kolesnikov & Beyer, "Sigmoid Loss for Language Image Pre-Training" (ICCV 2023); as
``open_clip.loss.SigLipLoss``. With s = exp(logit_scale) (clamped at 100) and bias b::

    l_ij = s x_i.y_j + b,   z_ij = +1 if i == j else -1
    loss = -(1/N) sum_{i,j} log sigmoid(z_ij l_ij)
         =  (1/N) (sum_{i,j} softplus(l_ij) - sum_i l_ii)          (as computed: no label matrix)

The paper initialises s = 10 (temperature 0.1) and b = -10, both learned.
"""

from __future__ import annotations

from typing import Annotated

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from harness.api import full_precision, prepare_features, register_scalar
from harness.builtin.losses.clip import LearnableTemperature, Temperature, TemperatureLoss


class SigLipLoss(TemperatureLoss):
    """SigLIP's sigmoid loss -(1/N) sum_ij log sigmoid(z_ij (s x_i.y_j + b)) (Zhai et al. 2023).

    Terms: ``contrastive``. Learnable ``logit_scale`` (init log 10) and ``logit_bias`` (init -10).
    """

    def __init__(
        self,
        temperature: Temperature = 0.1,
        learnable_temperature: LearnableTemperature = True,
        bias: Annotated[float, Field(ge=-1e3, le=1e3, description="initial logit bias b")] = -10.0,
        learnable_bias: Annotated[bool, Field(strict=True, description="learn the bias with the model")] = True,
    ) -> None:
        super().__init__(temperature, learnable_temperature)
        self.learnable_bias = bool(learnable_bias)
        register_scalar(self, "logit_bias", float(bias), self.learnable_bias)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features)
        logits = (self.scale() * x) @ y.T + self.logit_bias
        loss = (F.softplus(logits).sum() - logits.diagonal().sum()) / x.shape[0]
        return {"contrastive": loss}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bias={self.logit_bias.item():.4g}, learnable_bias={self.learnable_bias}"
