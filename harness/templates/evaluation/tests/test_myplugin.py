"""myplugin fits the harness's evaluation contract and computes its metric."""

from harness.testing import check_evaluation, synthetic_context
from harness_myplugin import MyPlugin


def test_fits_the_contract():
    assert check_evaluation("myplugin") is None  # registered through the entry point, checked with real calls


def test_matches_a_hand_computation():
    ctx = synthetic_context()
    (retrieval,) = [s for s in ctx.sets if s.pair_emb is not None]
    x, y = retrieval.image_emb, retrieval.pair_emb[::2]  # each image's first caption
    got = MyPlugin().evaluate(ctx)["toy_retrieval"]["mean_paired_cosine"]
    assert abs(got - float((x * y).sum(1).mean())) < 1e-6
