"""Gap metrics against explicit-loop hand computations, closed forms and a one-piece implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import harness
from harness.metrics import gap as G

KEYS = {
    "centroid_distance", "linear_separability", "mean_paired_cosine", "uniformity_image", "uniformity_text",
    "uniformity", "cross_uniformity", "alignment", "rmg", "l2i", "effective_rank_image", "effective_rank_text",
    "pairs_sampled", "separability_pairs",
}


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def gapped_pairs(n: int, d: int, seed: int = 0, offset: float = 0.6, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Paired unit vectors sharing a random component, pushed apart along one axis (a modality gap)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    shift = np.zeros(d)
    shift[0] = offset * math.sqrt(d)
    x = unit(z + 0.5 * rng.normal(size=(n, d)) + shift)
    y = unit(z + 0.5 * rng.normal(size=(n, d)) - shift)
    return x.astype(dtype), y.astype(dtype)


def hand_metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Every geometric gap metric with explicit Python loops, straight from the definitions."""
    n = len(x)

    def dist2(a, b):
        return sum((a[k] - b[k]) ** 2 for k in range(len(a)))

    def cos(a, b):
        return sum(a[k] * b[k] for k in range(len(a))) / math.sqrt(dist2(a, 0 * a) * dist2(b, 0 * b))

    def uniformity(z):
        vals = [math.exp(-2 * dist2(z[i], z[j])) for i in range(n) for j in range(i + 1, n)]
        return math.log(sum(vals) / len(vals))

    def offdiag_cos(z):
        vals = [cos(z[i], z[j]) for i in range(n) for j in range(n) if i != j]
        return sum(vals) / len(vals)

    def erank(z):
        s = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
        p = s / s.sum()
        return math.exp(-sum(q * math.log(q) for q in p if q > 0))

    cx = [sum(x[i][k] for i in range(n)) / n for k in range(x.shape[1])]
    cy = [sum(y[i][k] for i in range(n)) / n for k in range(y.shape[1])]
    paired = sum(cos(x[i], y[i]) for i in range(n)) / n
    cross = [math.exp(-2 * dist2(x[i], y[j])) for i in range(n) for j in range(n) if i != j]
    d_m = max((1 - paired) / 2, 1e-3)
    d_i, d_t = (1 - offdiag_cos(x)) / 2, (1 - offdiag_cos(y)) / 2
    out = {
        "centroid_distance": math.sqrt(sum((a - b) ** 2 for a, b in zip(cx, cy))),
        "mean_paired_cosine": paired,
        "uniformity_image": uniformity(x),
        "uniformity_text": uniformity(y),
        "cross_uniformity": math.log(sum(cross) / len(cross)),
        "alignment": sum(dist2(x[i], y[i]) for i in range(n)) / n,
        "l2i": sum(math.sqrt(dist2(x[i], y[i])) for i in range(n)) / n,
        "rmg": d_m / (d_m + (d_i + d_t) / 2),
        "effective_rank_image": erank(x),
        "effective_rank_text": erank(y),
    }
    out["uniformity"] = (out["uniformity_image"] + out["uniformity_text"]) / 2
    return out


def test_every_metric_matches_explicit_loops():
    x, y = gapped_pairs(9, 5, seed=1)
    got = harness.gap_metrics(x, y, seed=0)
    assert set(got) == KEYS
    want = hand_metrics(x, y)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-10), key
    assert got["pairs_sampled"] == 0.0
    assert got["separability_pairs"] == 9.0
    assert all(isinstance(v, float) for v in got.values())


