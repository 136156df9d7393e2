"""Tuning with an equal budget: stage-1 trials on the validation split, selection from the store, final jobs."""

from __future__ import annotations

import numpy as np
import pytest

import fakes
from harness.errors import HarnessError
from harness.executors import run_grid
from harness.store import Store
from harness.suite import expand_grid, parse_suite
from harness.tuning import trial_score


def tuned_suite(**tune) -> dict:
    data = fakes.toy_suite(objectives=[{"name": "toy_dot"}, {"name": "toy_dot", "label": "untrained",
                                                              "train": {"steps": 0}}], steps=15)
    data["tune"] = {"grid": {"train.lr": [0.001, 0.03, 0.3]}, "seeds": [0], "metric": "toy_meancos.mean_cos",
                    "mode": "max", **tune}
    return data


def test_a_tuned_suite_selects_on_validation_and_runs_the_chosen_values(toy, tmp_path, capsys):
    grid = expand_grid(parse_suite(tuned_suite()))
    stage1 = grid.tuning_jobs()
    assert len(stage1) == 3 and {j.stage for j in stage1} == {"tune"} and {j.split for j in stage1} == {"validation"}
    assert [j.train["lr"] for j in stage1] == [0.001, 0.03, 0.3] and all(j.objective.display == "toy_dot" for j in stage1)
    assert len({j.id for j in stage1} | {j.id for j in grid.jobs}) == 5  # the split is part of a job's identity

    summary = run_grid(grid, out=tmp_path / "runs")
    assert len(summary.ok) == 5 and not summary.failed
    store = Store(tmp_path / "runs", "toy")
    scores = [trial_score(store.result(j.id), "toy_meancos.mean_cos")[0] for j in stage1]
    best = stage1[int(np.argmax(scores))].trial
    err = capsys.readouterr().err
    assert f"chosen for toy_dot | toy_linear | toy: train.lr={best['train.lr']}" in err
    finals = [store.result(d.name) for d in store.dir.iterdir() if not d.name.startswith(".")]
    final = [r["job"] for r in finals if r["job"]["stage"] is None and r["job"]["objective"]["label"] == "toy_dot"]
    assert len(final) == 1 and final[0]["train"]["lr"] == best["train.lr"] and final[0]["tuned"] == best
    assert final[0]["tuning"]["trials"] == 3 and final[0]["tuning"]["seeds"] == [0]
    assert final[0]["tuning"]["validation_score"] == pytest.approx(max(scores))
    untrained = [r["job"] for r in finals if r["job"]["objective"]["label"] == "untrained"]
    assert len(untrained) == 1 and untrained[0]["tuned"] is None  # a steps: 0 row is not tuned

    again = run_grid(expand_grid(parse_suite(tuned_suite())), out=tmp_path / "runs")
    assert again.ok == [] and len(again.skipped) == 5  # both stages resume from the store


class SplitSpy:
    """Records which evaluation split each job asks its dataset for."""

    seen: list[str] = []


def test_tuning_jobs_only_ever_see_the_validation_split(toy, tmp_path, monkeypatch):
    import harness_testplugins

    original = harness_testplugins.ToyDataset.eval_sets

    def spy(self, split="test"):
        SplitSpy.seen.append(split)
        return original(self, split=split)

    monkeypatch.setattr(harness_testplugins.ToyDataset, "eval_sets", spy)
    SplitSpy.seen.clear()
    grid = expand_grid(parse_suite(tuned_suite()))
    run_grid(grid, out=tmp_path / "runs")
    assert SplitSpy.seen == ["validation"] * 3 + ["test"] * 2  # selection never touches a reported set
    ds = harness_testplugins.ToyDataset()
    test_images = {im.tobytes() for s in original(ds) for im in s.images}
    assert not test_images & {im.tobytes() for s in original(ds, split="validation") for im in s.images}


@pytest.mark.parametrize("tune, message", [
    ({"objectives": {"toy_dot": {"params.temperature": [0.05, 0.1]}}, "grid": {"train.lr": [0.01]}},
     None),  # one objective tuned: trivially equal budgets
    ({"grid": {"train.rate": [0.1]}}, r"trial 0\)\.train\.rate: unknown field; expected one of: steps"),
    ({"grid": {"lr": [0.1]}}, "must be train.<field> or params.<name>"),
    ({"grid": {"train.lr": [-1.0]}}, r"tune \(objectives\[0\], trial 0\)\.train\.lr: Input should be greater than 0"),
    ({"grid": {"params.temperture": [0.1]}}, "has no parameter 'temperture' \\(did you mean 'temperature'\\?\\)"),
    ({"objectives": {"clip": {"train.lr": [0.1]}}}, r"tune\.objectives\.clip: no objective has this label"),
    ({"metric": "nope.x"}, "tune.metric: expected '<evaluation>.<key>'"),
])
def test_bad_tune_sections_are_one_line_errors(toy, tune, message):
    data = tuned_suite(**tune)
    if message is None:
        assert len(expand_grid(parse_suite(data)).tuning_jobs()) == 2
        return
    with pytest.raises(HarnessError, match=message):
        expand_grid(parse_suite(data))


