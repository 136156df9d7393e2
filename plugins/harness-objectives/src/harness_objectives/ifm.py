"""``ifm``: implicit feature modification, the contrastive loss designed against feature suppression.

Paper: J. Robinson, L. Sun, K. Yu, K. Batmanghelich, S. Jegelka, S. Sra, "Can contrastive learning
avoid shortcut solutions?", NeurIPS 2021 (arXiv:2106.11230).

Reference: github.com/joshr17/IFM at bcec4c38eb1bd9503f55cf9ff69f9b2bf11da44c (a MoCo-v2 fork):

- ``moco-master/moco/adv_builder.py`` lines 128-141: ``logits = [l_pos, l_neg]``,
  ``logits_adv = [l_pos - epsilon, l_neg + epsilon]``, both divided by ``T`` (the perturbation is
  applied to the cosine similarities, before the temperature);
- ``moco-master/main_moco.py`` lines 325-330: ``loss = (CE(logits) + alpha * CE(logits_adv)) /
  (1 + alpha)``; defaults ``--moco-t 0.07`` (line 92), ``--epsilon 0.1`` (line 106), ``--alpha 1.0``
  (line 108). (The README's ImageNet-100 command uses ``--moco-t 0.2``; the code's default is kept.)

With unit-norm image embeddings x_i, text embeddings y_i, t = ``temperature``, eps = ``epsilon``::

    S = X Y^T,   S_adv = S - eps on the diagonal (positives), S + eps off it (negatives)
    CE(L)     = (CE_rows(L, I) + CE_cols(L, I)) / 2                   (CLIP's symmetric cross-entropy)
    loss      = ( CE(S / t) + alpha * CE(S_adv / t) ) / (1 + alpha)

Adapted to two towers: MoCo's positive key becomes the paired text (image-to-text rows) and its
queue of negative keys becomes the other texts of the batch; the text-to-image direction is the
same on S^T, and the two directions are averaged as in CLIP. In MoCo the keys come from a momentum
encoder without gradient; here both towers are trained, as in CLIP. Computed per anchor as
CE_i = softplus(LSE_{j != i}(S_ij / t) - S_ii / t) and CE_adv_i = softplus(... + 2 eps / t), which
is the same value from one log-sum-exp per direction. The temperature is fixed, as MoCo's ``T``
(a buffer ``logit_scale = log(1/t)``, reported by the trainer). Terms: ``contrastive``
(CE(S/t) / (1 + alpha)) and ``adversarial`` (alpha CE(S_adv/t) / (1 + alpha)). Needs a batch of
at least 2 (a positive with no negatives has no contrast).
"""

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness.api import full_precision, prepare_features, register_scalar, validate_params

from harness_objectives._common import mask_diagonal_, row_dots


class IFMLoss(nn.Module):
    """IFM (Robinson et al. 2021): CLIP's InfoNCE plus an adversarially perturbed copy (positives -eps, negatives +eps).

    loss = (CE(S/t) + alpha CE(S_adv/t)) / (1 + alpha), S = X Y^T, symmetric CE as in CLIP.
    """

    extras = ()

    def __init__(
        self,
        temperature: Annotated[float, Field(ge=0.01, le=10, description="temperature t dividing the similarities (fixed)")] = 0.07,
        epsilon: Annotated[
            float, Field(ge=0, le=2, description="perturbation of the cosine similarities: positives -eps, negatives +eps")
        ] = 0.1,
        alpha: Annotated[float, Field(ge=0, le=100, description="weight of the perturbed loss; the total is divided by 1 + alpha")] = 1.0,
    ) -> None:
        super().__init__()
        p = validate_params(IFMLoss.__init__, {"temperature": temperature, "epsilon": epsilon, "alpha": alpha})
        self.temperature, self.epsilon, self.alpha = float(p["temperature"]), float(p["epsilon"]), float(p["alpha"])
        register_scalar(self, "logit_scale", math.log(1.0 / self.temperature))

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features, "ifm", at_least=2)
        s = 1.0 / self.temperature
        positives = s * row_dots(x, y)
        masked = mask_diagonal_((x @ y.T).mul_(s))
        # log sum over the negatives minus the positive, per anchor: image rows, then text columns
        margins = torch.cat([torch.logsumexp(masked, dim=1), torch.logsumexp(masked, dim=0)]) - positives.repeat(2)
        contrastive = F.softplus(margins).mean()  # (CE_rows + CE_cols) / 2
        out = {"contrastive": contrastive / (1.0 + self.alpha)}
        if self.alpha > 0:
            adversarial = F.softplus(margins + 2.0 * self.epsilon * s).mean()
            out["adversarial"] = adversarial * (self.alpha / (1.0 + self.alpha))
        else:
            out["adversarial"] = contrastive.new_zeros(())
        return out

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, epsilon={self.epsilon:g}, alpha={self.alpha:g}"
