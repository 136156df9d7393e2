"""Reference rows (floors and ceilings) computed from the evaluation sets, against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

import harness
from harness.builtin.evaluations.references import (
    BINDING_FREE,
    CHANCE,
    ORACLE,
    PIXELS,
    ROWS,
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


# ------------------------------------------------------------------------------- binding-free row


def mass_decides(n_per_class: int = 60, seed: int = 0) -> ClassificationSet:
    """A hand-made composition set: 2 blocks (colours 0, 1 and 2, 3) of 2 bindings; an image shows
    binding 0 exactly when its block's first colour covers more pixels than its second."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n_per_class)
    block, binding = labels // 2, labels % 2
    big, small = rng.uniform(60, 120, len(labels)), rng.uniform(20, 55, len(labels))
    feats = np.zeros((len(labels), 4))
    rows = np.arange(len(labels))
    feats[rows, 2 * block] = np.where(binding == 0, big, small)
    feats[rows, 2 * block + 1] = np.where(binding == 0, small, big)
    candidates = np.stack([2 * block, 2 * block + 1], axis=1)
    return ClassificationSet("composition", np.zeros((len(labels), 2, 2, 3), np.uint8), labels, list("abcd"), ["{c}"],
                             tags={"candidates": candidates, "binding_free_features": feats})


def context_of(record) -> "object":
    import torch

    from harness.types import EmbeddedSet, EvalContext

    emb = torch.nn.functional.normalize(torch.randn(len(record.labels), 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    return EvalContext(sets=[EmbeddedSet(record, emb)], pair_modality="text", seed=0)


def test_the_binding_free_row_is_the_probe_on_the_declared_features():
    """Where colour mass decides the binding the row finds it (1.0); a set without the tag gets no row."""
    assert BINDING_FREE == "binding-free" and ROWS == (CHANCE, ORACLE, PIXELS, BINDING_FREE)
    rec = mass_decides()
    rows = harness.create_evaluation("linear_probe").reference_rows(context_of(rec))
    assert set(rows) == {CHANCE, PIXELS, BINDING_FREE}
    assert rows[BINDING_FREE] == {"composition.accuracy": pytest.approx(1.0, abs=0.02)}
    assert rows[CHANCE] == {"composition.accuracy": 0.5}
    rec.tags.pop("binding_free_features")
    assert BINDING_FREE not in harness.create_evaluation("linear_probe").reference_rows(context_of(rec))


def test_binding_free_features_are_standardised_and_constant_columns_vanish():
    from harness.builtin.evaluations.references import binding_free_features

    rec = mass_decides()
    rec.tags["binding_free_features"] = np.concatenate([rec.tags["binding_free_features"], np.full((240, 1), 7.0)], axis=1)
    feats = binding_free_features(rec)
    assert np.allclose(feats.mean(axis=0), 0) and np.allclose(feats[:, :4].std(axis=0), 1) and (feats[:, 4] == 0).all()
    rec.tags.pop("binding_free_features")
    assert binding_free_features(rec) is None


def test_the_binding_free_row_shows_the_legacy_shortcut_and_chance_on_balanced_items():
    """Shapes world, seed 0, 990 composition items. Legacy: colour and shape masses give the binding
    away (0.68 measured). Balanced: within a block the features of both bindings are the same
    multiset, so a probe on them can only learn the half of its training split that it happens to
    hold more of, which is then the smaller half of its test split: at most chance up to noise
    (0.455 measured; the binomial standard error at 495 test items is 0.022, so <= 0.52 holds with
    room)."""
    from harness.builtin.datasets.shapes import ShapesDataset

    probe = harness.create_evaluation("linear_probe")
    values = {}
    for design in ("legacy", "balanced"):
        comp = ShapesDataset(seed=0, train_size=1, eval_size=1000, composition=design)._composition()
        values[design] = probe.reference_rows(context_of(comp))[BINDING_FREE]["composition.accuracy"]
    assert values["legacy"] >= 0.62
    assert values["balanced"] <= 0.52


def test_the_binding_free_row_is_cached_under_its_own_kind(tmp_path, monkeypatch):
    import dataclasses

    import harness.builtin.evaluations.linear_probe as lp
    import harness.builtin.evaluations.reference_cache as rc

    rec = mass_decides()
    ctx = dataclasses.replace(context_of(rec), cache_dir=tmp_path)
    rc._MEMO.clear()
    first = harness.create_evaluation("linear_probe").reference_rows(ctx)
    kinds = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / rc.SUBDIR).glob("*.json"))
    assert kinds == ["binding-free-probe", "pixel-probe"]
    rc._MEMO.clear()
    monkeypatch.setattr(lp, "probe_accuracy", lambda *a, **k: pytest.fail("recomputed a probe"))
    assert harness.create_evaluation("linear_probe").reference_rows(ctx) == first
