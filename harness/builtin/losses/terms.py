"""What the losses share: input preparation and the geometry terms (uniformity, alignment).

From Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and
Uniformity on the Hypersphere" (ICML 2020), with t = 2, as used by Fahim, Murphy & Fyshe, "It's Not a
Modality Gap: Characterizing and Addressing the Contrastive Gap" (2024):

- uniformity(X)      = log mean_{i<j}  exp(-t ||x_i - x_j||^2)
- cross_uniformity   = log mean_{i!=j} exp(-t ||x_i - y_j||^2)
- alignment(X, Y)    = mean_i ||x_i - y_i||^2

Squared distances come from Gram matrices (||a||^2 + ||b||^2 - 2 a.b), so there is no square root
and identical embeddings have finite gradients; the log-mean-exp is a ``logsumexp``. The formulas
hold for any rows; the losses receive unit-norm ones.
Each is undefined for a single sample (no pairs): it raises ``ValueError`` instead of returning NaN.
"""

from __future__ import annotations

import functools
import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from harness.distributed import gather_features


def as_float(t: Tensor) -> Tensor:
    """``t`` in at least float32 (half and bfloat16 inputs are cast up; float64 stays float64)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def full_precision(forward):
    """Decorate a loss ``forward``: autocast off inside, so every product runs in float32 (or float64)."""

    @functools.wraps(forward)
    def wrapper(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            return forward(self, image_features, text_features)

    return wrapper


def prepare_features(image_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
    """Check a batch of paired embeddings, gather it across ranks and cast it up to float32.

    Every loss starts its ``forward`` with this: (N, d) and (N, d) in, the gathered (N_all, d) pair out.
    """
    if image_features.ndim != 2 or image_features.shape != text_features.shape:
        raise ValueError(
            "image_features and text_features must both be (N, d) with the same shape, got "
            f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
        )
    if image_features.shape[0] == 0:
        raise ValueError("the batch is empty: a loss needs at least one (image, text) pair")
    image_features, text_features = gather_features(image_features, text_features)
    return as_float(image_features), as_float(text_features)


def _need_pairs(n: int, what: str) -> None:
    if n < 2:
        raise ValueError(f"{what} of a single sample is undefined: it needs a batch of at least 2, got {n}")


class _SymmetricSelfGram(torch.autograd.Function):
    """G = x @ x.T for a consumer symmetric in G (f(G) = f(G^T)), such as in-modal uniformity.

    Such a consumer's gradient g is symmetric, so dL/dx = (g + g^T) x = 2 g x: one product in the
    backward instead of the two of a general ``mm`` (and no transposed N x N read).
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x @ x.T

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return 2 * (grad @ x)


def symmetric_self_gram(x: Tensor) -> Tensor:
    """x @ x.T, to be consumed only by functions symmetric in it (see ``_SymmetricSelfGram``)."""
    return _SymmetricSelfGram.apply(x)


def neg_sq_dists(a: Tensor, b: Tensor, t: float, gram: Tensor | None = None) -> Tensor:
    """The (N, M) matrix -t ||a_i - b_j||^2 = t (2 a_i.b_j - ||a_i||^2 - ||b_j||^2).

    ``gram`` is ``a @ b.T`` when already computed (e.g. the CLIP similarity matrix); without it,
    ``a`` must be ``b`` and the result must feed a function symmetric in it (in-modal uniformity
    does), see ``_SymmetricSelfGram``. One fused ``addmm`` on the Gram matrix; no square
    root, so identical rows have finite gradients.
    """
    if gram is None:
        if a is not b:
            raise ValueError("neg_sq_dists: pass gram = a @ b.T for two different matrices")
        gram = symmetric_self_gram(a)
    na, nb = a.pow(2).sum(1, keepdim=True), b.pow(2).sum(1, keepdim=True)
    return torch.addmm(
        gram, torch.cat([na, torch.ones_like(na)], 1), torch.cat([torch.ones_like(nb), nb], 1).T, beta=2 * t, alpha=-t
    )


def log_mean_exp_offdiag_(z: Tensor) -> Tensor:
    """log mean_{i!=j} exp(z_ij) of a square matrix, via ``logsumexp``; overwrites z's diagonal (-inf)."""
    n = z.shape[0]
    z.diagonal().fill_(float("-inf"))
    return torch.logsumexp(z.flatten(), dim=0) - math.log(n * (n - 1))


def uniformity(x: Tensor, t: float = 2.0) -> Tensor:
    """log mean_{i<j} exp(-t ||x_i - x_j||^2) (Wang & Isola 2020); lower is more uniform.

    The distance matrix is symmetric, so the mean over i < j equals the mean over i != j.
    """
    _need_pairs(x.shape[0], "uniformity")
    x = as_float(x)
    return log_mean_exp_offdiag_(neg_sq_dists(x, x, t))


def cross_uniformity(x: Tensor, y: Tensor, t: float = 2.0, sim: Tensor | None = None) -> Tensor:
    """log mean_{i!=j} exp(-t ||x_i - y_j||^2): uniformity across modalities, pairs left out.

    ``sim`` may pass a precomputed ``x @ y.T`` (the CLIP similarity matrix) to save a product.
    """
    _need_pairs(x.shape[0], "cross-modal uniformity")
    x, y = as_float(x), as_float(y)
    return log_mean_exp_offdiag_(neg_sq_dists(x, y, t, sim))


def alignment(x: Tensor, y: Tensor) -> Tensor:
    """mean_i ||x_i - y_i||^2 (Wang & Isola's alignment with alpha = 2); lower is better aligned."""
    x, y = as_float(x), as_float(y)
    return (x - y).pow(2).sum(1).mean()


def Weight(description: str):  # noqa: N802 - an annotation alias, used like a type
    """``Annotated[float, Field(ge=0, ...)]``: a term weight (>= 0, finite), with its description."""
    return Annotated[float, Field(ge=0, le=1e6, description=description)]


def weighted(weight: float, term, like: Tensor) -> Tensor:
    """``weight * term()``, or a zero scalar without computing the term when the weight is 0."""
    if weight == 0:
        return like.new_zeros(())
    return weight * term()
