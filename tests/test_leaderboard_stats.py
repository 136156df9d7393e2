"""The leaderboard's statistics and result fields, each checked against an independent computation:
pairwise.csv and contrasts.csv recomputed from results.csv (the paired t by hand, Holm by hand), the
main-score rules, reference rows, the tuning stage, the detectable difference of the paired t,
Friedman's test over replicate blocks, the index page, and hostile result files. The statistics on
small made-up tables (bootstrap, rank intervals, tiers, degenerate pairs, the mixed model, Kendall's
tau) are in test_leaderboard_models.py."""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.cli import main as cli_main
from harness.errors import HarnessError
from harness.leaderboard import build_index, build_leaderboard
from harness.leaderboard.stats import holm, min_detectable_difference

TOP1 = {"key": "*.top1", "higher_is_better": True, "description": "zero-shot top-1 (mean over sets)"}
R1 = {"key": "*.image_to_text_r1", "higher_is_better": True, "description": "image→text R@1 (mean over sets)"}
PROBE = {"key": "*.accuracy", "higher_is_better": True, "description": "linear-probe accuracy (mean over sets)"}
DECLARED = {"zeroshot_classification": TOP1, "retrieval": R1, "linear_probe": PROBE}
MEAN_TOP1 = {"zeroshot_classification": {"key": "mean_top1", "higher_is_better": True, "description": "zero-shot top-1, mean over attribute tasks"},
             "retrieval": R1, "linear_probe": PROBE}


def job(root: Path, job_id: str, objective: str, seed: int, metrics: dict, *, dataset: str = "shapes", encoder: str = "tiny",
        status: str = "ok", main_scores: dict | None = DECLARED, job_extra: dict | None = None, extra: dict | None = None,
        suite: str = "s") -> Path:
    spec = lambda name: {"name": name, "params": {}, "label": name}  # noqa: E731
    record = {"id": job_id, "suite": suite, "objective": spec(objective), "encoder": spec(encoder), "dataset": spec(dataset),
              "train": {"steps": 5, "lr": 5e-4}, "seed": seed,
              "evaluations": [spec(n) for n in ("gap", "zeroshot_classification", "retrieval", "linear_probe")],
              **(job_extra or {})}
    result = {"status": status, "job": record, "metrics": metrics if status == "ok" else {}, "metric_info": {}, "skipped": {},
              "env": {"wall_time_s": 1.0}, "error": None if status == "ok" else "RuntimeError: boom",
              **({"main_scores": main_scores} if main_scores is not None else {}), **(extra or {})}
    d = root / job_id
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(result))
    return d


def downstream(shape: float, colour: float, r1: float, probe: float, cd: float = 0.5) -> dict:
    return {"gap": {"centroid_distance": cd},
            "zeroshot_classification": {"shape": {"top1": shape}, "colour": {"top1": colour}},
            "retrieval": {"retrieval": {"image_to_text_r1": r1}},
            "linear_probe": {"shape": {"accuracy": probe}, "colour": {"accuracy": probe + 0.1}}}


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm's step-down adjustment written out: sort ascending, multiply the i-th smallest (0-based) by
    (m - i), make monotone with a running maximum, cap at 1, put back in the original order."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


# --- Holm and the detectable difference against hand computations -------------------------------

def test_holm_matches_a_hand_computation_on_a_tiny_example():
    p = [0.01, 0.04, 0.03, 0.2]
    # by hand: sorted 0.01, 0.03, 0.04, 0.2 -> x4, x3, x2, x1 = 0.04, 0.09, 0.08 -> 0.09 (running max), 0.2
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm(p) == pytest.approx(holm_by_hand(p))
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_detectable_difference_has_power_080_by_the_noncentral_t():
    """The paired t on n replicates: one-sample t on the differences, df = n - 1, noncentrality d_z sqrt(n)."""
    n, sd = 3, 0.02
    mdd = min_detectable_difference(sd, n)
    df, nc = n - 1, (mdd / sd) * math.sqrt(n)
    crit = stats.t.ppf(0.975, df)
    power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.8, abs=1e-4)
    assert min_detectable_difference(sd, n, alpha=0.05 / 10) > mdd  # a stricter alpha needs a larger difference


