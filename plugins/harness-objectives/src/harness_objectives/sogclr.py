"""``sogclr``: global contrastive loss optimised with per-pair moving averages of the negatives' term.

Paper: Z. Yuan, Y. Wu, Z.-H. Qiu, X. Du, L. Zhang, D. Zhou, T. Yang, "Provable Stochastic
Optimization for Global Contrastive Learning: Small Batch Does Not Harm Performance", ICML 2022
(arXiv:2202.12387).

References (read with ``git show HEAD:<file>``):

- the paper's code, github.com/Optimization-AI/SogCLR at ef289b52ed72d22d8b3c4e8a76d698c117f02a44,
  ``sogclr/builder.py`` lines 41 (``self.u = torch.zeros(N)``: one moving average per training
  sample), 66-130 (``dynamic_contrastive_loss``: u <- (1 - gamma) u + gamma g, then the negatives
  weighted by exp(.)/u, detached; the update is part of the forward), 103-104 (the first visit
  takes gamma = 1), 113-116 (with several workers every rank writes the gathered indices);
  ``train.py`` lines 104 and 126 (``--t 0.1``, ``--gamma 0.9``). That code is unimodal (SimCLR's
  two augmented views, in-view negatives, one ``u`` per image);
- its image-text form, from the same group: github.com/zhqiu/contrastive-learning-iSogCLR at
  c20903bd79d87ff1f99b0af946d92f7c3e3ec3d5, ``bimodal_exps/models/losses.py`` lines 61-136
  (``SogCLR_Loss``: one moving average per image ``s_I`` and per text ``s_T``, with running
  maxima ``b_I``, ``b_T`` that keep the exponentials from overflowing), transcribed here;
  ``bimodal_exps/models/model_clip.py`` lines 74-75 and 133-136 (the ids gathered across ranks
  before the loss); ``bimodal_exps/clip.py`` lines 527 and 534 (``--sogclr_gamma 0.8``,
  ``--temp 0.01``, the defaults here).

With unit-norm image embeddings x_i, text embeddings y_i, S = X Y^T, t = ``temperature``, gamma,
and for each pair i of the batch its row k = index[i] of the training split::

    D^I_ij = S_ij - S_ii        (image i against text j)    D^T_ij = S_ij - S_jj   (text j against image i)
    b^I_k  <- max(b^I_k, max_j D^I_ij / t)                   b^T_k  <- max(b^T_k, max_i D^T_ij / t)
    g^I_i  =  sum_j exp(D^I_ij / t - b^I_k) / (N - 1)         g^T_j  = sum_i exp(D^T_ij / t - b^T_k) / (N - 1)
    s^I_k  <- (1 - gamma) s^I_k exp(b^I_k,old - b^I_k) + gamma g^I_i            (likewise s^T)
    w^I_ij =  exp(D^I_ij / t - b^I_k) / (s^I_k + 1e-10)      (detached)          (likewise w^T)

    image_to_text = mean_i sum_j w^I_ij D^I_ij / (N - 1)
    text_to_image = mean_j sum_i w^T_ij D^T_ij / (N - 1)

s / exp(b) is the moving average u of (1/(N-1)) sum_j exp(D_ij / t), the inner function of the
global contrastive loss t log u; the two terms are the reference's surrogate, whose gradient is
the paper's estimator times t (the weights are detached; the sums run over every j, the pair's own
column included, where D_ii = 0, exactly as the reference). Their VALUE is not a contrastive loss
(about 0 at any point and possibly negative); only the gradient is meaningful.

Adapted to the harness:

- the buffers (``s_image``, ``s_text``, ``b_image``, ``b_text``, one entry per training pair) are
  sized by ``setup(dataset_size)``, which the trainer calls before the first step and before any
  state is restored; they are the loss state (``state_dict``), saved with the checkpoint. A loss
  without ``setup`` raises ``ValueError`` at its first forward; an index outside
  [0, dataset_size) is a ``ValueError``. They are float64 (32 bytes per pair) whatever the
  features' precision (the reference's are float32), so a float64 check reproduces them exactly;
- the reference addresses the text averages by caption id (``text_ids``, one per caption of
  CC3M/COCO); here both are addressed by the ``index`` extra, the pair's row in the training
  split (a dataset that draws one of several captions per image shares the text average across
  them). The reference's unimodal code starts each average at the first visit's value
  (gamma = 1); its image-text code, followed here, starts from s = 0 (so the first s is gamma g);
- with several workers the harness gathers the features (``prepare_features``) and the trainer
  passes the gathered ``index``, so every rank computes the same global update, as the
  reference's gathered ``image_ids``/``text_ids``. A row listed twice in a batch takes its last
  value, deterministically (the reference's CPU indexing does this; on CUDA it is unspecified);
- the temperature is fixed, as in the reference's SogCLR (its temperature receives no gradient):
  a buffer ``logit_scale = log(1/t)`` that the trainer reports.

Terms ``image_to_text`` and ``text_to_image`` (summed, as the reference's ``total_loss``). Needs a
batch of at least 2.
"""

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from harness.api import full_precision, prepare_features, register_scalar, validate_params

