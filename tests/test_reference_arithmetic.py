"""The vectorised arithmetic oracle gives exactly the numbers of the direct, quadratic comparison."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.builtin.evaluations.references import CHANCE, ORACLE, _hit_at, arithmetic_rows
from harness.types import ArithmeticSet, ArithmeticTriplet


def direct_rows(record) -> dict[str, dict[str, float]]:
    """The implementation the vectorised one replaced (every image against every source), kept as the oracle."""
    n = len(record.images)
    rows: dict[str, dict[str, float]] = {CHANCE: {}, ORACLE: {}}
    attributes, changed = record.tags.get("attributes"), record.tags.get("changed")
    for k in (1, 5):
        chance, oracle = [], []
        for i, t in enumerate(record.triplets):
            targets = set(t.target_ids) - {t.source}
            chance.append(_hit_at(len(targets), n - 1, k))
            if attributes and changed:
                kept = [a for a in attributes if a != changed[i]]
                candidates = [j for j in range(n) if j != t.source
                              and all(attributes[a][j] == attributes[a][t.source] for a in kept)]
                oracle.append(_hit_at(len(targets & set(candidates)), len(candidates), k))
        rows[CHANCE][f"hit{k}"] = float(np.mean(chance))
        if oracle:
            rows[ORACLE][f"hit{k}"] = float(np.mean(oracle))
    return {row: values for row, values in rows.items() if values}


def random_set(rng: np.random.Generator, n: int, n_attributes: int, values: int, as_lists: bool = False) -> ArithmeticSet:
    names = ["shape", "colour", "size", "position"][:n_attributes]
    attributes = {a: rng.integers(0, values, n) for a in names}
    if as_lists:
        attributes = {a: [f"v{x}" for x in v] for a, v in attributes.items()}
    triplets, changed = [], []
    for i in rng.choice(n, size=min(n, 3 * n // 4), replace=False).tolist():
        asked = names[rng.integers(len(names))]
        ids = rng.choice(n, size=rng.integers(0, 6), replace=True).tolist()  # duplicates and the source happen
        if rng.random() < 0.3:
            ids.append(i)
        triplets.append(ArithmeticTriplet(i, "a", "b", ids))
        changed.append(asked)
    return ArithmeticSet("arith", np.zeros((n, 2, 2, 3), np.uint8), triplets,
                        tags={"attributes": attributes, "changed": changed})


@pytest.mark.parametrize("seed", range(12))
def test_vectorised_oracle_equals_the_direct_comparison(seed):
    rng = np.random.default_rng(seed)
    record = random_set(rng, n=int(rng.integers(2, 120)), n_attributes=int(rng.integers(1, 5)),
                        values=int(rng.integers(1, 5)), as_lists=seed % 3 == 0)
    assert arithmetic_rows(record) == direct_rows(record)  # exactly: the same floats in the same order


def test_without_attributes_only_chance_and_empty_sets():
    rng = np.random.default_rng(0)
    record = random_set(rng, 30, 2, 3)
    record.tags.pop("changed")
    got = arithmetic_rows(record)
    assert set(got) == {CHANCE} and got == direct_rows(record)
    assert arithmetic_rows(ArithmeticSet("empty", np.zeros((3, 2, 2, 3), np.uint8), [])) == {}


def test_targets_outside_the_gallery_count_for_chance_only():
    shape, colour = np.array([0, 0, 1, 0, 1]), np.array([0, 1, 1, 2, 0])
    t = [ArithmeticTriplet(0, "red", "blue", [1, 7, -1])]
    rec = ArithmeticSet("a", np.zeros((5, 2, 2, 3), np.uint8), t,
                        tags={"attributes": {"shape": shape, "colour": colour}, "changed": ["colour"]})
    assert arithmetic_rows(rec) == direct_rows(rec)


def test_a_short_changed_list_is_an_error():
    rec = random_set(np.random.default_rng(1), 10, 2, 2)
    rec.tags["changed"] = rec.tags["changed"][:2]
    with pytest.raises(ValueError, match="changed"):
        arithmetic_rows(rec)


def test_linear_time_at_a_gallery_of_4000():
    """The direct comparison took 24 s here; the vectorised one well under a second."""
    record = random_set(np.random.default_rng(3), 4000, 2, 8)
    start = time.process_time()
    arithmetic_rows(record)
    assert time.process_time() - start < 2.0


def test_the_shapes_worlds_arithmetic_set():
    import harness

    record = [s for s in harness.create_dataset("shapes", train_size=8, eval_size=300).eval_sets()
              if isinstance(s, ArithmeticSet)][0]
    assert arithmetic_rows(record) == direct_rows(record)