def paired_by_hand(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """(mean difference, p, CI low, CI high) of the paired t written out: t = mean(d) / (sd(d) / sqrt(n)), df = n - 1."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    se = d.std(ddof=1) / math.sqrt(n)
    t = d.mean() / se
    half = stats.t.ppf(0.975, n - 1) * se
    return d.mean(), 2 * stats.t.sf(abs(t), n - 1), d.mean() - half, d.mean() + half


# --- pairwise.csv, recomputed independently from results.csv --------------------------------------

@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs") / "s"
    rng = np.random.default_rng(3)
    n = 0
    for dataset, base in (("shapes", 0.5), ("digits", 0.8)):
        for k, objective in enumerate(["clip", "cua", "siglip", "dcl", "one_seed", "all_failed"]):
            seeds = {"one_seed": 1}.get(objective, 3)
            for seed in range(seeds):
                status = "failed" if objective == "all_failed" or (objective == "cua" and seed == 2 and dataset == "shapes") else "ok"
                shape, colour = base - 0.03 * k + rng.normal(0, 0.02), base - 0.02 * k + rng.normal(0, 0.02)
                job(root, f"j{n:03d}", objective, seed, downstream(shape, colour, 0.3 - 0.01 * k + rng.normal(0, 0.01),
                                                                     0.6 - 0.02 * k + rng.normal(0, 0.01)),
                    dataset=dataset, status=status,
                    extra={"reference_rows": {"chance": {"zeroshot_classification.shape.top1": 1 / 6,
                                                         "zeroshot_classification.colour.top1": 1 / 8,
                                                         "linear_probe.shape.accuracy": 1 / 6},
                                              "raw pixels": {"linear_probe.shape.accuracy": 0.22 + 0.01 * seed}}})
                n += 1
    # a failed job that still left a main-score metric behind: never enters
    job(root, "jpartial", "clip", 9, downstream(0.99, 0.99, 0.99, 0.99), status="failed")
    return build_leaderboard(root, out=tmp_path_factory.mktemp("board") / "s")


def _by_replicate(table: pd.DataFrame) -> dict[str, pd.Series]:
    usable = table[(table["status"] == "ok") & table["main_score"].notna()]
    return {o: usable[usable["objective"] == o].set_index("replicate")["main_score"] for o in table["objective"].unique()}


def test_pairwise_csv_agrees_with_an_independent_recomputation(board):
    results = pd.read_csv(board / "results.csv")
    pairwise = pd.read_csv(board / "pairwise.csv")
    assert list(pairwise.columns[:14]) == ["dataset", "encoder", "objective_a", "objective_b", "n", "mean_a", "mean_b", "diff",
                                           "ci_low", "ci_high", "test", "p_value", "p_holm", "significant"]
    assert list(pairwise.columns[14:]) == ["p_wilcoxon", "note", "sd_diff", "n_needed"]
    assert (results["replicate"] == results["seed"]).all()  # old runs: the seed stands for the replicate
    checked = 0
    for (dataset, encoder), table in results.groupby(["dataset", "encoder"]):
        scores = _by_replicate(table)
        pairs = list(combinations(sorted(scores), 2))
        joined = {pair: pd.concat([scores[pair[0]], scores[pair[1]]], axis=1, join="inner").to_numpy() for pair in pairs}
        hand = {pair: paired_by_hand(j[:, 0], j[:, 1]) for pair, j in joined.items() if len(j) >= 2}
        adjusted = dict(zip(hand, holm_by_hand([h[1] for h in hand.values()])))
        mine = pairwise[(pairwise["dataset"] == dataset) & (pairwise["encoder"] == encoder)]
        assert len(mine) == len(pairs) == 15  # every unordered pair of the six objectives, once
        for row in mine.itertuples(index=False):
            pair = (row.objective_a, row.objective_b)
            j = joined[tuple(sorted(pair))] if tuple(sorted(pair)) in joined else None
            if pair != tuple(sorted(pair)):
                j = j[:, ::-1]
            assert row.n == len(j)  # the replicates both ran
            if len(j):
                assert (row.mean_a, row.mean_b) == pytest.approx((j[:, 0].mean(), j[:, 1].mean()), abs=1e-12)
                assert row.diff == pytest.approx((j[:, 0] - j[:, 1]).mean(), abs=1e-12)
            if tuple(sorted(pair)) in hand:
                diff, p, lo, hi = hand[tuple(sorted(pair))]
                sign = 1 if pair == tuple(sorted(pair)) else -1
                assert row.test == "paired t"
                assert row.p_value == pytest.approx(p, abs=1e-9)
                assert row.p_value == pytest.approx(stats.ttest_rel(j[:, 0], j[:, 1]).pvalue, abs=1e-12)
                assert (row.ci_low, row.ci_high) == pytest.approx(sorted((sign * lo, sign * hi)), abs=1e-9)
                assert row.p_holm == pytest.approx(adjusted[tuple(sorted(pair))], abs=1e-9)
                assert row.significant == (adjusted[tuple(sorted(pair))] < 0.05)
                assert row.p_wilcoxon == pytest.approx(stats.wilcoxon(j[:, 0] - j[:, 1]).pvalue)
                checked += 1
            else:  # fewer than two replicates both ran: no test, not in the Holm family, and the note says why
                assert math.isnan(row.p_value) and math.isnan(row.p_holm) and not row.significant
                assert isinstance(row.note, str) and "replicate" in row.note
    assert checked == 2 * 6  # clip, cua, siglip, dcl: 6 tested pairs per table


def test_contrasts_against_the_reference_are_holm_corrected_among_themselves(board):
    results = pd.read_csv(board / "results.csv")
    contrasts = pd.read_csv(board / "contrasts.csv")
    summary = pd.read_csv(board / "summary.csv")
    for dataset, table in results.groupby("dataset"):
        scores = _by_replicate(table)
        mine = contrasts[contrasts["dataset"] == dataset].set_index("objective")
        assert (mine["reference"] == "clip").all()  # no suite reference in these runs: the default
        assert set(mine.index) == {"cua", "siglip", "dcl", "one_seed"}  # trained, with a score, not clip itself
        tested = {}
        for o in mine.index:
            j = pd.concat([scores[o], scores["clip"]], axis=1, join="inner").to_numpy()
            if len(j) >= 2:
                tested[o] = paired_by_hand(j[:, 0], j[:, 1])
        adjusted = dict(zip(tested, holm_by_hand([t[1] for t in tested.values()])))  # a family of 3, not 15
        for o, (diff, p, lo, hi) in tested.items():
            assert mine.loc[o, "diff"] == pytest.approx(diff) and mine.loc[o, "p_value"] == pytest.approx(p)
            assert mine.loc[o, "p_holm"] == pytest.approx(adjusted[o])
            row = summary[(summary["dataset"] == dataset) & (summary["objective"] == o)].iloc[0]
            assert row["p_holm_vs_reference"] == pytest.approx(adjusted[o])
        assert math.isnan(mine.loc["one_seed", "p_value"]) and "only 1 replicate" in mine.loc["one_seed", "note"]
        ref = summary[(summary["dataset"] == dataset) & (summary["objective"] == "clip")].iloc[0]
        assert ref["vs_reference"] == "reference"


def test_pairs_are_in_rank_order_best_first(board):
    summary = pd.read_csv(board / "summary.csv")
    pairwise = pd.read_csv(board / "pairwise.csv")
    for dataset in ("shapes", "digits"):
        ranked = summary[summary["dataset"] == dataset].sort_values("rank", na_position="last")["objective"].tolist()
        expected = [(a, b) for a, b in combinations(ranked, 2)]
        got = list(pairwise.loc[pairwise["dataset"] == dataset, ["objective_a", "objective_b"]].itertuples(index=False, name=None))
        assert got == expected
    assert ranked[-1] == "all_failed"  # no score: last, unranked
    assert math.isnan(summary.set_index(["dataset", "objective"]).loc[("digits", "all_failed"), "rank"])


def test_results_csv_main_score_is_the_declared_mean_and_nan_for_failed_jobs(board):
    results = pd.read_csv(board / "results.csv")
    assert list(results.columns[:9]) == ["objective", "encoder", "dataset", "seed", "replicate", "dataset_seed", "status", "train.lr", "main_score"]
    ok = results["status"] == "ok"
    expected = results.loc[ok, ["zeroshot_classification.shape.top1", "zeroshot_classification.colour.top1"]].mean(axis=1)
    np.testing.assert_allclose(results.loc[ok, "main_score"], expected, rtol=0, atol=1e-15)
    assert results.loc[~ok, "main_score"].isna().all()
    assert (results["train.lr"] == 5e-4).all()
    assert "chance" not in set(results["objective"]) and "raw pixels" not in set(results["objective"])


def test_summary_has_intervals_and_tiers_consistent_with_pairwise(board):
    summary = pd.read_csv(board / "summary.csv")
    pairwise = pd.read_csv(board / "pairwise.csv")
    for c in ("ci_low", "ci_high", "rank_low", "rank_high", "tier"):
        assert c in summary.columns
    scored = summary[summary["main_score.mean"].notna()]
    several = scored[scored["replicates"] >= 2]
    assert (several["ci_low"] <= several["main_score.mean"] + 1e-12).all() and (several["main_score.mean"] <= several["ci_high"] + 1e-12).all()
    assert scored.loc[scored["replicates"] < 2, "ci_low"].isna().all()  # one replicate: no interval
    assert (scored["rank_low"] <= scored["rank_high"]).all()
    for dataset, rows in scored.groupby("dataset"):
        rows = rows.sort_values("rank")
        leader = rows.iloc[0]["objective"]
        pw = pairwise[pairwise["dataset"] == dataset]
        assert rows.iloc[0]["tier"] == 1
        for row in rows.iloc[1:].itertuples(index=False):
            hit = pw[((pw["objective_a"] == leader) & (pw["objective_b"] == row.objective))]
            assert (row.tier == 1) == (not hit["significant"].iloc[0])  # tier 1: not resolved from the best mean


def test_tables_csv_states_the_detectable_difference_and_friedman(board):
    tables = pd.read_csv(board / "tables.csv").set_index("dataset")
    results = pd.read_csv(board / "results.csv")
    contrasts = pd.read_csv(board / "contrasts.csv")
    summary = pd.read_csv(board / "summary.csv")
    row = tables.loc["shapes"]
    assert row["main_score"] == "zeroshot_classification.*.top1" and row["main_score_source"] == "declared"
    # the SD of the paired differences of the contrasts, pooled; n = the smallest paired n (cua lost replicate 2: 2)
    scores = _by_replicate(results[results["dataset"] == "shapes"])
    diffs = []
    for o in ("cua", "siglip", "dcl"):
        j = pd.concat([scores[o], scores["clip"]], axis=1, join="inner").to_numpy()
        diffs.append(j[:, 0] - j[:, 1])
    pooled = math.sqrt(sum((len(d) - 1) * d.var(ddof=1) for d in diffs) / sum(len(d) - 1 for d in diffs))
    assert row["sd_diff"] == pytest.approx(pooled) and row["detectable_n"] == 2
    assert row["min_detectable_diff"] == pytest.approx(min_detectable_difference(pooled, 2))
    assert row["contrasts_tested"] == 3 and row["pairs_tested"] == 6 and row["reference_objective"] == "clip"
    assert row["min_detectable_diff_holm"] == pytest.approx(min_detectable_difference(pooled, 2, alpha=0.05 / 3))
    mine = contrasts[contrasts["dataset"] == "shapes"].set_index("objective")
    for o, d in zip(("cua", "siglip", "dcl"), diffs):  # each contrast's own detectable difference, for its own SD and n
        assert mine.loc[o, "min_detectable_diff"] == pytest.approx(min_detectable_difference(d.std(ddof=1), len(d)))
    # Friedman: the blocks are the replicates where every trained objective with >= 2 replicates has a score
    # (one_seed has one: left out; cua lost replicate 2: blocks 0 and 1); statistic by the textbook formula
    assert row["friedman_blocks"].split() == ["0", "1"]
    objs = ["clip", "cua", "siglip", "dcl"]
    means = np.array([[scores[o][r] for o in objs] for r in (0, 1)])
    ranks = np.vstack([stats.rankdata(-r) for r in means])
    N, k = ranks.shape
    chi2 = 12 * N / (k * (k + 1)) * (np.sum(ranks.mean(axis=0) ** 2) - k * (k + 1) ** 2 / 4)
    assert row["friedman_statistic"] == pytest.approx(chi2)
    assert row["friedman_p"] == pytest.approx(stats.chi2.sf(chi2, k - 1))
    assert row["nemenyi_cd"] == pytest.approx(2.569 * math.sqrt(k * (k + 1) / (6 * N)), rel=1e-3)  # Demsar's q_0.05, k = 4
    ranked = summary[(summary["dataset"] == "shapes")].set_index("objective")
    np.testing.assert_allclose(ranked.loc[objs, "mean_rank"].to_numpy(), ranks.mean(axis=0))
    assert math.isnan(ranked.loc["one_seed", "mean_rank"])


def test_reference_rows_are_shown_marked_and_never_ranked(board):
    summary = pd.read_csv(board / "summary.csv")
    pairwise = pd.read_csv(board / "pairwise.csv")
    refs = pd.read_csv(board / "references.csv")
    assert list(refs.columns) == ["dataset", "encoder", "reference", "metric", "mean", "std", "n"]
    for name in ("chance", "raw pixels"):
        assert name not in set(summary["objective"])
        assert name not in set(pairwise["objective_a"]) | set(pairwise["objective_b"])
    raw = refs[(refs["dataset"] == "shapes") & (refs["reference"] == "raw pixels")].set_index("metric")
    ok_seeds = pd.read_csv(board / "results.csv").query("dataset == 'shapes' and status == 'ok'")["seed"]
    assert raw.loc["linear_probe.shape.accuracy", "mean"] == pytest.approx((0.22 + 0.01 * ok_seeds).mean())  # over ok jobs
    assert raw.loc["linear_probe.shape.accuracy", "n"] == len(ok_seeds)
    chance = refs[(refs["dataset"] == "shapes") & (refs["reference"] == "chance")].set_index("metric")
    assert chance.loc["main_score", "mean"] == pytest.approx((1 / 6 + 1 / 8) / 2)  # has every main-score column
    assert "main_score" not in set(raw.index)  # no zero-shot columns: no main score
    tables = pd.read_csv(board / "tables.csv")
    assert all("chance" not in str(t) for t in tables["tier1"])
    readme = (board / "README.md").read_text()
    main = readme.split("### Main score\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert main[-1].startswith("| _chance (reference)_") and "| reference " in main[-1]
    assert "raw pixels (reference)" not in "\n".join(main)
    probe = readme.split("### Downstream: linear_probe\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split("|")[1].strip() for line in probe[-2:]] == ["_chance (reference)_", "_raw pixels (reference)_"]


def test_page_leads_with_the_main_score_table_and_figures(board):
    readme = (board / "README.md").read_text()
    heads = [line for line in readme.splitlines() if line.startswith("## ") or line.startswith("### ")]
    assert heads[:6] == ["## digits · tiny", "### Main score", "## shapes · tiny", "### Main score",
                         "### Critical-difference diagram", "### Gap vs main score"]
    assert readme.index("![Critical-difference diagram](cd_diagram.png)") < readme.index("## Provenance")
    assert "Smallest difference these replicates resolve (paired t, df = n − 1" in readme and "Friedman χ² =" in readme
    main = readme.split("### Main score\n\n", 1)[1].split("\n\n", 1)[0]
    assert [c.strip() for c in main.splitlines()[0].split("|")[1:6]] == [
        "objective", "main score ↑ (mean)", "95% CI (bootstrap)", "rank interval (95%)", "tier"]
    for word in ("top", "best objective", "winner"):  # nothing ranks what the tests do not resolve
        assert f" {word} " not in readme.split("## How to read this page")[0].lower()
    assert "Tiers (tier 1: " in readme


# --- the main-score rules -----------------------------------------------------------------------------

def _summary(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "summary.csv").set_index("objective")


def test_explicit_suite_choice_wins_over_declarations(tmp_path):
    root = tmp_path / "runs"
    for i, (o, shape, colour) in enumerate([("a", 0.9, 0.1), ("a", 0.8, 0.2), ("b", 0.3, 0.9), ("b", 0.4, 0.8)]):
        job(root, f"j{i}", o, i, downstream(shape, colour, 0.1, 0.5), job_extra={"main_score": "zeroshot_classification.colour.top1"})
    out = build_leaderboard(root, out=tmp_path / "lb", formats=["csv", "md"])
    s = _summary(out)
    assert s.loc["b", "rank"] == 1 and s.loc["b", "main_score.mean"] == pytest.approx(0.85)
    t = pd.read_csv(out / "tables.csv").iloc[0]
    assert t["main_score"] == "zeroshot_classification.colour.top1" and t["main_score_source"] == "suite"
    assert "named by the suite" in (out / "README.md").read_text()


def test_first_declared_main_score_with_values_in_declaration_order(tmp_path):
    root = tmp_path / "runs"
    order = {"linear_probe": PROBE, "zeroshot_classification": TOP1}  # the suite lists linear_probe first
    for i, (o, shape, probe) in enumerate([("a", 0.9, 0.1), ("a", 0.8, 0.2), ("b", 0.3, 0.9), ("b", 0.4, 0.8)]):
        m = downstream(shape, shape, 0.1, probe)
        job(root, f"j{i}", o, i, m, main_scores=order)
        # a second table without text: no zero-shot, no probe: the retrieval declaration is not there either
        job(root, f"k{i}", o, i, {"retrieval": {"r": {"image_to_text_r1": probe}}}, dataset="views", main_scores=order)
    out = build_leaderboard(root, out=tmp_path / "lb", formats=["csv", "md"])
    s = pd.read_csv(out / "summary.csv")
    shapes = s[s["dataset"] == "shapes"].set_index("objective")
    assert shapes.loc["b", "rank"] == 1  # by the probe (declared first), although a wins on zero-shot
    views = s[s["dataset"] == "views"]
    assert views["rank"].isna().all() and views["main_score.mean"].isna().all()
    t = pd.read_csv(out / "tables.csv").set_index("dataset")
    assert "none of the declared main scores (linear_probe.*.accuracy, zeroshot_classification.*.top1)" in t.loc["views", "description"]
    assert "No main score for this table" in (out / "README.md").read_text()


def test_results_without_declarations_have_no_main_score_and_do_not_crash(tmp_path):
    root = tmp_path / "runs"
    for i in range(4):
        job(root, f"j{i}", "ab"[i % 2], i, downstream(0.5, 0.5, 0.1, 0.5), main_scores=None)
    out = build_leaderboard(root, out=tmp_path / "lb")
    assert pd.read_csv(out / "results.csv")["main_score"].isna().all()
    assert pd.read_csv(out / "pairwise.csv").empty
    readme = (out / "README.md").read_text()
    assert "no evaluation of these results declares a main score" in readme and "### Main score" not in readme
    assert not (out / "cd_diagram.png").exists()


def test_lower_is_better_ranks_ascending(tmp_path):
    root = tmp_path / "runs"
    decl = {"gap": {"key": "centroid_distance", "higher_is_better": False, "description": "centroid distance"}}
    for i, (o, cd) in enumerate([("small", 0.1), ("small", 0.12), ("large", 0.9), ("large", 0.95), ("mid", 0.5), ("mid", 0.55)]):
        job(root, f"j{i}", o, i, {"gap": {"centroid_distance": cd}}, main_scores=decl)
    out = build_leaderboard(root, out=tmp_path / "lb", formats=["csv", "md"])
    s = _summary(out)
    assert s["rank"].to_dict() == {"small": 1, "mid": 2, "large": 3}
    assert "| main score ↓ (mean) |" in " ".join((out / "README.md").read_text().split())
    pw = pd.read_csv(out / "pairwise.csv")
    assert pw[["objective_a", "objective_b"]].values.tolist() == [["small", "mid"], ["small", "large"], ["mid", "large"]]


def test_explicit_choice_without_values_falls_back_and_says_so(tmp_path):
    root = tmp_path / "runs"
    for i in range(4):
        job(root, f"j{i}", "ab"[i % 2], i, {"retrieval": {"r": {"image_to_text_r1": 0.1 * i}}},
            job_extra={"main_score": "zeroshot_classification.mean_top1"})
    out = build_leaderboard(root, out=tmp_path / "lb", formats=["csv", "md"])
    t = pd.read_csv(out / "tables.csv").iloc[0]
    assert t["main_score"] == "retrieval.*.image_to_text_r1" and t["main_score_source"] == "declared"
    assert "the suite's main score zeroshot_classification.mean_top1 has no values in this table" in (out / "README.md").read_text()


# --- tuning jobs ------------------------------------------------------------------------------------

def test_tuning_jobs_go_to_tuning_csv_not_results(tmp_path):
    root = tmp_path / "runs"
    lrs, chosen = (1e-4, 1e-3, 1e-2), {"clip": 1e-3, "cua": 1e-2}
    n = 0
    for o in ("clip", "cua"):
        for lr in lrs:
            val = 0.5 - abs(math.log10(lr) - math.log10(chosen[o])) * 0.1
            job(root, f"t{n}", o, 0, {"validation": {"shape": {"top1": val}}},
                job_extra={"stage": "tune", "trial": {"train.lr": lr}, "train": {"lr": lr}})
            n += 1
        for seed in range(3):
            job(root, f"f{n}", o, seed, downstream(0.5 + 0.01 * seed, 0.5, 0.1, 0.5),
                job_extra={"train": {"lr": chosen[o]}, "tuned": {"train.lr": chosen[o]},
                           "tuning": {"trials": 3, "seeds": [0], "metric": "validation.shape.top1"}})
            n += 1
    out = build_leaderboard(root, out=tmp_path / "lb")
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 6 and "validation.shape.top1" not in results.columns
    assert results.groupby("objective")["train.lr"].first().to_dict() == chosen
    tuning = pd.read_csv(out / "tuning.csv")
    assert list(tuning.columns[:11]) == ["objective", "encoder", "dataset", "seed", "replicate", "dataset_seed", "status", "train.lr", "trial.train.lr", "metric", "score"]
    assert len(tuning) == 6 and (tuning["metric"] == "validation.shape.top1").all()
    best = tuning.loc[tuning.groupby("objective")["score"].idxmax()].set_index("objective")["trial.train.lr"].to_dict()
    assert best == chosen
    readme = (out / "README.md").read_text()
    table = readme.split("### Tuning: chosen values and budget\n\n", 1)[1].split("\n\n", 1)[0]
    header = [c.strip() for c in table.splitlines()[0].split("|")[1:-1]]
    assert header == ["objective", "chosen train.lr", "trials per objective", "tuning seeds", "selected by (validation)"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]}
    assert rows["clip"] == ["0.001", "3", "0", "validation.shape.top1"] and rows["cua"][0] == "0.01"
    assert (out / "tuning.png").read_bytes()[:4] == b"\x89PNG"
    # rebuilding without the tuning jobs removes the stale tuning outputs
    for d in root.glob("t*"):
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    build_leaderboard(root, out=out)
    assert not (out / "tuning.csv").exists() and not (out / "tuning.png").exists()


def test_tuning_without_tune_metric_scores_trials_by_the_declared_main_score(tmp_path):
    """A suite that leaves tune.metric to its default (gap-tuned does) selects by each job's declared
    main score; tuning.csv, the tuning table and the plot must show that score, not blanks."""
    root = tmp_path / "runs"
    scores = {1e-4: 0.40, 1e-3: 0.60, 1e-2: 0.50}
    for n, (lr, top1) in enumerate(scores.items()):
        metrics = {"zeroshot_classification": {"shape": {"top1": top1 - 0.1}, "colour": {"top1": top1 + 0.1}, "mean_top1": top1}}
        job(root, f"t{n}", "clip", 0, metrics, main_scores=MEAN_TOP1,
            job_extra={"stage": "tune", "split": "validation", "trial": {"train.lr": lr}, "train": {"lr": lr},
                       "tuning": {"trials": 3, "seeds": [0], "metric": None}})
    for seed in range(2):
        job(root, f"f{seed}", "clip", seed, downstream(0.5, 0.9, 0.1, 0.5), main_scores=MEAN_TOP1,
            job_extra={"train": {"lr": 1e-3}, "tuned": {"train.lr": 1e-3},
                       "tuning": {"trials": 3, "seeds": [0], "metric": None, "validation_score": 0.6}})
    out = build_leaderboard(root, out=tmp_path / "lb")
    tuning = pd.read_csv(out / "tuning.csv").set_index("trial.train.lr")
    assert (tuning["metric"] == "zeroshot_classification.mean_top1").all()
    assert tuning["score"].to_dict() == pytest.approx(scores)
    readme = (out / "README.md").read_text()
    table = readme.split("### Tuning: chosen values and budget\n\n", 1)[1].split("\n\n", 1)[0]
    assert [c.strip() for c in table.splitlines()[2].split("|")[1:-1]] == ["clip", "0.001", "3", "0", "zeroshot_classification.mean_top1"]
    assert (out / "tuning.png").read_bytes()[:4] == b"\x89PNG"


# --- the index --------------------------------------------------------------------------------------

def test_index_links_every_suite(tmp_path):
    lb = tmp_path / "leaderboard"
    for suite in ("gap", "digits"):
        root = tmp_path / "runs" / suite
        for i in range(4):
            job(root, f"j{i}", "ab"[i % 2], i, downstream(0.5 + 0.1 * (i % 2), 0.5, 0.1, 0.5), suite=suite)
        build_leaderboard(root, out=lb / suite, formats=["html", "md"], index=True)
    (lb / "README.md").write_text("hand-written findings")
    page = build_index(lb).read_text()
    assert 'href="digits/index.html"' in page and 'href="gap/index.html"' in page and 'href="gap/README.md"' in page
    assert page.index("digits/index.html") < page.index("gap/index.html")
    assert 'href="gap/index.html#t-shapes-tiny"' in page  # each table links to its heading
    assert 'id="t-shapes-tiny"' in (lb / "gap" / "index.html").read_text()
    build_leaderboard(tmp_path / "runs" / "gap", out=tmp_path / "elsewhere" / "gap")  # not under leaderboard/: no index
    assert not (tmp_path / "elsewhere" / "index.html").exists()
    assert (lb / "README.md").read_text() == "hand-written findings"
    board = json.loads((lb / "gap" / "board.json").read_text())
    # a and b never ran the same replicate (seeds 0, 2 against 1, 3): nothing is resolved, both are tier 1
    assert board["tables"][0]["tier1"] == ["b", "a"] and board["suite"] == "gap" and "top" not in board["tables"][0]
    with pytest.raises(HarnessError, match="no such directory"):
        build_index(tmp_path / "missing")


# --- hostile result files: one line, exit 2 ---------------------------------------------------------

def _hostile(root: Path, text: str) -> None:
    (root / "j0").mkdir(parents=True)
    (root / "j0" / "result.json").write_text(text)


GOOD = json.dumps({"status": "ok", "job": {"seed": 0, "objective": {"name": "a"}, "encoder": {"name": "e"}, "dataset": {"name": "d"}},
                   "metrics": {"gap": {"centroid_distance": 0.5}}})


@pytest.mark.parametrize("text, message", [
    (GOOD.replace('"metrics": {', '"metrics": {"deep": ' + "[" * 5000 + "]" * 5000 + ", "), "nested too deep"),
    (GOOD.replace('"metrics": {', '"metrics": {"deep": ' + "[" * 500 + "]" * 500 + ", "), "nested too deep"),
    (GOOD.replace('"metrics": {', '"metrics": {"deep": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + ", "), "nested too deep"),
    (GOOD.replace("0.5", "1e400"), "a number out of range (1e400)"),
    (GOOD.replace("0.5", "-1e400"), "a number out of range"),
    (GOOD.replace("0.5", "9" * 5000), "an integer of 5000 digits"),
    (GOOD.replace('"seed": 0', '"seed": ' + "1" * 5000), "an integer of 5000 digits"),
    (GOOD.replace('"seed": 0', '"seed": ' + "1" * 25), "job.seed must be an integer below 2**63"),
    (GOOD.replace('"seed": 0', '"seed": 0, "replicate": "w1"'), "job.replicate must be an integer below 2**63"),
    (GOOD.replace('"seed": 0', '"seed": 0, "replicate": ' + "1" * 25), "job.replicate must be an integer below 2**63"),
    (GOOD.replace('"metrics"', '"main_scores": {"gap": {"key": "x"}}, "metrics"'), "main_scores.gap.higher_is_better must be true or false"),
    (GOOD.replace('"metrics"', '"main_scores": [1], "metrics"'), "main_scores must be a mapping"),
    (GOOD.replace('"metrics"', '"reference_rows": {"chance": {"x": "high"}}, "metrics"'), "reference_rows.chance.x must be a number"),
    (GOOD.replace('"seed": 0', '"seed": 0, "main_score": 5'), "job.main_score must be a string"),
    (GOOD.replace('"seed": 0', '"seed": 0, "tuning": {"trials": "many"}'), "job.tuning.trials must be an integer"),
    (GOOD.replace('"seed": 0', '"seed": 0, "trial": {"train.lr": [1]}'), "job.trial.train.lr must be a number or a string"),
    (GOOD.replace('{"name": "a"}', '{"name": "a", "params": [1, 2]}'), "job.objective.params must be a mapping"),
    (GOOD.replace('"seed": 0', '"seed": 0, "evaluations": {"a": 1}'), "job.evaluations must be a list"),
])
def test_hostile_result_is_one_line_exit_2(tmp_path, capsys, text, message):
    root = tmp_path / "runs"
    _hostile(root, text)
    with pytest.raises(HarnessError) as info:
        build_leaderboard(root, out=tmp_path / "lb")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert cli_main(["leaderboard", str(root), "--out", str(tmp_path / "lb2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err and message in err


def test_infinite_and_nan_values_are_values_not_crashes(tmp_path):
    root = tmp_path / "runs"
    for i, value in enumerate(["Infinity", "NaN", "0.4", "0.5", "-Infinity", "0.45"]):
        text = GOOD.replace('"seed": 0', f'"seed": {i}').replace(
            '"metrics": {', '"main_scores": {"zeroshot_classification": {"key": "*.top1", "higher_is_better": true}}, '
                            f'"metrics": {{"zeroshot_classification": {{"s": {{"top1": {value}}}}}, ')
        text = text.replace('{"name": "a"}', '{"name": "%s"}' % "ab"[i % 2])
        (root / f"j{i}").mkdir(parents=True)
        (root / f"j{i}" / "result.json").write_text(text)
    out = build_leaderboard(root, out=tmp_path / "lb")
    assert (out / "index.html").exists() and (out / "pairwise.csv").exists()


def test_an_objective_within_the_detectable_difference_of_chance_is_marked():
    from harness.leaderboard.tables import near_chance

    means, lows, highs = [0.33, 0.40, 0.70, float("nan")], [0.31, 0.36, 0.65, float("nan")], [0.35, 0.44, 0.75, float("nan")]
    assert near_chance(means, lows, highs, 0.32, detectable=0.05) == [True, False, False, False]
    assert near_chance(means, lows, highs, 0.37, detectable=None) == [False, True, False, False]  # chance inside the CI
    assert near_chance(means, lows, highs, 0.37, detectable=0.05) == [True, True, False, False]
