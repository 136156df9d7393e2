"""``cloob``: InfoLOOB on modern-Hopfield-retrieved embeddings.

Paper: A. Fürst, E. Rumetshofer, J. Lehner, V. Tran, F. Tang, H. Ramsauer, D. Kreil, M. Kopp,
G. Klambauer, A. Bitto-Nemling, S. Hochreiter, "CLOOB: Modern Hopfield Networks with InfoLOOB
Outperform CLIP", NeurIPS 2022 (arXiv:2110.11316).

Reference: github.com/ml-jku/cloob at 357adda017e4104266b9ee23c821372b91e70f66:

- ``src/training/methods.py`` lines 5-15 (``infoLOOB_loss``), 18-24 (``cloob``: the two InfoLOOB
  terms summed), 38-51 (``hopfield_retrieval``, ``hopfield``: retrieve, then re-normalise rows);
- ``src/training/train.py`` lines 75-90: the ``hflayers.Hopfield`` layer is built with every
  projection and normalisation off (static state, stored and projected patterns, no out
  projection, one head, no dropout), so ``Hopfield((stored, state, stored))`` is exactly
  softmax(scaling * state @ stored^T) @ stored; ``scaling = args.scale_hopfield``;
- ``README.md`` lines 100-101: the published run uses ``--init-inv-tau=30 --scale-hopfield=8``
  (the paper's values for Conceptual Captions; ``src/training/params.py`` lines 155-156 default
  both to 14.3, the paper's YFCC value for beta). The inverse temperature is not learned by
  default (``--learnable-inv-tau`` is off).

With unit-norm image embeddings X, text embeddings Y (rows x_i, y_i), beta = ``hopfield_scale``
and tau = 1 / ``inv_tau``::

    Hop(state, stored) = normalize_rows( softmax_rows(beta * state @ stored^T) @ stored )
    U_x = Hop(X, X)   U_y = Hop(Y, X)     # patterns retrieved from the image memory
    V_x = Hop(X, Y)   V_y = Hop(Y, Y)     # patterns retrieved from the text memory

    InfoLOOB(A, B) = tau * mean_i [ -a_i.b_i / tau + log sum_{j != i} exp(a_i.b_j / tau) ]
    loss = InfoLOOB(U_x, U_y) + InfoLOOB(V_y, V_x)

The reference leaves the positive out of the log-sum-exp by adding -1000 at the diagonal; here it
is -inf (the same value: exp(-1000) vanishes next to terms >= exp(-inv_tau)). The two InfoLOOB
terms are SUMMED (not averaged) and multiplied by tau, as in the reference.

Adapted to the harness: the reference is already two-tower (image/text) and symmetric; the
features arrive L2-normalised, as in the reference. Distributed: the reference gathers the global
batch with the local shard first (``train.py`` lines 24-50); here ``harness.api.prepare_features``
gathers it in rank order, which gives the same loss (InfoLOOB is permutation invariant).
``inv_tau`` is fixed (a buffer ``logit_scale = log(inv_tau)``, so the trainer reports the
temperature 1/inv_tau). Terms: ``infoloob_image`` (image-anchored) and ``infoloob_text``.
Needs a batch of at least 2 (InfoLOOB has no term without negatives).
"""

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness.api import full_precision, prepare_features, register_scalar, self_gram, validate_params

from harness_objectives._common import mask_diagonal_, row_dots


def hopfield_retrieve(gram_state_stored: Tensor, stored: Tensor, beta: float) -> Tensor:
    """normalize_rows(softmax_rows(beta * state @ stored^T) @ stored), given state @ stored^T."""
    return F.normalize(torch.softmax(beta * gram_state_stored, dim=1) @ stored, dim=1)


def info_loob(a: Tensor, b: Tensor, inv_tau: float) -> Tensor:
    """tau * mean_i [ -inv_tau a_i.b_i + log sum_{j != i} exp(inv_tau a_i.b_j) ], tau = 1 / inv_tau."""
    logits = mask_diagonal_((a @ b.T).mul_(inv_tau))
    return torch.logsumexp(logits, dim=1).mean() / inv_tau - row_dots(a, b).mean()


class CLOOBLoss(nn.Module):
    """CLOOB (Fürst et al. 2022): InfoLOOB on Hopfield-retrieved embeddings, both directions summed.

    loss = InfoLOOB(U_x, U_y) + InfoLOOB(V_y, V_x), each InfoLOOB multiplied by tau = 1/inv_tau;
    U = patterns retrieved from the image memory, V = from the text memory (see the module
    docstring for the formula and the reference).
    """

    extras = ()

    def __init__(
        self,
        inv_tau: Annotated[
            float,
            Field(ge=1, le=100, description="inverse temperature 1/tau of InfoLOOB, the value itself (not its log); fixed"),
        ] = 30.0,
        hopfield_scale: Annotated[
            float,
            Field(gt=0, le=1000, description="beta: inverse temperature of the Hopfield retrieval softmax"),
        ] = 8.0,
    ) -> None:
        super().__init__()
        p = validate_params(CLOOBLoss.__init__, {"inv_tau": inv_tau, "hopfield_scale": hopfield_scale})
        self.inv_tau = float(p["inv_tau"])
        self.hopfield_scale = float(p["hopfield_scale"])
        register_scalar(self, "logit_scale", math.log(self.inv_tau))  # reported as temperature 1/inv_tau

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features, "cloob", at_least=2)
        beta = self.hopfield_scale
        sim = x @ y.T  # x_i . y_j
        u_x = hopfield_retrieve(self_gram(x), x, beta)  # state X, stored X
        u_y = hopfield_retrieve(sim.T, x, beta)  # state Y, stored X
        v_x = hopfield_retrieve(sim, y, beta)  # state X, stored Y
        v_y = hopfield_retrieve(self_gram(y), y, beta)  # state Y, stored Y
        return {
            "infoloob_image": info_loob(u_x, u_y, self.inv_tau),
            "infoloob_text": info_loob(v_y, v_x, self.inv_tau),
        }

    def extra_repr(self) -> str:
        return f"inv_tau={self.inv_tau:g}, hopfield_scale={self.hopfield_scale:g}"
