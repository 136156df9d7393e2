"""``albef_itc``: ALBEF's image-text contrastive loss with momentum distillation and feature queues.

Paper: J. Li, R. R. Selvaraju, A. D. Gotmare, S. Joty, C. Xiong, S. Hoi, "Align before Fuse: Vision
and Language Representation Learning with Momentum Distillation", NeurIPS 2021 (arXiv:2107.07651).

Reference: github.com/salesforce/ALBEF at b9727e43c3040491774d1b22cc27718aa7772fac:

- ``models/model_pretrain.py`` lines 57-59 (the temperature, a learnable parameter; queue size;
  momentum), 79-84 (the queues: random unit vectors, and a pointer at 0), 88-90 (the temperature
  clamped to [0.001, 0.5] at each forward), 102-130 (the ITC loss, transcribed here: momentum
  features against [momentum batch; queue], soft targets alpha softmax + (1 - alpha) one-hot,
  both directions averaged, then ``_dequeue_and_enqueue``), 226-230 (``_momentum_update``: the
  EMA of both towers), 234-250 (``_dequeue_and_enqueue``: the gathered momentum features replace
  the queue's entries at the pointer, which moves on);
- ``configs/Pretrain.yaml`` lines 14-19 (``temp: 0.07``, ``queue_size: 65536``, ``momentum: 0.995``,
  ``alpha: 0.4``, ``embed_dim: 256``);
- ``Pretrain.py`` lines 61-64 (in the first epoch alpha ramps up linearly: alpha * min(1, i / steps
  per epoch)).

With unit-norm image embeddings x_i, text embeddings y_i, the momentum towers' x^m_i, y^m_i (the
``image_momentum`` and ``text_momentum`` extras), the queues Q^I, Q^T (K past momentum features
each), s = 1/temperature, alpha::

    T^m = [Y^m; Q^T]    I^m = [X^m; Q^I]                                   ((N + K) x d each)
    target_i2t = alpha softmax_rows(s X^m T^m^T) + (1 - alpha) [I_N | 0]     (no gradient)
    target_t2i = alpha softmax_rows(s Y^m I^m^T) + (1 - alpha) [I_N | 0]
    L_i2t = -mean_i sum_j target_i2t_ij log softmax_j(s x_i . T^m_j)
    L_t2i = -mean_i sum_j target_t2i_ij log softmax_j(s y_i . I^m_j)
    itc   = (L_i2t + L_t2i) / 2
    then Q^I, Q^T <- the batch's X^m, Y^m written at the pointer (a ring buffer)

The online features are contrasted with the MOMENTUM features of the batch and the queue (as
ALBEF), so the image-to-text direction gives gradients to the image tower only, and text-to-image
to the text tower only.

Adapted to the harness:

- the momentum towers belong to the trainer: a loss with a float ``momentum`` attribute in (0, 1)
  makes it keep EMA copies of both towers, updated after each optimizer step (ALBEF updates them
  at the start of each forward: the same sequence of weights), and pass their L2-normalised
  features of the batch as ``image_momentum``/``text_momentum``;
- the loss state is the queues ``image_queue``, ``text_queue`` (K x d, float32 as ALBEF's, rows
  instead of ALBEF's columns) and ``queue_ptr``. They start as ALBEF's, random unit vectors, drawn
  from generators seeded with 0 (image) and 1 (text), so building the loss leaves the job's random
  stream alone and two builds are identical. ``embed_dim`` sizes them at construction; with the default 0 they are
  sized from the first batch's d, and a fresh instance restoring a saved state
  (``load_state_dict``) takes the saved shape, so ``fresh = AlbefITCLoss(**params);
  fresh.setup(n); fresh.load_state_dict(old.state_dict())`` continues exactly where ``old`` was.
  ``setup(dataset_size)`` checks its argument and sizes nothing (the queues do not depend on the
  dataset);
- the ring buffer wraps: ALBEF asserts queue_size % batch_size == 0; here any batch size works, a
  batch larger than the queue leaving its last K rows (as writing the rows one after the other
  would). ``queue_size = 0`` is allowed (in-batch negatives only);
- ALBEF computes the loss on each rank's local batch against the queue and enqueues the gathered
  momentum features; here the features are gathered (``prepare_features``), the trainer gathers
  the momentum extras with them, and every rank computes the global batch's loss and the same
  queue update;
- the temperature is learnable as in ALBEF, parametrised as ``logit_scale`` = log(1/t) (ALBEF
  learns t itself: the same loss, other optimiser steps) and clamped to t in [0.01, 0.5] where it
  is used (ALBEF clamps to [0.001, 0.5]; the harness's limit is 0.01);
- ALBEF's warm-up of alpha over the first epoch is ``alpha_warmup_steps`` (0 = constant alpha, the
  default; set it to the steps of one epoch to reproduce ALBEF), which then adds the ``step``
  extra: alpha_t = alpha * min(1, step / alpha_warmup_steps).

Term ``itc``. A batch of one is defined when the queue is not empty (its negatives are the queue's).
"""

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness.api import clamp_logit_scale, full_precision, prepare_features, register_scalar, validate_params

