"""Modality / contrastive gap metrics of paired embeddings: plain functions, exact and scalable.

``x_i`` is an image embedding and ``y_i`` its paired text (or, in the same-modality control, its
paired second view). Every function here L2-normalises its inputs first (defensively: the harness
already passes unit vectors), so the identity ``||a - b||^2 = 2 - 2 a.b`` holds and the pairwise
terms reduce to dot products.

Pairwise terms (uniformity, cross-uniformity) are sums over N^2 pairs. They are computed in tiles of
``block_size`` x ``block_size`` rows, never as one N x N matrix, with float64 accumulation: memory is
O(block_size^2 + N d), and the result is exact (to float32 rounding of the dot products for float32
input; float64 input is computed in float64). With ``max_pairs`` they are estimated instead from a
seeded uniform sample of index pairs (i, j), i != j, in chunks (a sampled sparse-dense product).

Sources: centroid distance and the embedding shift, Liang et al. 2022 ("Mind the Gap");
uniformity, cross-uniformity, alignment and linear separability, Fahim et al. 2024 ("It's Not a
Modality Gap", following Wang & Isola 2020); RMG and L2I, Schrodi et al. 2025; effective rank,
Roy & Vetterli 2007.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

UNIFORMITY_T = 2.0  # exp(-t ||a - b||^2) with t = 2, as in Wang & Isola and Fahim et al.
RMG_FLOOR = 1e-3  # Schrodi et al.: d_m is floored so that perfectly aligned pairs do not give rmg = 0/0
DEFAULT_BLOCK = 2048  # tile side for the exact pairwise sums: a 2048 x 2048 float32 tile is 16 MiB
SAMPLE_CHUNK = 2_000_000  # pairs per sampled chunk (a CSR pattern of ~50 MB)


def as_unit_rows(a: Any, name: str = "embeddings") -> torch.Tensor:
    """``a`` (numpy array or tensor, (N, d)) as a CPU tensor with L2-normalised rows.

    float64 input stays float64 (for exact checks); anything else becomes float32.
    """
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().cpu()
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, d) array, got shape {tuple(t.shape)}")
    if t.dtype != torch.float64:
        t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = t.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has an all-zero row, which cannot be normalised")
    return t / norms


def _exp_kernel(s: torch.Tensor, t: float) -> torch.Tensor:
    """exp(-t ||a - b||^2) = exp(2t (s - 1)) for unit vectors, in place on a tile of dot products s."""
    return s.sub_(1.0).mul_(2.0 * t).exp_()


def _tile_kernel(rows: torch.Tensor, cols: torch.Tensor, t: float) -> torch.Tensor:
    """exp(2t (rows @ cols^T - 1)): the scale and shift ride on the matrix product (one ``addmm``)."""
    shift = torch.full((1, 1), -2.0 * t, dtype=rows.dtype)
    return torch.addmm(shift, rows, cols.T, alpha=2.0 * t).exp_()


def pairwise_log_mean_exp(
    a: torch.Tensor,
    b: torch.Tensor | None = None,
    t: float = UNIFORMITY_T,
    block_size: int = DEFAULT_BLOCK,
) -> float:
    """Exact ``log mean_{i != j} exp(-t ||a_i - b_j||^2)`` in tiles; ``b=None`` means ``b = a``.

    With ``b = a`` the kernel is symmetric, so mean over i != j equals mean over i < j (uniformity)
    and only the tiles on and above the diagonal are computed. Rows must be unit vectors.
    Memory: one ``block_size`` x ``block_size`` tile (plus its exp), never N x N.
    """
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"pairwise means need at least 2 samples, got {n}")
    if b is not None and b.shape != a.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    total = torch.zeros((), dtype=torch.float64)
    ones = torch.ones(min(block_size, n), dtype=a.dtype)
    for r0 in range(0, n, block_size):
        rows = a[r0:r0 + block_size]
        c_start = r0 if b is None else 0
        for c0 in range(c_start, n, block_size):
            cols = (a if b is None else b)[c0:c0 + block_size]
            e = _tile_kernel(rows, cols, t)
            if r0 == c0:  # the tile holds the diagonal i == j
                if b is None:
                    e = e.triu(diagonal=1)
                else:
                    e.fill_diagonal_(0.0)
            # row sums by a matrix-vector product (fast, accurate), then float64 across rows
            total += torch.mv(e, ones[: e.shape[1]]).sum(dtype=torch.float64)
    count = n * (n - 1) // 2 if b is None else n * (n - 1)
    return math.log(total.item() / count)


def sample_pairs(n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` index pairs (i, j) drawn uniformly, with replacement, from the ordered pairs i != j of ``range(n)``."""
    if n < 2:
        raise ValueError(f"sampling pairs needs at least 2 samples, got {n}")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (m,), generator=g)
    j = torch.randint(0, n - 1, (m,), generator=g)
    j += (j >= i).long()  # skip the diagonal: j is uniform over the n - 1 indices other than i
    return i, j


