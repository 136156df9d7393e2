"""``vicreg``: Variance-Invariance-Covariance Regularization across the two towers.

Paper: A. Bardes, J. Ponce, Y. LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022 (arXiv:2105.04906).

Reference: github.com/facebookresearch/vicreg at 4e12602fd495af83efd1631fbe82523e6db092e0,
``main_vicreg.py`` lines 194-220 (``VICReg.forward``) and 239-242 (``off_diagonal``); defaults
``--sim-coeff 25``, ``--std-coeff 25``, ``--cov-coeff 1`` (lines 58-63). On the two branches' raw
(not normalised) projector outputs Z_a, Z_b, (N, d)::

    invariance = mean over N x d of (Z_a - Z_b)^2                          (F.mse_loss)
    C          = Z - mean_rows(Z)
    std        = sqrt(var_unbiased(Z, over rows) + 1e-4)
    variance   = mean_k relu(1 - std_a[k]) / 2 + mean_k relu(1 - std_b[k]) / 2
    cov        = C^T C / (N - 1)
    covariance = sum_{k != l} cov_a[k, l]^2 / d + sum_{k != l} cov_b[k, l]^2 / d
    loss       = sim_weight * invariance + var_weight * variance + cov_weight * covariance

Adapted to two towers: branch a is the image tower, branch b the text tower, each its projected
output before L2 normalisation (the extras ``image_raw`` and ``text_raw``); the loss is symmetric
in the two, as the reference is in its two views. The reference computes the invariance term on the
local batch and the rest on the batch gathered across GPUs (lines 198-202); the harness's trainer
hands over raw features already gathered across ranks, so every term uses the global batch (in one
process the two are the same). ``image_features``/``text_features`` (the normalised ones) are not
used. For N <= d / 2 the squared off-diagonal sum is computed from the N x N Gram matrix,
||C C^T||_F^2 / (N - 1)^2 - sum_k var_k^2 (the same value, half the products or fewer). Terms: ``invariance``, ``variance``, ``covariance``, each already weighted. Needs a
batch of at least 2 (the unbiased variance of one sample is undefined).
"""

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness.api import check_pair, compute_dtype, full_precision, need_batch, self_gram, validate_params

STD_EPS = 1e-4  # main_vicreg.py line 205


def _variance_and_covariance(z: Tensor) -> tuple[Tensor, Tensor]:
    """(mean_k relu(1 - std_k), sum_{k != l} cov_kl^2 / d) of one branch (N, d)."""
    n, d = z.shape
    c = z - z.mean(dim=0)
    var = c.pow(2).sum(dim=0) / (n - 1)  # unbiased, as torch.var
    std = torch.sqrt(var + STD_EPS)
    if 2 * n <= d:
        # ||C^T C||_F = ||C C^T||_F: the N x N Gram matrix is the cheaper product. With rank <= N - 1
        # the off-diagonal mass is at least (d / (N - 1) - 1) times the diagonal's, so subtracting
        # the diagonal loses no precision.
        gram = self_gram(c)
        off_diagonal = (gram.pow(2).sum() / (n - 1) ** 2 - var.pow(2).sum()) / d
    else:
        cov = self_gram(c.T) / (n - 1)  # C^T C / (N - 1), d x d
        diagonal = torch.eye(d, dtype=torch.bool, device=z.device)
        off_diagonal = cov.masked_fill(diagonal, 0).pow(2).sum() / d
    return F.relu(1 - std).mean(), off_diagonal


class VICRegLoss(nn.Module):
    """VICReg (Bardes et al. 2022) across the two towers, on their raw (unnormalised) projections.

    loss = sim_weight * MSE(Z_img, Z_txt) + var_weight * hinge on each column's std
    + cov_weight * squared off-diagonal covariances / d, as the reference's main_vicreg.py.
    """

    extras = ("image_raw", "text_raw")

    def __init__(
        self,
        sim_weight: Annotated[float, Field(ge=0, le=1e4, description="weight of the invariance (MSE) term")] = 25.0,
        var_weight: Annotated[float, Field(ge=0, le=1e4, description="weight of the variance (std hinge) term")] = 25.0,
        cov_weight: Annotated[float, Field(ge=0, le=1e4, description="weight of the covariance (off-diagonal) term")] = 1.0,
    ) -> None:
        super().__init__()
        p = validate_params(VICRegLoss.__init__, {"sim_weight": sim_weight, "var_weight": var_weight, "cov_weight": cov_weight})
        self.sim_weight, self.var_weight, self.cov_weight = (float(p[k]) for k in ("sim_weight", "var_weight", "cov_weight"))

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor, *, image_raw: Tensor, text_raw: Tensor) -> dict[str, Tensor]:
        check_pair(image_raw, text_raw, "image_raw and text_raw")
        need_batch(image_raw.shape[0], "vicreg", why="the unbiased variance needs two samples")
        dtype = compute_dtype(image_raw, text_raw)
        za, zb = image_raw.to(dtype), text_raw.to(dtype)
        var_a, cov_a = _variance_and_covariance(za)
        var_b, cov_b = _variance_and_covariance(zb)
        return {
            "invariance": self.sim_weight * F.mse_loss(za, zb),
            "variance": self.var_weight * (var_a / 2 + var_b / 2),
            "covariance": self.cov_weight * (cov_a + cov_b),
        }

    def extra_repr(self) -> str:
        return f"sim_weight={self.sim_weight:g}, var_weight={self.var_weight:g}, cov_weight={self.cov_weight:g}"
