"""``negclip``: CLIP whose image-to-text direction also ranks hard-negative captions.

Paper: M. Yuksekgonul, F. Bianchi, P. Kalluri, D. Jurafsky, J. Zou, "When and Why Vision-Language
Models Behave like Bags-of-Words, and What to Do About It?", ICLR 2023 (arXiv:2210.01936).

Reference: github.com/mertyg/vision-language-models-are-bows (``README.md`` lines 67-85: NegCLIP
was trained with a fork of open_clip) and that fork, github.com/vinid/neg_clip at
e680f8e44ab9f081f62094232d8ee3b77f8574f7:

- ``src/training/train.py`` lines 84-95: images = [images; hard images], texts = [captions;
  captions of the hard images; hard-negative captions; hard-negative captions of the hard images]
  (twice as many texts as images), one ``model(images, texts)``;
- ``src/open_clip/loss.py`` lines 88-121 (single process, lines 102-103 and 117-120)::

      logits_per_image = logit_scale * image_features @ text_features.T      # (B, 2B)
      logits_per_text  = logit_scale * text_features @ image_features.T      # (2B, B)
      loss = (CE(logits_per_image, arange(B)) + CE(logits_per_text[:B], arange(B))) / 2

With unit-norm image embeddings x_i, captions y_i, hard-negative captions n_ik (K per pair, the
``text_negatives`` extra, (N, K, d)) and s = exp(logit_scale) = 1/temperature (clamped at 100)::

    T      = [ y_1 ... y_N | n_11 ... n_1K  n_21 ... n_NK ]                   (N + N K texts)
    loss   = ( CE(s X T^T, I) + CE(s Y X^T, I) ) / 2

Image-to-text: a cross-entropy over every column, so an image ranks its own caption against every
other caption AND every image's K negatives (not only its own). Text-to-image: over the positive
captions only (the rows ``[:B]`` of the reference), so negatives are never anchors.

Adapted to the harness: the reference's batch also adds each image's hard-negative *image* (a
nearest neighbour) with its caption and hard captions; that is batch construction (data), not the
loss, and the harness's datasets supply hard-negative captions only. The hard negatives come from
the same text tower, in the graph, so they receive gradients, as in the reference. The learnable
temperature follows CLIP/open_clip (``logit_scale`` = log(1/t), an ``nn.Parameter`` when
learnable, clamped at log 100; NegCLIP fine-tunes CLIP's learned one). The trainer gathers
``text_negatives`` across ranks with the features, so every image ranks every rank's negatives.
The logits are computed in two blocks, s X Y^T and s X Negatives^T (no concatenated copy of the
texts), and each anchor's cross-entropy as softplus(LSE_{j != i}(l_ij) - l_ii), the same value as
LSE_j(l_ij) - l_ii without its cancellation when the loss is small. Term: ``contrastive``. Needs a
batch of at least 2 (the text-to-image direction has no negative otherwise); K = 0 is CLIP.
"""

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness.api import clamp_logit_scale, full_precision, prepare_features, register_scalar, validate_params

from harness_objectives._common import mask_diagonal_, row_dots


class NegCLIPLoss(nn.Module):
    """NegCLIP (Yuksekgonul et al. 2023): image-to-text logits over [captions | all images' hard-negative captions].

    loss = (CE(s X [Y | Negatives]^T, I) + CE(s Y X^T, I)) / 2, s = 1/temperature.
    """

    extras = ("text_negatives",)

    def __init__(
        self,
        temperature: Annotated[
            float, Field(ge=0.01, le=1, description="initial temperature t (logit scale 1/t, at most 100)")
        ] = 0.07,
        learnable_temperature: Annotated[bool, Field(description="learn log(1/t) with the model, as CLIP")] = True,
    ) -> None:
        super().__init__()
        p = validate_params(NegCLIPLoss.__init__, {"temperature": temperature, "learnable_temperature": learnable_temperature})
        self.learnable_temperature = bool(p["learnable_temperature"])
        register_scalar(self, "logit_scale", math.log(1.0 / float(p["temperature"])), self.learnable_temperature)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor, *, text_negatives: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(
            image_features, text_features, "negclip", at_least=2, why="the text-to-image direction needs other images"
        )
        n, d = x.shape
        if not isinstance(text_negatives, Tensor) or text_negatives.ndim != 3 or text_negatives.shape[0] != n or text_negatives.shape[2] != d:
            shape = tuple(text_negatives.shape) if isinstance(text_negatives, Tensor) else type(text_negatives).__name__
            raise ValueError(f"text_negatives must be (N, K, d) = ({n}, K, {d}), got {shape}")
        negatives = text_negatives.to(x.dtype).reshape(-1, d)  # image 0's K negatives, then image 1's, ...
        scale = clamp_logit_scale(self.logit_scale).exp().to(x.dtype)
        sx = scale * x
        positives = row_dots(sx, y)
        # the logits [s X Y^T | s X Negatives^T], (N, N + N K), in two blocks; the positives leave the
        # log-sum-exps (softplus adds them back)
        captions = mask_diagonal_(sx @ y.T)
        image_to_text = torch.logaddexp(  # over every caption and every image's negatives
            torch.logsumexp(captions, dim=1), torch.logsumexp(sx @ negatives.T, dim=1)
        )
        text_to_image = torch.logsumexp(captions, dim=0)  # s Y X^T's rows: the positive captions only
        # CE_i = LSE_j(l_ij) - l_ii = softplus(LSE_{j != i}(l_ij) - l_ii)
        margins = torch.cat([image_to_text, text_to_image]) - positives.repeat(2)
        return {"contrastive": F.softplus(margins).mean()}

    def extra_repr(self) -> str:
        t = 1.0 / float(clamp_logit_scale(self.logit_scale.detach()).exp())
        return f"temperature={t:.4g}, learnable_temperature={self.learnable_temperature}"