def _sampled_dots(a: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """``a_{i_k} . b_{j_k}`` for every k (in an unspecified order), without gathering rows.

    A sampled dense-dense product (``torch.sparse.sampled_addmm``) over the pattern of the pairs as
    a CSR matrix: rows of ``a`` are read in order and each pair costs one row read of ``b``, about
    ten times faster on CPU than gathering both rows (the sampled path is memory-bound).
    """
    n = a.shape[0]
    order = torch.argsort(i * n + j)  # CSR: by row, then column
    rows, cols = i[order], j[order]
    crow = torch.zeros(n + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), dim=0)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            crow, cols, torch.zeros(len(i), dtype=a.dtype), size=(n, b.shape[0]), check_invariants=False
        )
        return torch.sparse.sampled_addmm(pattern, a, b.T, beta=0.0).values()


def sampled_pairwise_terms(
    x: torch.Tensor,
    y: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    t: float = UNIFORMITY_T,
    chunk: int = SAMPLE_CHUNK,
) -> tuple[float, float, float]:
    """Estimates of (uniformity x, uniformity y, cross-uniformity) from the index pairs (i_k, j_k).

    Each is ``log mean_k exp(-t ||a_{i_k} - b_{j_k}||^2)`` with (a, b) = (x, x), (y, y), (x, y);
    rows must be unit vectors. The pairs are processed ``chunk`` at a time (memory O(chunk)).
    """
    totals = torch.zeros(3, dtype=torch.float64)
    for k0 in range(0, len(i), chunk):
        ik, jk = i[k0:k0 + chunk], j[k0:k0 + chunk]
        for slot, (a, b) in enumerate(((x, x), (y, y), (x, y))):
            totals[slot] += _exp_kernel(_sampled_dots(a, b, ik, jk), t).sum(dtype=torch.float64)
    uni_x, uni_y, cross = (math.log(v / len(i)) for v in totals.tolist())
    return uni_x, uni_y, cross


def paired_stats(x: torch.Tensor, y: torch.Tensor, block_size: int = 16384) -> tuple[float, float, float]:
    """(mean_i x_i.y_i, mean_i ||x_i - y_i||^2, mean_i ||x_i - y_i||_2), in float64 over row blocks."""
    cos = sq = dist = 0.0
    for r0 in range(0, x.shape[0], block_size):
        xb, yb = x[r0:r0 + block_size].double(), y[r0:r0 + block_size].double()
        d2 = ((xb - yb) ** 2).sum(dim=1)
        cos += (xb * yb).sum().item()
        sq += d2.sum().item()
        dist += d2.sqrt().sum().item()
    n = x.shape[0]
    return cos / n, sq / n, dist / n


