"""Reference rows (floors and ceilings) computed from the evaluation sets, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

import harness
from harness.builtin.evaluations.references import (
    CHANCE,
    ORACLE,
    PIXELS,
    _hit_at,
    arithmetic_rows,
    best_constant,
    blind_oracle,
    oracle_accuracy,
    pixel_features,
)
from harness.testing import synthetic_context
from harness.types import ArithmeticSet, ArithmeticTriplet, ClassificationSet


def test_chance_and_oracles_by_hand():
    assert best_constant(np.array([0, 0, 1])) == pytest.approx(2 / 3)
    labels = np.repeat([0, 1, 2], 20)
    colour = labels + 5  # the colour determines the label
    size = np.tile([0, 1], 30)  # independent of it
    attributes = {"colour": colour, "size": size}
    assert oracle_accuracy(labels, attributes, ["colour"]) == 1.0  # cross-fitted: every colour is in both halves
    assert abs(oracle_accuracy(labels, attributes, ["size"]) - 1 / 3) < 0.15  # about chance (1/3)
    rec = ClassificationSet("shape", np.zeros((60, 4, 4, 3), np.uint8), labels, ["a", "b", "c"], ["{c}"],
                            tags={"attributes": attributes, "oracle_features": [["size"], ["colour"]]})
    assert blind_oracle(rec) == 1.0  # the best of the declared oracles
    rec.tags["oracle_accuracy"] = 0.2  # computed by the dataset from its generative model: used as given
    assert blind_oracle(rec) == 0.2
    rec.tags.pop("oracle_accuracy")
    rec.tags.pop("oracle_features")
    assert blind_oracle(rec) is None


def test_hit_at_k_of_random_picks():
    assert _hit_at(2, 10, 1) == pytest.approx(0.2)
    assert _hit_at(2, 10, 5) == pytest.approx(1 - math.comb(8, 5) / math.comb(10, 5))
    assert _hit_at(0, 10, 5) == 0.0 and _hit_at(3, 3, 5) == 1.0
    gallery = np.zeros((6, 2, 2, 3), np.uint8)
    shape, colour = np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 2, 0, 1, 2])
    t = [ArithmeticTriplet(0, "red", "blue", [2])]  # image 0 (shape 0, colour 0) -> colour 2: image 2
    rec = ArithmeticSet("a", gallery, t, tags={"attributes": {"shape": shape, "colour": colour}, "changed": ["colour"]})
    rows = arithmetic_rows(rec)
    assert rows[CHANCE]["hit1"] == pytest.approx(1 / 5)  # one target among the 5 other images
    assert rows[ORACLE]["hit1"] == pytest.approx(1 / 2)  # knows the shape: images 1 and 2 remain
    assert rows[ORACLE]["hit5"] == 1.0


def test_pixel_features_pool_to_at_most_16_per_side():
    images = np.full((3, 32, 32, 3), 255, np.uint8)
    feats = pixel_features(images)
    assert feats.shape == (3, 16 * 16 * 3) and np.allclose(feats, 1.0)
    assert pixel_features(np.zeros((2, 8, 8, 3), np.uint8)).shape == (2, 8 * 8 * 3)


def test_evaluations_report_rows_for_their_own_columns():
    ctx = synthetic_context()
    zs = harness.create_evaluation("zeroshot_classification").reference_rows(ctx)
    assert zs[CHANCE] == {"toy_classes.top1": pytest.approx(7 / 20), "mean_top1": pytest.approx(7 / 20)}
    lp = harness.create_evaluation("linear_probe").reference_rows(ctx)
    assert set(lp) == {CHANCE, PIXELS} and set(lp[PIXELS]) == {"toy_classes.accuracy"}
    ar = harness.create_evaluation("arithmetic", lambdas=[1.0, 2.0]).reference_rows(ctx)
    assert set(ar[CHANCE]) == {"toy_arithmetic.lambda_1.hit1", "toy_arithmetic.lambda_1.hit5",
                               "toy_arithmetic.lambda_2.hit1", "toy_arithmetic.lambda_2.hit5"}


def test_multiple_choice_sets_classify_among_each_images_candidates():
    """A composition probe: each image chooses between its two bindings; a colour-only oracle is at chance."""
    import torch

    from harness.builtin.evaluations.linear_probe import probe_accuracy
    from harness.builtin.evaluations.zeroshot import classification_metrics, restrict

    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    candidates = np.array([[0, 1], [0, 1], [2, 3], [2, 3]] * 2)
    colours = np.array([0, 0, 1, 1, 0, 0, 1, 1])  # the pair of colours: the same for both bindings of a block
    rec = ClassificationSet("composition", np.zeros((8, 2, 2, 3), np.uint8), labels, ["a", "b", "c", "d"], ["{c}"],
                            tags={"candidates": candidates, "attributes": {"colours": colours},
                                  "oracle_accuracy": 0.5})
    scores = torch.tensor([[0.9, 0.1, 0.95, 0.0]] * 8)  # class 2 scores highest, but only rows 2, 3, 6, 7 may pick it
    got = classification_metrics(restrict(scores, rec), torch.as_tensor(labels))
    assert got["top1"] == pytest.approx(4 / 8) and "top5" not in got  # picks 0 in block 0, 2 in block 1
    rows = harness.builtin.evaluations.references.classification_rows(rec)
    assert rows[CHANCE] == 0.5 and rows[ORACLE] == 0.5
    feats = np.eye(4)[labels] + 0.01 * np.arange(8)[:, None]
    assert probe_accuracy(feats, labels, 0.5, 1.0, 200, 0, candidates) == 1.0
