"""``barlow_twins``: redundancy reduction on the cross-correlation of the two towers.

Paper: J. Zbontar, L. Jing, I. Misra, Y. LeCun, S. Deny, "Barlow Twins: Self-Supervised Learning
via Redundancy Reduction", ICML 2021 (arXiv:2103.03230).

Reference: github.com/facebookresearch/barlowtwins at 8e8d284ca0bc02f88b92328e53f9b901e86b4a3c,
``main.py`` lines 204-221 (``self.bn = nn.BatchNorm1d(sizes[-1], affine=False)``, ``c =
bn(z1).T @ bn(z2) / batch_size``, all-reduced over GPUs; ``on_diag + lambd * off_diag``),
lines 180-184 (``off_diagonal``), line 39 (``--lambd 0.0051``) and line 89 (the model's batch
norms are converted to SyncBatchNorm, so the statistics are those of the global batch). With the
two branches' raw (not normalised) projector outputs Z_1, Z_2, (N, d)::

    bn(Z)  = (Z - mean_rows(Z)) / sqrt(var_biased(Z, over rows) + 1e-5)   (BatchNorm1d, training mode)
    c      = bn(Z_1)^T bn(Z_2) / N                                         (d x d)
    loss   = sum_k (1 - c_kk)^2 + off_diagonal_weight * sum_{k != l} c_kl^2

Adapted to two towers: Z_1 is the image tower's and Z_2 the text tower's projected output before L2
normalisation (the extras ``image_raw`` and ``text_raw``). The reference is symmetric in its two
views up to c -> c^T, which leaves the loss unchanged, so one direction covers both. The trainer
hands over raw features gathered across ranks, so the batch statistics and c use the global batch
(the reference's SyncBatchNorm + all_reduce of c / batch_size). ``image_features``/``text_features``
are not used. Terms: ``on_diagonal`` and ``off_diagonal`` (already multiplied by its weight).
Needs a batch of at least 2 (BatchNorm1d refuses one sample in training mode).
"""

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from harness.api import check_pair, compute_dtype, full_precision, need_batch, validate_params

BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default eps, as the reference builds it


def batch_standardise(z: Tensor) -> Tensor:
    """BatchNorm1d(affine=False) in training mode: batch mean, biased variance, eps 1e-5."""
    mean = z.mean(dim=0)
    var = (z - mean).pow(2).mean(dim=0)
    return (z - mean) * torch.rsqrt(var + BN_EPS)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins (Zbontar et al. 2021) across the two towers, on their raw projections.

    c = bn(Z_img)^T bn(Z_txt) / N; loss = sum_k (1 - c_kk)^2 + off_diagonal_weight * sum_{k!=l} c_kl^2.
    """

    extras = ("image_raw", "text_raw")

    def __init__(
        self,
        off_diagonal_weight: Annotated[
            float, Field(ge=0, le=100, description="lambda: weight of the squared off-diagonal cross-correlations")
        ] = 0.0051,
    ) -> None:
        super().__init__()
        p = validate_params(BarlowTwinsLoss.__init__, {"off_diagonal_weight": off_diagonal_weight})
        self.off_diagonal_weight = float(p["off_diagonal_weight"])

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor, *, image_raw: Tensor, text_raw: Tensor) -> dict[str, Tensor]:
        check_pair(image_raw, text_raw, "image_raw and text_raw")
        n, d = image_raw.shape
        need_batch(n, "barlow_twins", why="batch normalisation needs two samples")
        dtype = compute_dtype(image_raw, text_raw)
        c = (batch_standardise(image_raw.to(dtype)).T @ batch_standardise(text_raw.to(dtype))) / n
        diagonal = torch.eye(d, dtype=torch.bool, device=c.device)
        return {
            "on_diagonal": (1 - c.diagonal()).pow(2).sum(),
            "off_diagonal": self.off_diagonal_weight * c.masked_fill(diagonal, 0).pow(2).sum(),
        }

    def extra_repr(self) -> str:
        return f"off_diagonal_weight={self.off_diagonal_weight:g}"