def mean_offdiagonal_cosine(a: torch.Tensor) -> float:
    """``mean_{i != j} a_i . a_j`` for unit rows, exactly, in O(N d): (||sum a||^2 - N) / (N (N - 1))."""
    n = a.shape[0]
    if n < 2:
        raise ValueError(f"off-diagonal means need at least 2 samples, got {n}")
    s = a.sum(dim=0, dtype=torch.float64)
    diag = sum((a[r0:r0 + 16384].double() ** 2).sum() for r0 in range(0, n, 16384))
    return ((s @ s - diag) / (n * (n - 1))).item()


def effective_rank(a: torch.Tensor, block_size: int = 8192) -> float:
    """Roy & Vetterli 2007: ``exp(H(p))``, ``p = s / sum(s)``, s the singular values of the centred rows.

    The singular values are the square roots of the eigenvalues of the d x d scatter matrix,
    accumulated in float64 over row blocks (memory O(d^2 + block_size d)); eigenvalues below
    ``max eigenvalue * d * float64 eps`` are rounding noise of a rank-deficient matrix (e.g. N <= d)
    and count as 0. Returns 0.0 when all rows are equal (no singular value > 0).
    """
    mean = a.mean(dim=0, dtype=torch.float64)
    d = a.shape[1]
    scatter = torch.zeros((d, d), dtype=torch.float64)
    for r0 in range(0, a.shape[0], block_size):
        c = a[r0:r0 + block_size].double() - mean
        scatter += c.T @ c
    from threadpoolctl import threadpool_limits  # (a dependency of scikit-learn)

    # single-threaded: a d x d eigenproblem is small, and threaded LAPACK on a busy CPU stalls (100x)
    with threadpool_limits(limits=1, user_api="blas"):
        eig = torch.from_numpy(np.linalg.eigvalsh(scatter.numpy()))
    top = eig.max().item()
    if top <= 0.0:
        return 0.0
    eig = eig[eig > top * d * torch.finfo(torch.float64).eps]
    p = eig.sqrt() / eig.sqrt().sum()
    return math.exp(-(p * p.log()).sum().item())


