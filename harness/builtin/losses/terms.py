"""The geometry terms the built-in losses share (uniformity, alignment) and their term weights.

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

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor

from harness.api import symmetric_self_gram


def as_float(t: Tensor) -> Tensor:
    """``t`` in at least float32 (half and bfloat16 inputs are cast up; float64 stays float64)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _need_pairs(n: int, what: str) -> None:
    if n < 2:
        raise ValueError(f"{what} of a single sample is undefined: it needs a batch of at least 2, got {n}")


def neg_sq_dists(a: Tensor, b: Tensor, t: float, gram: Tensor | None = None) -> Tensor:
    """The (N, M) matrix -t ||a_i - b_j||^2 = t (2 a_i.b_j - ||a_i||^2 - ||b_j||^2).

    ``gram`` is ``a @ b.T`` when already computed (e.g. the CLIP similarity matrix); without it,
    ``a`` must be ``b`` and the result must feed a function symmetric in it (in-modal uniformity
    does), see ``harness.api.symmetric_self_gram``. One fused ``addmm`` on the Gram matrix; no square
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
