"""The headline rule (harness.leaderboard.qualify): each zero-shot task checked by hand."""

from __future__ import annotations

import math

import pandas as pd

from harness.leaderboard.qualify import declared_headline, rule_rows


def _rows():
    return pd.DataFrame({
        "objective": ["clip", "cua", "untrained"],
        "trained": [True, True, False],
        "zeroshot_classification.shape.top1.mean": [0.70, 0.20, 0.10],  # learned, spread 0.50
        "zeroshot_classification.colour.top1.mean": [0.99, 0.97, 0.12],  # learned, saturated (worst 0.97, spread 0.02)
        "zeroshot_classification.size.top1.mean": [0.96, 0.90, 0.50],    # worst 0.90 <= 0.95: not saturated
        "zeroshot_classification.composition.top1.mean": [0.55, 0.52, 0.50],  # best 0.55 < 0.5 + 0.2: not learned
        "zeroshot_classification.size.top5.mean": [1.0, 1.0, 1.0],  # not a top-1 column: ignored
        "retrieval.r1.mean": [0.5, 0.4, 0.0],
    })


def test_each_task_is_checked_against_the_rule_over_trained_objectives_only():
    chance = {"zeroshot_classification.shape.top1": 1 / 6, "zeroshot_classification.colour.top1": 1 / 8,
              "zeroshot_classification.size.top1": 0.5, "zeroshot_classification.composition.top1": 0.5}
    rules = {r.task: r for r in rule_rows(_rows(), chance, {"shape", "size"})}
    assert list(rules) == ["shape", "colour", "size", "composition"]
    shape, colour, size, comp = rules["shape"], rules["colour"], rules["size"], rules["composition"]
    assert (shape.best, shape.best_objective, shape.worst, shape.worst_objective) == (0.70, "clip", 0.20, "cua")
    assert math.isclose(shape.spread, 0.50) and shape.learned and shape.unsaturated and shape.qualifies and shape.headline
    assert colour.learned and not colour.unsaturated and not colour.qualifies and not colour.headline
    assert size.learned and size.unsaturated and size.qualifies  # 0.90 + ... learned: 0.96 >= 0.70
    assert not comp.learned and comp.unsaturated and not comp.qualifies
    # the untrained row (0.10 shape) is never the worst trained objective
    assert all(r.worst_objective != "untrained" for r in rules.values())


def test_the_rule_is_inclusive_at_its_thresholds_and_a_task_without_chance_is_not_learned():
    rows = pd.DataFrame({"objective": ["a", "b"], "trained": [True, True],
                         "zeroshot_classification.t.top1.mean": [0.70, 0.96],
                         "zeroshot_classification.u.top1.mean": [0.99, 0.99]})
    t, u = rule_rows(rows, {"zeroshot_classification.t.top1": 0.5}, set())
    assert t.learned and t.worst == 0.70 and t.unsaturated  # 0.96 >= 0.5 + 0.2; worst 0.70 <= 0.95
    assert not u.learned and not u.unsaturated  # no chance row: cannot say it is learned


def test_the_declared_headline_is_read_from_the_jobs_dataset_params():
    class Run:
        def __init__(self, params):
            self.job = {"dataset": {"name": "shapes", "params": params}}

    assert declared_headline([Run({"headline": ["shape", "position"]}), Run({})]) == {"shape", "position"}
    assert declared_headline([Run({"seed": 1})]) == set()