def separability_split(n: int, seed: int = 0, max_pairs: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) pair indices: a seeded subsample of at most ``max_pairs`` of the n pairs, split 80/20.

    Pairs, not embeddings, are split, so x_i and y_i always land on the same side.
    """
    if n < 2:
        raise ValueError(f"linear separability needs at least 2 pairs, got {n}")
    if max_pairs < 2:
        raise ValueError(f"separability_max_pairs must be >= 2, got {max_pairs}")
    rng = np.random.default_rng(seed)
    used = rng.choice(n, size=max_pairs, replace=False) if n > max_pairs else np.arange(n)
    used = rng.permutation(used)
    n_test = min(len(used) - 1, max(1, round(0.2 * len(used))))
    return used[n_test:], used[:n_test]


def linear_separability(
    x: torch.Tensor, y: torch.Tensor, seed: int = 0, max_pairs: int = 10_000
) -> tuple[float, int]:
    """Fahim et al.: test accuracy of a logistic regression telling image (0) from text (1).

    At most ``max_pairs`` pairs are used (a seeded subsample above that); they are split 80/20 with
    both members of a pair on the same side, the classifier (sklearn ``LogisticRegression``,
    defaults) is trained on the 80% and scored on the 20%. Returns (accuracy, pairs used).
    """
    from sklearn.linear_model import LogisticRegression

    n = x.shape[0]
    if n < 2:
        raise ValueError(f"linear separability needs at least 2 pairs, got {n}")
    if max_pairs < 2:
        raise ValueError(f"separability_max_pairs must be >= 2, got {max_pairs}")
    train, test = separability_split(n, seed, max_pairs)
    xn, yn = x.numpy(), y.numpy()

    def stack(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats = np.concatenate([xn[idx], yn[idx]])
        labels = np.concatenate([np.zeros(len(idx), dtype=int), np.ones(len(idx), dtype=int)])
        return feats, labels

    clf = LogisticRegression(max_iter=1000).fit(*stack(train))
    return float(clf.score(*stack(test))), int(len(train) + len(test))


def gap_metrics(
    image_emb: Any,
    text_emb: Any,
    seed: int = 0,
    max_pairs: int | None = None,
    separability_max_pairs: int = 10_000,
    block_size: int = DEFAULT_BLOCK,
) -> dict[str, float]:
    """Gap geometry of N pairs (x_i, y_i); inputs (N, d), L2-normalised here (defensively).

    Keys (all floats):

    - ``centroid_distance`` = ||mean x - mean y||_2 (Liang et al. 2022; Fahim et al. 2024).
    - ``linear_separability``: see :func:`linear_separability` (seeded, <= separability_max_pairs).
    - ``mean_paired_cosine`` = mean_i x_i . y_i.
    - ``uniformity_image`` / ``uniformity_text`` = log mean_{i<j} exp(-2 ||z_i - z_j||^2),
      ``uniformity`` = their mean; ``cross_uniformity`` = log mean_{i != j} exp(-2 ||x_i - y_j||^2).
    - ``alignment`` = mean_i ||x_i - y_i||^2; ``l2i`` = mean_i ||x_i - y_i||_2.
    - ``rmg`` = d_m / (d_m + (d_I + d_T) / 2), d_m = max((1 - mean_i x_i.y_i) / 2, 1e-3),
      d_I = (1 - mean_{i != j} x_i.x_j) / 2, d_T likewise (Schrodi et al. 2025).
    - ``effective_rank_image`` / ``effective_rank_text``: see :func:`effective_rank`.
    - ``pairs_sampled``: index pairs sampled per pairwise term (0 when exact);
      ``separability_pairs``: pairs given to the separability probe.

    The pairwise terms are exact (tiled) unless ``max_pairs`` is smaller than the N (N - 1) / 2
    distinct pairs, in which case all three use the same seeded sample of ``max_pairs`` pairs.
    Raises ValueError for fewer than 2 pairs (uniformity of one sample is undefined).
    """
    x = as_unit_rows(image_emb, "image_emb")
    y = as_unit_rows(text_emb, "text_emb")
    if x.shape != y.shape:
        raise ValueError(f"image_emb and text_emb must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype:
        x, y = x.double(), y.double()
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"gap metrics need at least 2 pairs (uniformity of one sample is undefined), got {n}")
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be a positive integer or None, got {max_pairs}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")

    paired_cos, alignment, l2i = paired_stats(x, y)
    out: dict[str, float] = {
        "centroid_distance": (x.mean(dim=0, dtype=torch.float64) - y.mean(dim=0, dtype=torch.float64)).norm().item(),
        "mean_paired_cosine": paired_cos,
        "alignment": alignment,
        "l2i": l2i,
    }

    if max_pairs is None or max_pairs >= n * (n - 1) // 2:
        out["uniformity_image"] = pairwise_log_mean_exp(x, None, block_size=block_size)
        out["uniformity_text"] = pairwise_log_mean_exp(y, None, block_size=block_size)
        out["cross_uniformity"] = pairwise_log_mean_exp(x, y, block_size=block_size)
        sampled = 0
    else:
        i, j = sample_pairs(n, max_pairs, seed)
        out["uniformity_image"], out["uniformity_text"], out["cross_uniformity"] = sampled_pairwise_terms(x, y, i, j)
        sampled = max_pairs
    out["uniformity"] = (out["uniformity_image"] + out["uniformity_text"]) / 2

    d_m = max((1.0 - paired_cos) / 2, RMG_FLOOR)
    d_i = (1.0 - mean_offdiagonal_cosine(x)) / 2
    d_t = (1.0 - mean_offdiagonal_cosine(y)) / 2
    out["rmg"] = d_m / (d_m + (d_i + d_t) / 2)

    out["effective_rank_image"] = effective_rank(x)
    out["effective_rank_text"] = effective_rank(y)
    out["linear_separability"], sep_pairs = linear_separability(x, y, seed, separability_max_pairs)
    out["pairs_sampled"] = float(sampled)
    out["separability_pairs"] = float(sep_pairs)
    return out