def test_float32_torch_input_matches_float64_hand_computation():
    x, y = gapped_pairs(12, 6, seed=2)
    got = harness.gap_metrics(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    for key, value in hand_metrics(x, y).items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key


def test_inputs_are_normalised_defensively():
    x, y = gapped_pairs(10, 4, seed=3)
    scales = np.arange(1, 11, dtype=np.float64)[:, None]
    a, b = harness.gap_metrics(x, y), harness.gap_metrics(x * scales, y * 3.0)
    for key in KEYS - {"linear_separability"}:  # the probe sees the normalised rows too, but lbfgs may differ in the last bits
        assert a[key] == pytest.approx(b[key], abs=1e-9), key


def test_identical_embeddings_closed_form():
    x, _ = gapped_pairs(200, 8, seed=4)
    m = harness.gap_metrics(x, x.copy())
    assert m["centroid_distance"] == pytest.approx(0.0, abs=1e-12)
    assert m["alignment"] == pytest.approx(0.0, abs=1e-12)
    assert m["l2i"] == pytest.approx(0.0, abs=1e-6)
    assert m["mean_paired_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert m["uniformity_image"] == pytest.approx(m["uniformity_text"], abs=1e-12)
    # each test embedding appears once per label with identical features: exactly half are right
    assert m["linear_separability"] == 0.5
    d_i = (1 - G.mean_offdiagonal_cosine(torch.from_numpy(x))) / 2
    assert m["rmg"] == pytest.approx(1e-3 / (1e-3 + d_i), rel=1e-9)


def test_antipodal_points_closed_form():
    v = np.zeros((50, 6))
    v[:, 2] = 1.0
    m = harness.gap_metrics(v, -v)
    assert m["centroid_distance"] == 2.0
    assert m["linear_separability"] == 1.0
    assert m["mean_paired_cosine"] == -1.0
    assert m["alignment"] == pytest.approx(4.0)
    assert m["l2i"] == pytest.approx(2.0)
    assert m["uniformity_image"] == 0.0  # every distance is 0
    assert m["cross_uniformity"] == pytest.approx(-8.0)  # every distance is 2
    assert m["effective_rank_image"] == 0.0


def test_antipodal_clusters():
    rng = np.random.default_rng(5)
    axis = np.zeros(16)
    axis[0] = 1.0
    x = unit(axis + 0.01 * rng.normal(size=(300, 16)))
    y = unit(-axis + 0.01 * rng.normal(size=(300, 16)))
    m = harness.gap_metrics(x, y)
    assert m["centroid_distance"] == pytest.approx(2.0, abs=0.005)
    assert m["linear_separability"] == 1.0
    assert m["mean_paired_cosine"] == pytest.approx(-1.0, abs=0.005)


def naive_pairwise(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One-piece N x N versions, as in the contrastive-gap paper's code (torch.pdist / cdist)."""
    n = len(x)
    off = ~torch.eye(n, dtype=torch.bool)
    return {
        "uniformity_image": torch.pdist(x).pow(2).mul(-2).exp().mean().log().item(),
        "uniformity_text": torch.pdist(y).pow(2).mul(-2).exp().mean().log().item(),
        "cross_uniformity": torch.cdist(x, y).pow(2).mul(-2).exp()[off].mean().log().item(),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_equals_one_piece(dtype):
    x, y = gapped_pairs(700, 24, seed=6)
    x, y = torch.from_numpy(x).to(dtype), torch.from_numpy(y).to(dtype)
    one_piece = harness.gap_metrics(x, y, block_size=700)
    for block in (64, 333):
        chunked = harness.gap_metrics(x, y, block_size=block)
        for key in KEYS:
            assert chunked[key] == pytest.approx(one_piece[key], abs=1e-6), (block, key)
    for key, value in naive_pairwise(x.double(), y.double()).items():
        assert one_piece[key] == pytest.approx(value, abs=1e-6), key


def test_pairwise_sum_never_builds_the_full_matrix(monkeypatch):
    x = torch.from_numpy(gapped_pairs(300, 8, seed=7)[0])
    shapes = []
    real = G._tile_kernel

    def spy(rows, cols, t):
        shapes.append((rows.shape[0], cols.shape[0]))
        return real(rows, cols, t)

    monkeypatch.setattr(G, "_tile_kernel", spy)
    G.pairwise_log_mean_exp(x, block_size=64)
    assert max(r * c for r, c in shapes) <= 64 * 64
    assert len(shapes) == 5 * 6 // 2  # 5 row blocks: only tiles on and above the diagonal


def test_sample_pairs_are_uniform_over_ordered_distinct_pairs():
    i, j = G.sample_pairs(4, 120_000, seed=0)
    assert bool((i != j).all())
    counts = np.zeros((4, 4))
    np.add.at(counts, (i.numpy(), j.numpy()), 1)
    expected = 120_000 / 12
    off = ~np.eye(4, dtype=bool)
    assert np.all(np.abs(counts[off] - expected) < 5 * math.sqrt(expected))  # 5 sigma
    a, b = G.sample_pairs(50, 100, seed=3)
    c, d = G.sample_pairs(50, 100, seed=3)
    assert torch.equal(a, c) and torch.equal(b, d)


def test_max_pairs_samples_pairwise_terms():
    x, y = gapped_pairs(400, 16, seed=8, dtype=np.float32)
    exact = harness.gap_metrics(x, y, seed=1)
    sampled = harness.gap_metrics(x, y, max_pairs=40_000, seed=1)
    assert sampled["pairs_sampled"] == 40_000.0
    for key in ("uniformity_image", "uniformity_text", "cross_uniformity", "uniformity"):
        assert sampled[key] == pytest.approx(exact[key], abs=0.03), key
        assert sampled[key] != exact[key]
    for key in ("centroid_distance", "alignment", "rmg", "effective_rank_image", "linear_separability"):
        assert sampled[key] == exact[key], key  # only the pairwise terms are sampled
    assert harness.gap_metrics(x, y, max_pairs=40_000, seed=1) == sampled  # seeded
    # at least as many pairs as exist: exact
    enough = harness.gap_metrics(x, y, max_pairs=400 * 399 // 2, seed=1)
    assert enough["pairs_sampled"] == 0.0 and enough["uniformity_image"] == exact["uniformity_image"]


def test_separability_split_keeps_pairs_together_and_subsamples():
    train, test = G.separability_split(100, seed=0, max_pairs=10_000)
    assert len(train) == 80 and len(test) == 20
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(100))
    train, test = G.separability_split(1000, seed=0, max_pairs=50)
    assert len(train) + len(test) == 50 and not set(train) & set(test)
    again = G.separability_split(1000, seed=0, max_pairs=50)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    x, y = gapped_pairs(300, 8, seed=9)
    assert harness.gap_metrics(x, y, separability_max_pairs=60)["separability_pairs"] == 60.0


def test_separability_tracks_the_gap():
    small = harness.gap_metrics(*gapped_pairs(500, 16, seed=10, offset=0.02))
    large = harness.gap_metrics(*gapped_pairs(500, 16, seed=10, offset=0.5))
    assert small["linear_separability"] < 0.75 and large["linear_separability"] > 0.9
    assert small["centroid_distance"] < large["centroid_distance"]


def test_effective_rank_of_a_known_spectrum():
    # centred rows spanning 3 axes with equal singular values: effective rank exactly 3
    rows = np.concatenate([np.eye(3), -np.eye(3)])
    a = np.zeros((6, 10))
    a[:, :3] = rows
    a[:, 9] = 1.0  # keep rows away from zero; constant column vanishes after centring
    assert G.effective_rank(torch.from_numpy(unit(a))) == pytest.approx(3.0, abs=1e-9)


def test_bad_inputs_raise_value_error():
    x, y = gapped_pairs(5, 3)
    with pytest.raises(ValueError, match="at least 2"):
        harness.gap_metrics(x[:1], y[:1])
    with pytest.raises(ValueError, match="same shape"):
        harness.gap_metrics(x, y[:4])
    with pytest.raises(ValueError, match="2-D"):
        harness.gap_metrics(x[0], y[0])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        harness.gap_metrics(bad, y)
    with pytest.raises(ValueError, match="max_pairs"):
        harness.gap_metrics(x, y, max_pairs=0)
    with pytest.raises(ValueError, match="separability_max_pairs"):
        harness.gap_metrics(x, y, separability_max_pairs=1)


def test_sampled_terms_equal_explicit_sum_over_the_sample():
    x, y = (torch.from_numpy(a) for a in gapped_pairs(50, 6, seed=11))
    i, j = G.sample_pairs(50, 3000, seed=2)
    i[:5], j[:5] = 3, 7  # repeated pairs count once each
    got = G.sampled_pairwise_terms(x, y, i, j, chunk=700)
    for value, (a, b) in zip(got, ((x, x), (y, y), (x, y))):
        terms = [math.exp(-2 * float(((a[p] - b[q]) ** 2).sum())) for p, q in zip(i.tolist(), j.tolist())]
        assert value == pytest.approx(math.log(sum(terms) / len(terms)), abs=1e-10)