from harness_objectives._common import adopt_unsized_, check_dataset_size, check_feature_rows, check_int, need_extra

_QUEUES = ("image_queue", "text_queue")
#: ALBEF's upper clamp of the temperature (``self.temp.clamp_(0.001, 0.5)``), as a lower clamp of log(1/t)
MIN_LOGIT_SCALE = math.log(2.0)


def random_unit_rows(k: int, d: int, seed: int = 0) -> Tensor:
    """(k, d) float32 rows drawn from N(0, I) with a generator seeded ``seed``, then L2-normalised (ALBEF's init)."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(k, d, generator=g, dtype=torch.float32), dim=1)


class AlbefITCLoss(nn.Module):
    """ALBEF's ITC (Li et al. 2021): contrast against the momentum towers' batch and queue, with distilled soft targets.

    target = alpha softmax(s X^m [Y^m; Q^T]^T) + (1 - alpha) one-hot (and likewise text-to-image);
    itc = (CE(s X [Y^m; Q^T]^T, target_i2t) + CE(s Y [X^m; Q^I]^T, target_t2i)) / 2, then enqueue X^m, Y^m.
    """

    extras = ("image_momentum", "text_momentum")

    def __init__(
        self,
        temperature: Annotated[
            float, Field(ge=0.01, le=0.5, description="initial temperature t (logit scale 1/t), kept in [0.01, 0.5]")
        ] = 0.07,
        learnable_temperature: Annotated[bool, Field(description="learn log(1/t) with the model, as ALBEF learns t")] = True,
        momentum: Annotated[
            float, Field(gt=0, lt=1, description="EMA rate of the trainer's momentum towers: m <- momentum m + (1 - momentum) w")
        ] = 0.995,
        alpha: Annotated[
            float, Field(ge=0, le=1, description="distillation weight: target = alpha softmax(momentum logits) + (1 - alpha) one-hot")
        ] = 0.4,
        queue_size: Annotated[
            int, Field(ge=0, le=1_048_576, description="K: past momentum features kept per tower as extra negatives (0: none)")
        ] = 1024,
        embed_dim: Annotated[
            int, Field(ge=0, le=65_536, description="feature dimension d of the queues; 0: taken from the first batch")
        ] = 0,
        alpha_warmup_steps: Annotated[
            int, Field(ge=0, description="steps over which alpha ramps up linearly from 0 (ALBEF: one epoch); 0: constant")
        ] = 0,
    ) -> None:
        super().__init__()
        p = validate_params(
            AlbefITCLoss.__init__,
            {
                "temperature": temperature,
                "learnable_temperature": learnable_temperature,
                "momentum": momentum,
                "alpha": alpha,
                "queue_size": queue_size,
                "embed_dim": embed_dim,
                "alpha_warmup_steps": alpha_warmup_steps,
            },
        )
        self.learnable_temperature = bool(p["learnable_temperature"])
        self.momentum = float(p["momentum"])  # read by the trainer: it keeps EMA towers at this rate
        self.alpha = float(p["alpha"])
        self.queue_size = int(p["queue_size"])
        self.alpha_warmup_steps = int(p["alpha_warmup_steps"])
        if self.alpha_warmup_steps > 0:
            self.extras = (*type(self).extras, "step")
        register_scalar(self, "logit_scale", math.log(1.0 / float(p["temperature"])), self.learnable_temperature)
        d = int(p["embed_dim"])
        self.register_buffer("image_queue", random_unit_rows(self.queue_size, d) if d else torch.zeros(self.queue_size, 0))
        self.register_buffer("text_queue", random_unit_rows(self.queue_size, d, seed=1) if d else torch.zeros(self.queue_size, 0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @property
    def embed_dim(self) -> int:
        """The queues' feature dimension (0 until the first batch when built with ``embed_dim=0``)."""
        return int(self.image_queue.shape[1])

    def setup(self, dataset_size: int) -> None:
        """Nothing to size per training pair: checks ``dataset_size`` (the queues do not depend on it)."""
        check_dataset_size(dataset_size)

    def _size_queues(self, d: int, device: torch.device) -> None:
        if self.embed_dim == 0:
            self.image_queue = random_unit_rows(self.queue_size, d).to(device)
            self.text_queue = random_unit_rows(self.queue_size, d, seed=1).to(device)
        elif self.embed_dim != d:
            raise ValueError(f"albef_itc's queues hold {self.embed_dim}-dimensional features; got features of dimension {d}")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a fresh instance built with embed_dim=0 takes the saved queues' shape
        adopt_unsized_(self, state_dict, prefix, _QUEUES, lambda t: t.shape[1] == 0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def alpha_at(self, step: int | None) -> float:
        """alpha at optimizer step ``step``: alpha * min(1, step / alpha_warmup_steps), or alpha without warm-up."""
        if self.alpha_warmup_steps == 0:
            return self.alpha
        if step is None:
            raise ValueError("albef_itc with alpha_warmup_steps > 0 needs the step extra")
        return self.alpha * min(1.0, check_int("step", step) / self.alpha_warmup_steps)

    @torch.no_grad()
    def _enqueue(self, image_momentum: Tensor, text_momentum: Tensor) -> None:
        """ALBEF's ``_dequeue_and_enqueue`` as a ring buffer: row r of the batch goes to (ptr + r) mod K."""
        k, n = self.queue_size, image_momentum.shape[0]
        if k == 0:
            return
        ptr = int(self.queue_ptr[0])
        first = max(0, n - k)  # a batch larger than the queue leaves its last K rows
        slots = (ptr + torch.arange(first, n, device=self.image_queue.device)) % k
        self.image_queue[slots] = image_momentum[first:].to(self.image_queue)
        self.text_queue[slots] = text_momentum[first:].to(self.text_queue)
        self.queue_ptr[0] = (ptr + n) % k

    @full_precision
    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        *,
        image_momentum: Tensor | None = None,
        text_momentum: Tensor | None = None,
        step: int | None = None,
    ) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features, "albef_itc")
        need_extra("albef_itc", "image_momentum", image_momentum)
        need_extra("albef_itc", "text_momentum", text_momentum)
        n, d = x.shape
        if n + self.queue_size < 2:
            raise ValueError(
                f"albef_itc is undefined for a batch of {n} with an empty queue: it needs negatives, so it needs at least 2"
            )
        xm = check_feature_rows("image_momentum", image_momentum, x)
        ym = check_feature_rows("text_momentum", text_momentum, x)
        alpha = self.alpha_at(step)
        self._size_queues(d, x.device)
        scale = clamp_logit_scale(self.logit_scale).clamp(min=MIN_LOGIT_SCALE).to(x.dtype).exp()
        with torch.no_grad():
            text_all = torch.cat([ym, self.text_queue.to(x.dtype)])  # [Y^m; Q^T]
            image_all = torch.cat([xm, self.image_queue.to(x.dtype)])  # [X^m; Q^I]
            one_hot = torch.eye(n, n + self.queue_size, dtype=x.dtype, device=x.device)
            target_i2t = alpha * torch.softmax(scale.detach() * (xm @ text_all.T), dim=1) + (1.0 - alpha) * one_hot
            target_t2i = alpha * torch.softmax(scale.detach() * (ym @ image_all.T), dim=1) + (1.0 - alpha) * one_hot
        loss_i2t = -(F.log_softmax(scale * (x @ text_all.T), dim=1) * target_i2t).sum(dim=1).mean()
        loss_t2i = -(F.log_softmax(scale * (y @ image_all.T), dim=1) * target_t2i).sum(dim=1).mean()
        self._enqueue(xm, ym)
        return {"itc": (loss_i2t + loss_t2i) / 2}

    def extra_repr(self) -> str:
        t = 1.0 / float(clamp_logit_scale(self.logit_scale.detach()).clamp(min=MIN_LOGIT_SCALE).exp())
        return (
            f"temperature={t:.4g}, learnable_temperature={self.learnable_temperature}, momentum={self.momentum:g}, "
            f"alpha={self.alpha:g}, queue_size={self.queue_size}, embed_dim={self.embed_dim}, "
            f"alpha_warmup_steps={self.alpha_warmup_steps}"
        )
