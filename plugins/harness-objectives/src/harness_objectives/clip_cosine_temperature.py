"""``clip_cosine_temperature``: CLIP's InfoNCE with a cosine temperature schedule.

Paper: A. Kukleva, M. Böhle, B. Schiele, H. Kuehne, C. Rupprecht, "Temperature Schedules for
Self-Supervised Contrastive Methods on Long-Tail Data", ICLR 2023 (arXiv:2303.13664); the loss is
CLIP's (Radford et al. 2021).

Reference: github.com/Annusha/temperature_schedules at 3ac1db63ffeb000d917c596be51d6120c19aa633,
``train_simCLR.py`` lines 395-401::

    tau = min_tau + 0.5 * (max_tau - min_tau) * (1 + cos(pi * epoch / t_max))

with ``--temperature_min 0.1 --temperature_max 1.0 --t_max 200`` in every published command
(``README.md`` lines 58-60, 82-84, 106-108; 2000 epochs). cos(pi * t / t_max) has period
2 * t_max = 400 epochs, so in the paper's (and issue 13's) form, with P = ``period_steps``::

    tau_t = tau_min + (tau_max - tau_min) * (1 + cos(2 pi t / P)) / 2      (tau_0 = tau_max)
    loss  = (CE(X Y^T / tau_t, I) + CE(Y X^T / tau_t, I)) / 2             (CLIP's symmetric InfoNCE)

Adapted to the harness: the reference schedules SimCLR's NT-Xent per epoch; here the schedule
drives CLIP's symmetric InfoNCE per optimizer step t (the ``step`` extra, 0-based). The period is
``period_steps``, not the run's length (``total_steps`` is declared and checked but does not change
the schedule); the default P = 400 is the paper's period of 400, counted in steps. The
temperature is not learned; the buffer ``logit_scale`` holds log(1/tau_t) of the step used in the
latest forward, so the trainer reports that temperature as ``train.temperature``. Each anchor's
cross-entropy is computed as softplus(LSE_{j != i}(l_ij) - l_ii), the same value as LSE_j(l_ij) -
l_ii without its cancellation when the loss is small. Term: ``contrastive``. Needs a batch of at
least 2.
"""

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness.api import full_precision, prepare_features, register_scalar, validate_params

from harness_objectives._common import check_int, mask_diagonal_, row_dots


def cosine_temperature(step: int, temperature_min: float, temperature_max: float, period_steps: int) -> float:
    """tau_t = tau_min + (tau_max - tau_min) * (1 + cos(2 pi t / P)) / 2."""
    return temperature_min + (temperature_max - temperature_min) * (1.0 + math.cos(2.0 * math.pi * step / period_steps)) / 2.0


class CosineTemperatureClipLoss(nn.Module):
    """CLIP's InfoNCE at the temperature of Kukleva et al. (2023)'s cosine schedule.

    tau_t = tau_min + (tau_max - tau_min)(1 + cos(2 pi t / period_steps)) / 2, t = the optimizer step;
    loss = (CE(XY^T/tau_t, I) + CE(YX^T/tau_t, I)) / 2.
    """

    extras = ("step", "total_steps")

    def __init__(
        self,
        temperature_min: Annotated[float, Field(ge=0.01, le=10, description="tau_min: the temperature at half periods")] = 0.1,
        temperature_max: Annotated[float, Field(ge=0.01, le=10, description="tau_max: the temperature at step 0 and every full period")] = 1.0,
        period_steps: Annotated[int, Field(ge=1, description="P: optimizer steps per cosine period (not the run's length)")] = 400,
    ) -> None:
        super().__init__()
        p = validate_params(
            CosineTemperatureClipLoss.__init__,
            {"temperature_min": temperature_min, "temperature_max": temperature_max, "period_steps": period_steps},
        )
        if p["temperature_min"] > p["temperature_max"]:
            raise ValueError(
                f"temperature_min must be <= temperature_max, got {p['temperature_min']!r} > {p['temperature_max']!r}"
            )
        self.temperature_min, self.temperature_max = float(p["temperature_min"]), float(p["temperature_max"])
        self.period_steps = int(p["period_steps"])
        register_scalar(self, "logit_scale", math.log(1.0 / self.temperature_max))  # tau_0

    def temperature_at(self, step: int) -> float:
        """tau_t at optimizer step ``step`` (0-based)."""
        return cosine_temperature(step, self.temperature_min, self.temperature_max, self.period_steps)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor, *, step: int, total_steps: int) -> dict[str, Tensor]:
        step = check_int("step", step)
        check_int("total_steps", total_steps)
        x, y = prepare_features(image_features, text_features, "clip_cosine_temperature", at_least=2)
        tau = self.temperature_at(step)
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1.0 / tau))
        scale = 1.0 / tau
        positives = scale * row_dots(x, y)
        masked = mask_diagonal_((x @ y.T).mul_(scale))
        # CE_i = LSE_j(l_ij) - l_ii = softplus(LSE_{j != i}(l_ij) - l_ii): rows (image), columns (text)
        margins = torch.cat([torch.logsumexp(masked, dim=1), torch.logsumexp(masked, dim=0)]) - positives.repeat(2)
        return {"contrastive": F.softplus(margins).mean()}

    def extra_repr(self) -> str:
        return (
            f"temperature_min={self.temperature_min:g}, temperature_max={self.temperature_max:g}, "
            f"period_steps={self.period_steps}"
        )
