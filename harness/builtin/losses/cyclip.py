"""``cyclip``: CLIP plus cyclic consistency regularisers.

Goel, Bansal, Bhatia, Rossi, Vinay & Grover, "CyCLIP: Cyclic Contrastive Language-Image
Pretraining" (NeurIPS 2022; reference code goel-shashank/CyCLIP, ``src/train.py``). On unscaled
cosines, with N the batch::

    cross-modal consistency  C = (1/N) sum_{j,k} (x_j.y_k - x_k.y_j)^2
    in-modal consistency     M = (1/N) sum_{j,k} (x_j.x_k - y_j.y_k)^2
    loss = clip + cross_weight * C + inmodal_weight * M

(the reference computes ``mean() * batch_size`` of the squared differences, i.e. the sums over N).
Both are computed, when d < N/2, from d x d Gram matrices instead of N x N ones (the same values,
fewer flops; see ``cyclic_consistency``).
"""

from __future__ import annotations

from torch import Tensor

from harness.api import full_precision, prepare_features, symmetric_self_gram
from harness.builtin.losses.clip import LearnableTemperature, Temperature, TemperatureLoss, clip_contrastive
from harness.builtin.losses.terms import Weight


CrossWeight = Weight("weight of the cross-modal consistency term C")
InmodalWeight = Weight("weight of the in-modal consistency term M")


def cyclic_consistency(x: Tensor, y: Tensor, sim: Tensor) -> tuple[Tensor, Tensor]:
    """(C, M): cross-modal (1/N) sum_{j,k} (S_jk - S_kj)^2 and in-modal (1/N) ||X X^T - Y Y^T||_F^2.

    ``sim`` is S = X Y^T. When d < N/2 both come from the d x d matrices A = X^T X, B = Y^T Y,
    P = X^T Y instead of N x N ones: sum S_jk^2 = <A, B>, sum S_jk S_kj = <P, P^T>, so
    N C = 2 (<A, B> - <P, P^T>) and N M = ||A||^2 + ||B||^2 - 2 ||P||^2 (same values, O(N d^2)).
    """
    n, d = x.shape
    if 2 * d < n:
        a, b, p = x.T @ x, y.T @ y, x.T @ y
        cross = 2 * ((a * b).sum() - (p * p.T).sum())
        inmodal = a.pow(2).sum() + b.pow(2).sum() - 2 * p.pow(2).sum()
    else:
        cross = (sim - sim.T).pow(2).sum()
        inmodal = (symmetric_self_gram(x) - symmetric_self_gram(y)).pow(2).sum()
    return cross / n, inmodal / n


class CyClipLoss(TemperatureLoss):
    """CLIP + CyCLIP's cross-modal and in-modal consistency terms (Goel et al. 2022).

    Terms: ``contrastive``, ``crossmodal_cyclic`` and ``inmodal_cyclic`` (each weighted).
    """

    def __init__(
        self,
        temperature: Temperature = 0.07,
        learnable_temperature: LearnableTemperature = True,
        cross_weight: CrossWeight = 0.25,
        inmodal_weight: InmodalWeight = 0.25,
    ) -> None:
        super().__init__(temperature, learnable_temperature)
        self.cross_weight = float(cross_weight)
        self.inmodal_weight = float(inmodal_weight)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features)
        sim = x @ y.T
        terms = {"contrastive": clip_contrastive(self.scale() * sim)}
        if self.cross_weight == 0 and self.inmodal_weight == 0:
            cross = inmodal = sim.new_zeros(())
        else:
            cross, inmodal = cyclic_consistency(x, y, sim)
        terms["crossmodal_cyclic"] = self.cross_weight * cross
        terms["inmodal_cyclic"] = self.inmodal_weight * inmodal
        return terms