def test_every_objective_gets_the_same_number_of_trials(toy):
    data = tuned_suite(objectives={"toy_dot": {"params.temperature": [0.05, 0.1]}})
    data["objectives"].append({"name": "toy_dot", "label": "other", "params": {"temperature": 0.2}})
    with pytest.raises(HarnessError, match=r"same number of trials \(equal budget\); got toy_dot: 6, other: 3"):
        expand_grid(parse_suite(data))


def test_a_dataset_without_a_validation_split_cannot_be_tuned(fake_registry):
    data = {"name": "t", "objectives": ["fake_clip"], "encoders": ["fake_tower"], "datasets": ["fake_shapes"],
            "train": {"steps": 1}, "evaluations": ["fake_gap"], "tune": {"grid": {"train.lr": [0.1, 0.2]}}}
    with pytest.raises(HarnessError, match="dataset 'fake_shapes' \\(datasets\\[0\\]\\) has no validation split"):
        expand_grid(parse_suite(data))


def test_trial_score_and_the_leaderboard_share_one_rule_checked_by_hand():
    """First declaration with a finite value wins; a '*' pattern averages its finite matches."""
    from harness.columns import first_mean

    metrics = {"retrieval": {"a": {"r1": float("nan")}},
               "zeroshot_classification": {"shape": {"top1": 0.5}, "colour": {"top1": 0.9}, "size": {"top1": None}}}
    result = {"status": "ok", "metrics": metrics,
              "main_scores": {"retrieval": {"key": "*.r1", "higher_is_better": True},  # only NaN: skipped
                              "zeroshot_classification": {"key": "*.top1", "higher_is_better": False},
                              "broken": "never read: an earlier declaration has values"}}
    assert trial_score(result, None) == (pytest.approx(0.7), False)
    assert trial_score(result, "zeroshot_classification.shape.top1") == (0.5, True)
    assert trial_score(result, "retrieval.*.r1") is None
    columns = [("retrieval.a.r1", float("nan")), ("z.shape.top1", 0.5), ("z.colour.top1", 0.9)]
    assert first_mean(columns, ["retrieval.*.r1", "z.*.top1", "z.shape.top1"]) == (1, pytest.approx(0.7))
    assert first_mean(columns, ["missing.*"]) is None


# --- hostile tuning inputs: refused by validate, before any trial is built or run ------------------


def test_a_short_grid_that_multiplies_out_huge_is_refused_before_any_trial_is_built(toy):
    import tracemalloc

    grid = {f"params.k{i}": list(range(10)) for i in range(12)}  # about 1 kB of YAML, 10**12 trials
    tracemalloc.start()
    try:
        with pytest.raises(HarnessError, match=r"tune: objective 'toy_dot' has 1,000,000,000,000 trials"):
            expand_grid(parse_suite(tuned_suite(grid=grid)))
        assert tracemalloc.get_traced_memory()[1] < 50 << 20  # peak: no trial list was built
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("tune, error", [
    ({"grid": {"train.lr": [0.01, 0.01]}}, r"grid key 'train.lr' lists 0.01 and 0.01: the same value twice"),
    ({"grid": {"train.batch_size": [16, 16.0]}}, r"lists 16 and 16.0: the same value twice"),
    ({"seeds": [0, 1, 0]}, r"tune.seeds: .*seeds lists 0 and 0: the same value twice"),
    ({"metric": "toy_meancos.mean_cso"}, r"tune.metric: evaluation 'toy_meancos' reports no metric 'mean_cso'; its metrics: mean_cos"),
    ({"metric": "nosuch.mean_cos"}, r"tune.metric: expected '<evaluation>.<key>' with one of the suite's evaluations"),
    ({"metric": "toy_meancos"}, r"tune.metric: expected '<evaluation>.<key>'"),
    ({"metric": None}, r"tune.metric: no evaluation of this suite declares a main score to select trials by"),
    ({"grid": {"train.batch_size": [32, 7]}}, None),  # fine without workers
])
def test_bad_tuning_inputs_are_refused_at_validate_naming_the_field(toy, tune, error):
    data = tuned_suite(**tune)
    if error is None:
        expand_grid(parse_suite(data))
        return
    with pytest.raises(HarnessError, match=error):
        expand_grid(parse_suite(data))


def test_booleans_and_numbers_are_different_grid_values(toy):
    from harness.tuning import _refuse_duplicates

    _refuse_duplicates([True, 1, False, 0], "x")  # True is not the number 1 for a suite
    with pytest.raises(ValueError, match="the same value twice"):
        _refuse_duplicates([True, False, True], "x")


def test_a_tuned_batch_size_that_workers_do_not_divide_is_refused(toy, monkeypatch):
    import harness.optional as optional

    monkeypatch.setattr(optional, "require_ray_train", lambda full=False: None)
    data = tuned_suite(grid={"train.batch_size": [32, 9]})
    data["resources"] = {"workers_per_job": 2, "cpus_per_job": 2}
    with pytest.raises(HarnessError, match=r"tune \(objectives\[0\], trial 1\)\.train\.batch_size 9"):
        expand_grid(parse_suite(data))
