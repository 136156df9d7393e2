"""``unicl``: bidirectional contrast in image-text-label space, every pair of a caption group a positive.

Paper: J. Yang, C. Li, P. Zhang, B. Xiao, C. Liu, L. Yuan, J. Gao, "Unified Contrastive Learning in
Image-Text-Label Space", CVPR 2022 (arXiv:2204.03610), Sec. 3.2, Eqs. 3-5.

Reference: github.com/microsoft/UniCL at 9983bf89660f16dc923530a14d56a83b4699dcbc. The released
code trains with the loss's pieces but does not ship the construction of the label targets for
image-text batches (its data loader yields class labels; ``data/build.py`` builds no
image-text targets), so the targets follow the paper's equations:

- ``model/model.py`` line 50 (``self.logit_scale = nn.Parameter(torch.ones([]))``: a learnable
  log inverse temperature, initialised at 1, i.e. temperature 1/e) and line 168
  (``T = self.logit_scale.exp()``, returned with the normalised features);
- ``main.py`` lines 174-175 (``tau * features_image @ features_text.t()``: the logits, the inverse
  temperature MULTIPLYING the cosine similarities), 103-105 and 180 (``SoftTargetCrossEntropy``
  on those logits: timm's ``sum(-target * log_softmax(x, dim=-1), dim=-1).mean()``,
  huggingface/pytorch-image-models ``timm/loss/cross_entropy.py``, class
  ``SoftTargetCrossEntropy``): each row's target a distribution, the batch averaged;
- the paper's Eqs. 3-5 (recalled; the paper's text was not available offline to re-read): with
  P(i) = {k in the batch : y_k = y_i}, the pairs sharing pair i's label,

      L_i2t = - sum_i 1/|P(i)| sum_{k in P(i)} log( exp(tau u_i.v_k) / sum_j exp(tau u_i.v_j) )
      L_t2i = - sum_j 1/|P(j)| sum_{k in P(j)} log( exp(tau u_k.v_j) / sum_i exp(tau u_i.v_j) )
      L_BiC = L_i2t + L_t2i

With unit-norm image embeddings x_i, text embeddings y_i, s = exp(logit_scale) = 1/temperature
(clamped at 100), the logits l_ij = s x_i.y_j and T_ij = 1 when ``caption_group`` g_i = g_j::

    image_to_text = mean_i [ LSE_j(l_ij) - sum_j T_ij l_ij / |P(i)| ]      (row i's target T_i. / |P(i)|)
    text_to_image = mean_j [ LSE_i(l_ij) - sum_i T_ij l_ij / |P(j)| ]      (column j's target)
    loss          = image_to_text + text_to_image                           (SUMMED, Eq. 5)

When every pair has its own group this is CLIP's two cross-entropies, summed (CLIP averages them,
so the loss is twice CLIP's); pairs with the same group are positives of each other in both
directions, never negatives.

Adapted to the harness: the labels are the ``caption_group`` extra (equal for rows whose captions
have the same meaning: identical canonical captions in the shapes world, the same digit in
``digits``); the batch average of ``SoftTargetCrossEntropy`` replaces the paper's sum over the
batch (the code's choice). The temperature is learnable as in the reference, parametrised as
elsewhere in the harness (``logit_scale`` = log(1/t), clamped at log 100 by the harness; the
reference does not clamp it); the default t = 1/e is the reference's initialisation. With several
workers the features are gathered (``prepare_features``) and the trainer gathers
``caption_group`` with them. Terms ``image_to_text`` and ``text_to_image``. Needs a batch of at
least 2.
"""

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from harness.api import clamp_logit_scale, full_precision, prepare_features, register_scalar, validate_params

from harness_objectives._common import check_int_rows, need_extra


class UniCLLoss(nn.Module):
    """UniCL (Yang et al. 2022): both directions' cross-entropy against targets spread over the caption group.

    l = s X Y^T; row i's target is uniform over the pairs j with caption_group g_j = g_i, column
    j's over the pairs i with g_i = g_j; loss = CE_rows + CE_columns (summed), s = 1/temperature.
    """

    extras = ("caption_group",)

    def __init__(
        self,
        temperature: Annotated[
            float,
            Field(ge=0.01, le=1, description="initial temperature t (logit scale 1/t, at most 100); UniCL starts at 1/e"),
        ] = math.exp(-1.0),
        learnable_temperature: Annotated[bool, Field(description="learn log(1/t) with the model, as UniCL")] = True,
    ) -> None:
        super().__init__()
        p = validate_params(UniCLLoss.__init__, {"temperature": temperature, "learnable_temperature": learnable_temperature})
        self.learnable_temperature = bool(p["learnable_temperature"])
        register_scalar(self, "logit_scale", math.log(1.0 / float(p["temperature"])), self.learnable_temperature)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor, *, caption_group: Tensor | None = None) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features, "unicl", at_least=2)
        need_extra("unicl", "caption_group", caption_group)
        groups = check_int_rows("caption_group", caption_group, x.shape[0]).to(x.device)
        positive = (groups[:, None] == groups[None, :]).to(x.dtype)  # T_ij, symmetric, 1 on the diagonal
        counts = positive.sum(dim=1)  # |P(i)| (= |P(j)| for column j: T is symmetric)
        scale = clamp_logit_scale(self.logit_scale).to(x.dtype).exp()
        logits = scale * (x @ y.T)
        targeted = positive * logits
        return {
            "image_to_text": (torch.logsumexp(logits, dim=1) - targeted.sum(dim=1) / counts).mean(),
            "text_to_image": (torch.logsumexp(logits, dim=0) - targeted.sum(dim=0) / counts).mean(),
        }

    def extra_repr(self) -> str:
        t = 1.0 / float(clamp_logit_scale(self.logit_scale.detach()).exp())
        return f"temperature={t:.4g}, learnable_temperature={self.learnable_temperature}"
