"""``cua`` and ``cuaxu``: CLIP plus uniformity and alignment (plus cross-modal uniformity).

Fahim, Murphy & Fyshe, "It's Not a Modality Gap: Characterizing and Addressing the Contrastive Gap"
(2024; code: abrar-fahim/contrastive-gap). With unit-norm x_i (image), y_i (text)::

    uniformity(X)    = log mean_{i<j}  exp(-2 ||x_i - x_j||^2)          (Wang & Isola 2020, t = 2)
    cross_uniformity = log mean_{i!=j} exp(-2 ||x_i - y_j||^2)
    alignment        = mean_i ||x_i - y_i||^2

    cua   = clip + uniformity_weight * (uniformity(X) + uniformity(Y)) / 2 + alignment_weight * alignment
    cuaxu = cua + cross_uniformity_weight * cross_uniformity

The paper fixes the temperature at 0.01 (logit_scale = log 100, not learned) in every run, so that is
the default here: ``temperature=0.01, learnable_temperature=False``.
"""

from __future__ import annotations

from torch import Tensor

from harness.api import full_precision, prepare_features
from harness.builtin.losses.clip import LearnableTemperature, Temperature, TemperatureLoss, clip_contrastive
from harness.builtin.losses.terms import Weight, alignment, cross_uniformity, uniformity, weighted

UniformityWeight = Weight("weight of the in-modal uniformity term 0.5 (unif(X) + unif(Y))")
AlignmentWeight = Weight("weight of the alignment term mean_i ||x_i - y_i||^2")
CrossUniformityWeight = Weight("weight of the cross-modal uniformity term")



class CuaLoss(TemperatureLoss):
    """CLIP + uniformity + alignment (Fahim et al. 2024); temperature fixed at 0.01 by default.

    Terms: ``contrastive``, ``uniformity`` (0.5 unif(X) + 0.5 unif(Y), weighted), ``alignment`` (weighted).
    Needs a batch of at least 2 while ``uniformity_weight`` > 0 (uniformity of one sample is undefined).
    """

    def __init__(
        self,
        temperature: Temperature = 0.01,
        learnable_temperature: LearnableTemperature = False,
        uniformity_weight: UniformityWeight = 1.0,
        alignment_weight: AlignmentWeight = 1.0,
    ) -> None:
        super().__init__(temperature, learnable_temperature)
        self.uniformity_weight = float(uniformity_weight)
        self.alignment_weight = float(alignment_weight)

    def _terms(self, x: Tensor, y: Tensor, sim: Tensor) -> dict[str, Tensor]:
        return {
            "contrastive": clip_contrastive(self.scale() * sim),
            "uniformity": weighted(self.uniformity_weight, lambda: 0.5 * (uniformity(x) + uniformity(y)), sim),
            "alignment": weighted(self.alignment_weight, lambda: alignment(x, y), sim),
        }

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features)
        return self._terms(x, y, x @ y.T)


class CuaxuLoss(CuaLoss):
    """CUA + cross-modal uniformity (Fahim et al. 2024); temperature fixed at 0.01 by default.

    Terms: those of ``cua`` plus ``cross_uniformity`` (weighted), computed from the same similarity
    matrix as the CLIP logits.
    """

    def __init__(
        self,
        temperature: Temperature = 0.01,
        learnable_temperature: LearnableTemperature = False,
        uniformity_weight: UniformityWeight = 1.0,
        alignment_weight: AlignmentWeight = 1.0,
        cross_uniformity_weight: CrossUniformityWeight = 1.0,
    ) -> None:
        super().__init__(temperature, learnable_temperature, uniformity_weight, alignment_weight)
        self.cross_uniformity_weight = float(cross_uniformity_weight)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features)
        sim = x @ y.T
        terms = self._terms(x, y, sim)
        terms["cross_uniformity"] = weighted(
            self.cross_uniformity_weight, lambda: cross_uniformity(x, y, sim=sim), sim
        )
        return terms
