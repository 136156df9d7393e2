"""The leaderboard's replicate statistics on small made-up tables, each against a hand computation or an
independent scipy/statsmodels call: the paired t, the seeded bootstrap and its rank intervals, tiers,
degenerate comparisons, the replicates needed, the mixed model's variance components, Friedman's test
over replicate blocks, Kendall's tau between encoders, the reference objective and untrained rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.leaderboard import build_leaderboard
from harness.leaderboard.models import friedman, kendall, mixed_model
from harness.leaderboard.resample import RESAMPLES, SEED, bootstrap, tiers
from harness.leaderboard.stats import contrasts, paired, paired_power, pairwise, replicates_needed

DECLARED = {"zeroshot_classification": {"key": "*.top1", "higher_is_better": True, "description": "zero-shot top-1"}}


def write(root: Path, job_id: str, objective: str, replicate: int, score: float, *, encoder: str = "tiny",
          dataset: str = "shapes", steps: int = 5, extra: dict | None = None) -> None:
    spec = lambda name, params=None: {"name": name, "params": params or {}, "label": name}  # noqa: E731
    record = {"id": job_id, "suite": "s", "objective": spec(objective), "encoder": spec(encoder),
              "dataset": spec(dataset, {"seed": 1000 + replicate}), "train": {"steps": steps, "lr": 1e-3},
              "seed": 7 * replicate + 1, "replicate": replicate, "evaluations": [spec("zeroshot_classification")],
              **(extra or {})}
    result = {"status": "ok", "job": record, "metrics": {"zeroshot_classification": {"s": {"top1": score}}},
              "metric_info": {}, "skipped": {}, "env": {"wall_time_s": 1.0}, "error": None, "main_scores": DECLARED}
    (root / job_id).mkdir(parents=True)
    (root / job_id / "result.json").write_text(json.dumps(result))


def build(tmp_path: Path, scores: dict[str, list[float]], **kw) -> Path:
    """One job per (objective, replicate); ``scores``: objective -> score per replicate (NaN: not run)."""
    root = tmp_path / "runs"
    n = 0
    for objective, values in scores.items():
        for r, v in enumerate(values):
            if not math.isnan(v):
                write(root, f"j{n:03d}", objective, r, v, steps=0 if objective == "untrained" else 5, **kw)
                n += 1
    return build_leaderboard(root, out=tmp_path / "lb", formats=["csv", "md"])


# --- the paired t ---------------------------------------------------------------------------------

def test_paired_t_on_known_numbers():
    a, b = [0.50, 0.60, 0.70, 0.65], [0.45, 0.58, 0.66, 0.60]
    p = paired(a, b)
    # by hand: d = .05 .02 .04 .05, mean .04, sample var (.0001 + .0004 + 0 + .0001) / 3 = .0002,
    # se = sqrt(.0002 / 4) = .0070711, t = .04 / se = 4 sqrt(2), df = 3
    se = math.sqrt(0.0002 / 4)
    assert p.n == 4 and p.diff == pytest.approx(0.04) and p.sd_diff == pytest.approx(math.sqrt(0.0002))
    assert p.p_value == pytest.approx(2 * stats.t.sf(4 * math.sqrt(2), 3)) and p.p_value == pytest.approx(0.0109377, abs=1e-6)
    half = stats.t.ppf(0.975, 3) * se
    assert (p.ci_low, p.ci_high) == pytest.approx((0.04 - half, 0.04 + half))
    assert p.p_wilcoxon == pytest.approx(0.125)  # exact: all four differences positive, 2 / 2**4
    # NaN = that replicate did not run for one side: the pair uses the other three
    q = paired([0.50, 0.60, np.nan, 0.65], b)
    assert q.n == 3 and q.p_value == pytest.approx(stats.ttest_rel([0.50, 0.60, 0.65], [0.45, 0.58, 0.60]).pvalue)


def test_degenerate_comparisons_have_no_p_and_a_reason(tmp_path):
    """1.000 against 0.999 on every replicate used to read p_holm = 0; now: no p, a note, not resolved."""
    out = build(tmp_path, {"a": [1.0, 1.0, 1.0], "b": [0.999, 0.999, 0.999], "c": [0.5, 0.6, 0.7], "d": [0.5, 0.6, 0.7]})
    pw = pd.read_csv(out / "pairwise.csv").set_index(["objective_a", "objective_b"])
    for pair, reason in ((("a", "b"), "zero variance"), (("c", "d"), "identical scores")):
        row = pw.loc[pair]
        assert math.isnan(row["p_value"]) and math.isnan(row["p_holm"]) and not row["significant"]
        assert reason in row["note"] and pd.isna(row["test"]) and math.isnan(row["ci_low"])
    assert pw.loc[("a", "b"), "diff"] == pytest.approx(0.001) and pw.loc[("a", "b"), "n"] == 3
    assert (pw["p_value"].dropna() > 0).all()  # nothing reads p = 0
    summary = pd.read_csv(out / "summary.csv").set_index("objective")
    assert summary.loc["a", "tier"] == summary.loc["b", "tier"] == 1  # an untested difference separates nothing


def _power_by_hand(dz: float, n: int, alpha: float) -> float:
    """The two-sided paired t's power from the noncentral t (df = n - 1, noncentrality d_z sqrt(n)); a
    NaN far tail (scipy) is a probability below 1e-300."""
    crit, nc = stats.t.isf(alpha / 2, n - 1), dz * math.sqrt(n)
    return float(np.nan_to_num(stats.nct.sf(crit, n - 1, nc), nan=1.0) + np.nan_to_num(stats.nct.cdf(-crit, n - 1, nc)))


def _needed_by_scanning(dz: float, alpha: float) -> int:
    n = 2
    while _power_by_hand(dz, n, alpha) < 0.8:
        n += 1
    return n


def test_detectable_difference_where_statsmodels_root_finder_is_misled():
    """n = 2 or 3 replicates at Holm's alpha / m is the leaderboard's usual regime; there statsmodels'
    solve_power can return an effect size whose power is far from 0.8. The value used must have it."""
    from harness.leaderboard.stats import min_detectable_difference

    for n in (2, 3, 4, 5, 10):
        for alpha in (0.05, 0.05 / 3, 0.05 / 8, 0.05 / 36, 0.05 / 136):
            dz = min_detectable_difference(1.0, n, alpha)
            assert _power_by_hand(dz, n, alpha) == pytest.approx(0.8, abs=1e-5)


def test_replicates_needed_reaches_the_power_and_one_fewer_does_not():
    from statsmodels.stats.power import TTestPower

    for diff, sd, alpha in ((0.01, 0.02, 0.05), (0.003, 0.01, 0.05 / 6), (0.03, 0.01, 0.05 / 30)):
        n = replicates_needed(diff, sd, alpha)
        assert paired_power(diff / sd, n, alpha) >= 0.8
        assert n == 2 or paired_power(diff / sd, n - 1, alpha) < 0.8
        assert n == _needed_by_scanning(diff / sd, alpha)
    assert replicates_needed(0.5, 0.01) == 2  # d_z = 50: statsmodels' power is NaN there (scipy's far tail); it is 1
    # the power by the noncentral t written out (df = n - 1, noncentrality d_z sqrt(n)), where scipy is finite
    n, dz = 7, 0.9
    crit = stats.t.isf(0.025, n - 1)
    assert paired_power(dz, n) == pytest.approx(stats.nct.sf(crit, n - 1, dz * math.sqrt(n)) + stats.nct.cdf(-crit, n - 1, dz * math.sqrt(n)))
    assert replicates_needed(0.0, 0.01) is None and replicates_needed(0.01, 0.0) is None
    matrix = pd.DataFrame({"a": [0.50, 0.52, 0.49, 0.53], "b": [0.49, 0.52, 0.50, 0.51]})
    row = pairwise("d", "e", ["a", "b"], matrix).iloc[0]
    assert not row["significant"] and row["n_needed"] == replicates_needed(row["diff"], row["sd_diff"], 0.05)


# --- bootstrap, rank intervals, tiers -------------------------------------------------------------------

def test_bootstrap_ci_contains_the_mean_and_reproduces_with_its_seed():
    rng = np.random.default_rng(0)
    matrix = pd.DataFrame({"a": 0.6 + rng.normal(0, 0.05, 8), "b": 0.5 + rng.normal(0, 0.05, 8)})
    one, two = bootstrap(matrix, True), bootstrap(matrix, True)
    pd.testing.assert_frame_equal(one, two)  # a page rebuilt from the same runs shows the same numbers
    assert not one.equals(bootstrap(matrix, True, seed=SEED + 1))
    for o in matrix.columns:
        assert one.loc[o, "ci_low"] < matrix[o].mean() < one.loc[o, "ci_high"]
        assert one.loc[o, "mean"] == pytest.approx(matrix[o].mean())
    # the same percentile bootstrap written out: resample rows (whole replicates), 2.5 / 97.5 percentiles
    idx = np.random.default_rng(SEED).integers(0, 8, size=(RESAMPLES, 8))
    means = matrix.to_numpy()[idx].mean(axis=1)
    np.testing.assert_allclose(one["ci_low"], np.percentile(means, 2.5, axis=0))
    np.testing.assert_allclose(one["ci_high"], np.percentile(means, 97.5, axis=0))


def test_rank_intervals_on_a_clearly_separated_example():
    rng = np.random.default_rng(1)
    matrix = pd.DataFrame({"low": rng.normal(0, 0.1, 6), "high": rng.normal(10, 0.1, 6), "mid": rng.normal(5, 0.1, 6)})
    up = bootstrap(matrix, higher_is_better=True)
    assert up[["rank_low", "rank_high"]].to_dict("index") == {
        "low": {"rank_low": 3, "rank_high": 3}, "high": {"rank_low": 1, "rank_high": 1}, "mid": {"rank_low": 2, "rank_high": 2}}
    down = bootstrap(matrix, higher_is_better=False)
    assert (down.loc["low", "rank_low"], down.loc["high", "rank_high"]) == (1, 3)
    # two objectives that trade places from world to world: both ranks occur
    close = pd.DataFrame({"x": [1.0, 2.0, 1.0, 2.0, 1.0, 2.0], "y": [2.0, 1.0, 2.0, 1.0, 2.0, 1.0]})
    got = bootstrap(close, True)
    assert (got.loc["x", "rank_low"], got.loc["x", "rank_high"]) == (1, 2)


def _pairs(significant: dict[tuple[str, str], float], order: list[str]) -> pd.DataFrame:
    """A made-up pairwise table: (a, b) -> diff a - b for the resolved pairs; every other pair unresolved."""
    rows = []
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            diff = significant.get((a, b))
            rows.append({"objective_a": a, "objective_b": b, "diff": 0.01 if diff is None else diff, "significant": diff is not None})
    return pd.DataFrame(rows)


def test_tiers_on_a_constructed_example():
    order = ["a", "b", "c", "d", "e"]
    # a resolved above c, d, e; b above d only; c above e; b vs c and a vs b not resolved
    resolved = {("a", "c"): 0.1, ("a", "d"): 0.2, ("a", "e"): 0.3, ("b", "d"): 0.1, ("c", "e"): 0.1}
    assert tiers(order, _pairs(resolved, order)) == {"a": 1, "b": 1, "c": 2, "d": 2, "e": 3}
    # a resolved from everything: tier 1 alone; b leads tier 2 and resolves only d, so e (lower mean than d)
    # is in tier 2 and d in tier 3: a tier says "not resolved from its leader", not an order of the means
    assert tiers(order, _pairs({**resolved, ("a", "b"): 0.1}, order)) == {"a": 1, "b": 2, "c": 2, "d": 3, "e": 2}
    # a resolved difference pointing against the leader (the paired and unpaired means disagree) is not "worse"
    assert tiers(["a", "b"], _pairs({("a", "b"): -0.1}, ["a", "b"])) == {"a": 1, "b": 1}
    # lower is better: a negative a - b is a win for a
    assert tiers(["a", "b"], _pairs({("a", "b"): -0.1}, ["a", "b"]), higher_is_better=False) == {"a": 1, "b": 2}
    assert tiers(order, _pairs({}, order)) == dict.fromkeys(order, 1)


def test_tiers_and_intervals_through_the_pipeline(tmp_path):
    rng = np.random.default_rng(2)
    world = rng.normal(0, 0.05, 8)  # the world draw moves every objective together
    scores = {o: list(base + world + rng.normal(0, 0.003, 8)) for o, base in (("a", 0.8), ("b", 0.799), ("c", 0.6), ("clip", 0.4))}
    out = build(tmp_path, scores)
    summary = pd.read_csv(out / "summary.csv").set_index("objective")
    assert summary["tier"].to_dict() == {"a": 1, "b": 1, "c": 2, "clip": 3}
    assert summary.loc["c", ["rank_low", "rank_high"]].tolist() == [3, 3]
    tables = pd.read_csv(out / "tables.csv").iloc[0]
    assert tables["tier1"] == "a; b" and tables["replicates"] == 8
    results = pd.read_csv(out / "results.csv")
    assert (results["replicate"] == (results["seed"] - 1) / 7).all() and (results["dataset_seed"] == 1000 + results["replicate"]).all()
    readme = (out / "README.md").read_text()
    assert "Tiers (tier 1: a, b; tier 2: c; tier 3: clip)." in readme
    # unpaired, the world noise (SD 0.05) would hide the 0.2 gaps; paired by replicate they are resolved
    pw = pd.read_csv(out / "pairwise.csv").set_index(["objective_a", "objective_b"])
    assert pw.loc[("a", "c"), "significant"] and not pw.loc[("a", "b"), "significant"]
    assert stats.ttest_ind(scores["b"], scores["c"]).pvalue > pw.loc[("b", "c"), "p_value"]


# --- the reference objective and untrained rows -------------------------------------------------------

def test_reference_from_the_job_record_and_untrained_rows_kept_out_of_the_trained_families(tmp_path):
    rng = np.random.default_rng(3)
    scores = {o: list(base + rng.normal(0, 0.01, 5)) for o, base in (("clip", 0.7), ("siglip", 0.72), ("cua", 0.5), ("untrained", 0.1))}
    out = build(tmp_path, scores, extra={"reference": "siglip"})
    con = pd.read_csv(out / "contrasts.csv")
    assert set(con["reference"]) == {"siglip"} and set(con["objective"]) == {"clip", "cua"}
    assert con["p_holm"].tolist() == pytest.approx(
        list(np.minimum(1, np.maximum.accumulate(np.sort(con["p_value"]) * [2, 1]))[np.argsort(np.argsort(con["p_value"]))]))
    summary = pd.read_csv(out / "summary.csv").set_index("objective")
    assert not summary.loc["untrained", "trained"] and summary.loc["untrained", "vs_reference"] == "untrained: not compared"
    assert math.isnan(summary.loc["untrained", "mean_rank"]) and summary.loc["untrained", "tier"] == 3
    pw = pd.read_csv(out / "pairwise.csv")
    assert len(pw) == 6  # every pair, the untrained row included
    tables = pd.read_csv(out / "tables.csv").iloc[0]
    assert tables["reference_objective"] == "siglip" and tables["reference_source"] == "suite" and tables["trained_objectives"] == 3
    assert "untrained" not in tables["friedman_blocks"] and tables["contrasts_tested"] == 2
    # a suite reference that is not a trained objective here: the default (clip) and a note
    out2 = build(tmp_path / "two", scores, extra={"reference": "untrained"})
    t2 = pd.read_csv(out2 / "tables.csv").iloc[0]
    assert t2["reference_objective"] == "clip" and t2["reference_source"] == "default" and "untrained" in t2["reference_note"]


# --- the mixed model, Friedman, Kendall -------------------------------------------------------------

def _anova_components(x: np.ndarray) -> tuple[float, float]:
    """Method-of-moments variance components of a balanced two-way layout (rows = worlds, columns =
    objectives, no interaction): residual = MSE, world = (MS_world - MSE) / k. REML equals them when
    the world component is positive."""
    n, k = x.shape
    grand = x.mean()
    ss_world = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_obj = n * ((x.mean(axis=0) - grand) ** 2).sum()
    sse = ((x - grand) ** 2).sum() - ss_world - ss_obj
    mse = sse / ((n - 1) * (k - 1))
    return (ss_world / (n - 1) - mse) / k, mse


def test_mixed_model_variance_components_on_a_known_world_effect():
    rng = np.random.default_rng(4)
    n = 200
    world = rng.normal(0, 0.3, n)  # true between-world variance 0.09, residual 0.01
    matrix = pd.DataFrame({o: base + world + rng.normal(0, 0.1, n) for o, base in (("clip", 0.5), ("b<'\"", 0.6), ("c", 0.4))})
    fit = mixed_model(matrix, reference="clip")
    world_var, resid_var = _anova_components(matrix.to_numpy())
    assert fit.world_var == pytest.approx(world_var, rel=1e-3) and fit.resid_var == pytest.approx(resid_var, rel=1e-3)
    assert fit.world_var == pytest.approx(0.09, rel=0.25) and fit.resid_var == pytest.approx(0.01, rel=0.15)
    assert fit.n_worlds == n and fit.n_obs == 3 * n and fit.note == ""
    few = mixed_model(matrix.iloc[:2])
    assert math.isnan(few.world_var) and "needs at least 3" in few.note
    flat = mixed_model(pd.DataFrame({o: rng.normal(base, 0.1, 40) for o, base in (("a", 0.5), ("b", 0.6))}) - 0)
    assert flat.world_var < 0.003  # no world effect: near or at the boundary


def test_mixed_model_in_tables_csv(tmp_path):
    rng = np.random.default_rng(5)
    world = rng.normal(0, 0.2, 6)
    out = build(tmp_path, {o: list(base + world + rng.normal(0, 0.02, 6)) for o, base in (("clip", 0.5), ("b", 0.6), ("c", 0.55))})
    t = pd.read_csv(out / "tables.csv").iloc[0]
    matrix = pd.read_csv(out / "results.csv").pivot(index="replicate", columns="objective", values="main_score")
    world_var, resid_var = _anova_components(matrix.to_numpy())
    assert t["mixedlm_world_var"] == pytest.approx(world_var, rel=1e-3) and t["mixedlm_resid_var"] == pytest.approx(resid_var, rel=1e-3)
    out2 = build(tmp_path / "two", {"clip": [0.5, 0.6], "b": [0.55, 0.62]})
    t2 = pd.read_csv(out2 / "tables.csv").iloc[0]
    assert math.isnan(t2["mixedlm_world_var"]) and t2["mixedlm_note"].startswith("not fitted: 2 replicates")


def test_friedman_over_replicate_blocks_against_scipy():
    rng = np.random.default_rng(6)
    values = pd.DataFrame({o: base + rng.normal(0, 0.05, 7) for o, base in (("a", 0.5), ("b", 0.55), ("c", 0.6), ("d", 0.52))})
    fr = friedman(values)
    res = stats.friedmanchisquare(*[values[c] for c in values.columns])
    assert fr.statistic == pytest.approx(res.statistic) and fr.p_value == pytest.approx(res.pvalue) and len(fr.blocks) == 7
    ranks = np.vstack([stats.rankdata(-row) for row in values.to_numpy()])
    np.testing.assert_allclose(fr.mean_ranks[list(values.columns)], ranks.mean(axis=0))
    gappy = values.copy()
    gappy.iloc[0, 1] = np.nan
    gappy["one"] = [0.9] + [np.nan] * 6  # a score on one block only: left out, not the six other blocks
    fr2 = friedman(gappy)
    assert fr2.dropped_objectives == ["one"] and fr2.dropped_blocks == ["0"] and len(fr2.blocks) == 6


def test_kendall_tau_by_hand_and_between_encoders(tmp_path):
    a = pd.Series({"p": 0.9, "q": 0.8, "r": 0.7, "s": 0.6})
    b = pd.Series({"p": 0.5, "q": 0.7, "r": 0.4, "s": 0.3, "extra": 0.1})
    k = kendall("d", "e1", a, "e2", b)
    # by hand on p, q, r, s: pairs (p,q) discordant, the other five concordant: tau = (5 - 1) / 6
    assert k.objectives == ["p", "q", "r", "s"] and k.tau == pytest.approx(4 / 6)
    assert k.p_value == pytest.approx(stats.kendalltau([0.9, 0.8, 0.7, 0.6], [0.5, 0.7, 0.4, 0.3]).pvalue)
    assert "at least 3" in kendall("d", "e1", a[:2], "e2", b).note
    scores = {"clip": [0.5, 0.52, 0.51], "b": [0.6, 0.61, 0.62], "c": [0.4, 0.42, 0.41], "untrained": [0.1, 0.1, 0.12]}
    root = tmp_path / "runs"
    n = 0
    for encoder, flip in (("e1", False), ("e2", True)):
        for o, values in scores.items():
            for r, v in enumerate(values):
                write(root, f"j{n:03d}", o, r, (1 - v) if flip and o != "untrained" else v, encoder=encoder,
                      steps=0 if o == "untrained" else 5)
                n += 1
    out = build_leaderboard(root, out=tmp_path / "lb", formats=["csv", "md"])
    tables = pd.read_csv(out / "tables.csv").set_index("encoder")
    assert tables.loc["e1", "kendall_vs"] == "e2" and tables.loc["e2", "kendall_vs"] == "e1"
    assert tables.loc["e1", "kendall_tau"] == pytest.approx(-1.0) and tables.loc["e1", "kendall_n"] == 3  # trained only
    across = pd.read_csv(out / "across.csv")
    assert across["test"].tolist() == ["friedman", "kendall_tau"]
    assert across.loc[0, "blocks"] == 6  # 2 encoders x 3 replicates
    readme = (out / "README.md").read_text()
    assert "## Across tables" in readme and "τ = -1.00" in readme


def test_contrasts_have_their_own_family():
    matrix = pd.DataFrame({"ref": [0.5, 0.6, 0.55, 0.58], "x": [0.52, 0.63, 0.56, 0.6], "y": [0.4, 0.5, 0.47, 0.46]})
    con = contrasts("d", "e", "ref", ["x", "y"], matrix).set_index("objective")
    p = [stats.ttest_rel(matrix[o], matrix["ref"]).pvalue for o in ("x", "y")]
    lo, hi = sorted(p)
    holm = {lo: min(1, 2 * lo), hi: max(min(1, 2 * lo), hi)}  # Holm by hand, m = 2
    assert con["p_holm"].tolist() == pytest.approx([holm[p[0]], holm[p[1]]])
