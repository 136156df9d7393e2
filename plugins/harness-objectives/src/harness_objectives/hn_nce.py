"""``hn_nce``: hard-negative noise-contrastive estimation.

Paper: F. Radenovic, A. Dubey, A. Kadian, T. Mihaylov, S. Vandenhende, Y. Patel, Y. Wen,
V. Ramanathan, D. Mahajan, "Filtering, Distillation, and Hard Negatives for Vision-Language
Pre-Training" (DiHT), CVPR 2023 (arXiv:2301.02280), Sec. 3.3.

Reference: there is no official code (github.com/facebookresearch/diht ships models and
evaluation only). This is the paper's equation, in the form issue 13 fixes. With unit-norm image
embeddings x_i, text embeddings y_i, t = ``temperature`` and S = X Y^T / t::

    w_ij      = (N - 1) exp(beta S_ij) / sum_{k != i} exp(beta S_ik)           (j != i)
    L_i2t     = -mean_i log( exp(S_ii) / (alpha exp(S_ii) + sum_{j != i} w_ij exp(S_ij)) )
    L_t2i     = the same on S^T (text anchors; each column's weights normalised over that column)
    loss      = L_i2t + L_t2i                    (SUMMED, as issue 13 specifies; CLIP averages)

Each anchor's weights are normalised over that anchor's own negatives (they average to 1, so
with beta = 0 and alpha = 1 each direction is InfoNCE). A third-party transcription found by code
search divides ``exp(beta * S)`` (N x N) by a length-N vector of row sums, which broadcasts over
the last axis and so normalises w_ij by anchor j's sum instead of anchor i's; not copied here.

Computed in log space: sum_{j != i} w_ij exp(S_ij) = (N - 1) exp(LSE_{j != i}((1 + beta) S_ij)
- LSE_{j != i}(beta S_ij)) = exp(M_i), and each anchor's term is log(alpha + exp(M_i - S_ii)) =
``logaddexp(log(alpha), M_i - S_ii)``: nothing overflows, a term near 0 keeps its relative
precision, and alpha = 0 (the paper's decoupled variant) is exact. M_i has a written-out backward
(``_WeightedNegatives``) that saves time over autograd through four log-sum-exps; the tests check
it against finite differences and against autograd through the loop transcription.

Adapted to the harness: the paper's own two-tower loss, unchanged. The weights are not detached
(the paper's equation has no stop-gradient). The temperature is fixed here (issue 13 fixes this
loss's parameters; a CLIP-style run would usually learn it): a buffer ``logit_scale = log(1/t)``,
reported by the trainer. Defaults: t = 0.07 (CLIP's initial temperature, which DiHT starts from), alpha = 1
and beta = 0.5 (the values the public DiHT transcriptions default to; the paper's text was not
available offline to confirm them). Terms: ``image_to_text``, ``text_to_image``. Needs a batch of
at least 2.
"""

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from harness.api import full_precision, prepare_features, register_scalar, validate_params

from harness_objectives._common import mask_diagonal_, row_dots


class _WeightedNegatives(torch.autograd.Function):
    """M_i = log sum_{j != i} w_ij exp(S_ij) along the rows and along the columns of S, in one pass each.

    Input: S with -inf on the diagonal (N x N). With the shift m_i = max_{j != i} S_ij and
    D = S - m (so exp(D) <= 1)::

        M_i = log(N - 1) + m_i + log sum_{j != i} exp((1 + beta) D_ij) - log sum_{j != i} exp(beta D_ij)

    which is log(N - 1) + LSE((1 + beta) S_i.) - LSE(beta S_i.). The backward is written out:
    dM_i/dS_ij = (1 + beta) softmax((1 + beta) S_i.)_j - beta softmax(beta S_i.)_j, one N x N matrix
    per direction saved by the forward, so the backward is one multiply-add pass (autograd through
    four ``logsumexp`` calls makes about twice as many passes over N x N matrices).
    """

    @staticmethod
    def forward(ctx, masked: Tensor, beta: float) -> tuple[Tensor, Tensor]:
        n = masked.shape[0]
        outs, weights = [], []
        for dim in (1, 0):
            m = masked.amax(dim=dim, keepdim=True)
            d = masked - m  # <= 0, -inf on the diagonal
            if beta == 0:  # w_ij = 1: M_i = LSE_{j != i}(S_ij)
                q = d.exp_()
                a = q.sum(dim=dim, keepdim=True)
                outs.append((m + a.log()).squeeze(dim))
                weights.append(q.div_(a))
                continue
            p = torch.exp(d * beta)  # exp(beta D), 0 on the diagonal
            q = d.exp_().mul_(p)  # exp((1 + beta) D)
            a, b = q.sum(dim=dim, keepdim=True), p.sum(dim=dim, keepdim=True)
            outs.append((m + a.log() - b.log()).squeeze(dim) + math.log(n - 1))
            weights.append(q.mul_((1.0 + beta) / a).sub_(p.mul_(beta / b)))
        ctx.save_for_backward(*weights)
        return outs[0], outs[1]

    @staticmethod
    def backward(ctx, grad_rows: Tensor, grad_cols: Tensor) -> tuple[Tensor, None]:
        w_rows, w_cols = ctx.saved_tensors
        return torch.addcmul(w_rows * grad_rows[:, None], w_cols, grad_cols[None, :]), None


class HardNegativeNCELoss(nn.Module):
    """HN-NCE (Radenovic et al. 2023): InfoNCE whose negatives are re-weighted by their similarity.

    Per direction -mean_i log(e^{S_ii} / (alpha e^{S_ii} + sum_{j!=i} w_ij e^{S_ij})), S = XY^T/t,
    w_ij = (N-1) e^{beta S_ij} / sum_{k!=i} e^{beta S_ik}; the two directions summed.
    """

    extras = ()

    def __init__(
        self,
        temperature: Annotated[float, Field(ge=0.01, le=10, description="temperature t: S = X Y^T / t (fixed)")] = 0.07,
        alpha: Annotated[
            float, Field(ge=0, le=10, description="weight of the positive in the denominator (1: InfoNCE-like, 0: decoupled)")
        ] = 1.0,
        beta: Annotated[
            float, Field(ge=0, le=10, description="hardness: negatives weighted by exp(beta S_ij), 0 = uniform")
        ] = 0.5,
    ) -> None:
        super().__init__()
        p = validate_params(HardNegativeNCELoss.__init__, {"temperature": temperature, "alpha": alpha, "beta": beta})
        self.temperature, self.alpha, self.beta = float(p["temperature"]), float(p["alpha"]), float(p["beta"])
        register_scalar(self, "logit_scale", math.log(1.0 / self.temperature))

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features, "hn_nce", at_least=2)
        s = 1.0 / self.temperature
        positives = s * row_dots(x, y)  # S_ii
        masked = mask_diagonal_((x @ y.T).mul_(s))  # S, -inf on the diagonal
        out = {}
        for name, negatives in zip(("image_to_text", "text_to_image"), _WeightedNegatives.apply(masked, self.beta)):
            # -log(e^{S_ii} / (alpha e^{S_ii} + e^{M_i})) = log(alpha + e^{M_i - S_ii})
            margin = negatives - positives
            if self.alpha > 0:
                margin = torch.logaddexp(margin, margin.new_tensor(math.log(self.alpha)))
            out[name] = margin.mean()
        return out

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, alpha={self.alpha:g}, beta={self.beta:g}"