from harness_objectives._common import adopt_unsized_, check_dataset_size, check_int_rows, need_extra, write_rows_

#: the reference's ``self.eps``, added to the moving average before dividing by it
EPS = 1e-10
_STATE = ("s_image", "s_text", "b_image", "b_text")


class SogCLRLoss(nn.Module):
    """SogCLR (Yuan et al. 2022), image-text form: negatives weighted by per-pair moving averages.

    Per pair a moving average s (image-to-text and text-to-image) of the negatives' term
    sum_j exp((S_ij - S_ii)/t), updated with rate gamma at each visit (the ``index`` extra);
    loss = sum_j w_ij (S_ij - S_ii) / (N-1) per anchor, w = exp(.)/s detached, both directions summed.
    Call ``setup(dataset_size)`` before the first forward.
    """

    extras = ("index",)

    def __init__(
        self,
        temperature: Annotated[
            float, Field(ge=0.01, le=10, description="temperature t of the exponentials exp((S_ij - S_ii) / t); fixed")
        ] = 0.01,
        gamma: Annotated[
            float,
            Field(gt=0, le=1, description="moving-average rate: s <- (1 - gamma) s + gamma g per visit (1: no memory)"),
        ] = 0.8,
    ) -> None:
        super().__init__()
        p = validate_params(SogCLRLoss.__init__, {"temperature": temperature, "gamma": gamma})
        self.temperature, self.gamma = float(p["temperature"]), float(p["gamma"])
        register_scalar(self, "logit_scale", math.log(1.0 / self.temperature))
        for name in _STATE:  # sized by setup(dataset_size)
            self.register_buffer(name, torch.zeros(0, dtype=torch.float64))

    @property
    def dataset_size(self) -> int:
        """The number of training pairs the state is sized for (0 before ``setup``)."""
        return int(self.s_image.shape[0])

    def setup(self, dataset_size: int) -> None:
        """Size the per-pair state for ``dataset_size`` training pairs, all zero (as the reference starts)."""
        n = check_dataset_size(dataset_size)
        device = self.s_image.device
        for name in _STATE:
            setattr(self, name, torch.zeros(n, dtype=torch.float64, device=device))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a fresh instance that was not set up takes the saved size (the trainer sets up first anyway)
        adopt_unsized_(self, state_dict, prefix, _STATE, lambda t: t.shape[0] == 0)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor, *, index: Tensor | None = None) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features, "sogclr", at_least=2)
        need_extra("sogclr", "index", index)
        n = x.shape[0]
        size = self.dataset_size
        if size == 0:
            raise ValueError(
                "sogclr keeps a moving average per training pair: call setup(dataset_size) before the first "
                "forward (the trainer does), so that its state can be sized"
            )
        rows = check_int_rows("index", index, n).to(self.s_image.device)
        low, high = int(rows.min()), int(rows.max())
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise ValueError(f"index {bad} is out of range for the {size} training pairs sogclr was set up with")

        sim = x @ y.T
        diag = sim.diagonal()
        image_diffs = sim - diag[:, None]  # D^I_ij = S_ij - S_ii
        text_diffs = sim - diag[None, :]  # D^T_ij = S_ij - S_jj
        with torch.no_grad():
            dtype, t = x.dtype, self.temperature
            di, dt = image_diffs.detach() / t, text_diffs.detach() / t
            old_bi, old_bt = self.b_image[rows].to(dtype), self.b_text[rows].to(dtype)
            write_rows_(self.b_image, rows, torch.maximum(di.amax(dim=1), old_bi))
            write_rows_(self.b_text, rows, torch.maximum(dt.amax(dim=0), old_bt))
            bi, bt = self.b_image[rows].to(dtype), self.b_text[rows].to(dtype)
            exp_i = torch.exp(di - bi[:, None])  # exp(D^I / t - b^I), <= 1
            exp_t = torch.exp(dt - bt[None, :])
            g_i, g_t = exp_i.sum(dim=1) / (n - 1), exp_t.sum(dim=0) / (n - 1)
            s_i = (1.0 - self.gamma) * self.s_image[rows].to(dtype) * torch.exp(old_bi - bi) + self.gamma * g_i
            s_t = (1.0 - self.gamma) * self.s_text[rows].to(dtype) * torch.exp(old_bt - bt) + self.gamma * g_t
            write_rows_(self.s_image, rows, s_i)
            write_rows_(self.s_text, rows, s_t)
            w_i = exp_i / (self.s_image[rows].to(dtype) + EPS)[:, None]
            w_t = exp_t / (self.s_text[rows].to(dtype) + EPS)[None, :]
        return {
            "image_to_text": (w_i * image_diffs).sum(dim=1).mean() / (n - 1),
            "text_to_image": (w_t * text_diffs).sum(dim=0).mean() / (n - 1),
        }

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, gamma={self.gamma:g}, dataset_size={self.dataset_size}"
