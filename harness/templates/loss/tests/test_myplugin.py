"""myplugin fits the harness's loss contract and computes its formula."""

import torch
import torch.nn.functional as F

from harness.testing import check_loss
from harness_myplugin import MyPlugin


def test_fits_the_contract_at_its_defaults_and_limits():
    # registered through the entry point, checked with real calls; keep the limits in step with the signature
    for params in ({}, {"negative_weight": 0.0}, {"negative_weight": 100.0}):
        assert check_loss("myplugin", **params) is None, params


def test_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    y = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    s = [[sum(a * b for a, b in zip(xi, yj)) for yj in y.tolist()] for xi in x.tolist()]
    positives = sum((1 - s[i][i]) ** 2 for i in range(5)) / 5
    negatives = sum(s[i][j] ** 2 for i in range(5) for j in range(5) if i != j) / 20
    got = MyPlugin(negative_weight=0.5)(x, y)
    assert abs(got["positives"].item() - positives) < 1e-12
    assert abs(got["negatives"].item() - 0.5 * negatives) < 1e-12
