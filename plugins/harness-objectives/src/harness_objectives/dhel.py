"""``dhel``: the Decoupled Hyperspherical Energy Loss.

Paper: P. Koromilas, G. Bouritsas, T. Giannakopoulos, M. Nicolaou, Y. Panagakis, "Bridging
Mini-Batch and Asymptotic Analysis in Contrastive Learning: From InfoNCE to Kernel-Based Losses",
ICML 2024 (arXiv:2405.18045).

Reference: github.com/pakoromilas/DHEL-KCL at dc5a4779561c5b2d56e835117c6f9b1e3c27dc9a,
``losses.py`` lines 7-62 (class ``DHEL``; default ``tau=0.3``, ``include_augs=True``), the loss at
lines 42-57::

    sim_matrix_anchor = exp(z_anchor @ z_anchor.T / tau), diagonal zeroed
    sim_matrix_pos    = exp(z_pos @ z_pos.T / tau),       diagonal zeroed   (include_augs=True)
    pos_sim           = exp(sum(z_anchor * z_pos, -1) / tau)
    loss = -log(pos_sim / (sim_matrix_anchor.sum(-1) * sim_matrix_pos.sum(-1))).mean()

With unit-norm image embeddings x_i (the anchors) and text embeddings y_i (their positives) and
t = ``temperature``::

    loss = mean_i [ -x_i.y_i / t + log sum_{j != i} exp(x_i.x_j / t) + log sum_{j != i} exp(y_i.y_j / t) ]

The positive is the only cross-modal term; the negatives (the "energy") stay within a modality.
Computed in log space (``logsumexp`` over the off-diagonal entries), which is the reference's value
without its overflow for small t.

Adapted to the harness: the reference's two augmented views become the two towers (anchor =
image, positive = text). With ``include_augs=True`` the formula is symmetric in the two, so no
second direction is needed. The reference L2-normalises its input (line 35); the harness hands over
normalised features, so that is not repeated. The temperature is fixed, as in the reference (a
buffer ``logit_scale = log(1/t)``, reported by the trainer). Term: ``dhel``. Needs a batch of at
least 2 (the energy of a single point is an empty sum).
"""

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from harness.api import full_precision, prepare_features, register_scalar, self_gram, validate_params

from harness_objectives._common import mask_diagonal_, row_dots


def offdiag_logsumexp_rows(gram: Tensor, scale: float) -> Tensor:
    """log sum_{j != i} exp(scale * G_ij) for each row i of a fresh square matrix G (consumed)."""
    return torch.logsumexp(mask_diagonal_(gram.mul_(scale)), dim=1)


class DHELLoss(nn.Module):
    """DHEL (Koromilas et al. 2024): cross-modal positives, negatives within each modality only.

    loss = mean_i [ -x_i.y_i/t + log sum_{j!=i} e^{x_i.x_j/t} + log sum_{j!=i} e^{y_i.y_j/t} ].
    """

    extras = ()

    def __init__(
        self,
        temperature: Annotated[
            float, Field(ge=0.01, le=10, description="temperature t dividing every similarity (fixed)")
        ] = 0.3,
    ) -> None:
        super().__init__()
        self.temperature = float(validate_params(DHELLoss.__init__, {"temperature": temperature})["temperature"])
        register_scalar(self, "logit_scale", math.log(1.0 / self.temperature))

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(
            image_features, text_features, "dhel", at_least=2, why="the in-modal energy needs other samples"
        )
        s = 1.0 / self.temperature
        energy = offdiag_logsumexp_rows(self_gram(x), s) + offdiag_logsumexp_rows(self_gram(y), s)
        return {"dhel": (energy - s * row_dots(x, y)).mean()}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"
