"""The leaderboard, from a run store written here with known numbers (several seeds, one failed job)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.cli import main as cli_main
from harness.errors import HarnessError
from harness.leaderboard import build_leaderboard
from harness.leaderboard.stats import paired
from harness.leaderboard.markdown import md
from harness.leaderboard.tables import fmt_cell

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script>alert(1)&lt;/script>"  # as Markdown text
INFO = {
    "gap": {
        "centroid_distance": {"display": "centroid distance", "group": "gap", "higher_is_better": False},
        "linear_separability": {"display": "linear separability", "group": "gap", "higher_is_better": False},
        "uniformity": {"display": "uniformity", "group": "gap", "higher_is_better": None},
    },
    "zeroshot_classification": {"top1": {"display": "top-1", "group": "downstream", "higher_is_better": True}},
    "retrieval": {"image_to_text_r1": {"display": "I→T R@1", "group": "downstream", "higher_is_better": True}},
}
# what the evaluations declare as their main score, in the suite's evaluation order (gap declares none)
DECLARED = {
    "zeroshot_classification": {"key": "*.top1", "higher_is_better": True, "description": "zero-shot top-1 (mean over classification sets)"},
    "retrieval": {"key": "*.image_to_text_r1", "higher_is_better": True, "description": "image→text R@1 (mean over retrieval sets)"},
}
# objective label -> per seed: (centroid distance, separability, uniformity, shape top1, color top1, i2t r1)
DATA = {
    "clip": {0: (0.60, 1.00, -1.5, 0.50, 0.40, 0.30), 1: (0.70, 0.98, -1.6, 0.55, 0.45, 0.32), 2: (0.80, 0.99, -1.7, 0.60, 0.50, 0.34)},
    "cua": {0: (0.10, 0.70, -3.5, 0.48, 0.42, 0.29), 1: (0.20, 0.72, -3.6, 0.56, 0.44, 0.31), 2: (0.30, 0.74, -3.7, 0.58, 0.50, 0.30)},
    "clip(temperature=1.0)": {0: (0.90, 1.00, -1.0, 0.10, 0.10, 0.05), 1: (0.95, 1.00, -1.1, 0.12, 0.12, 0.06)},
    EVIL: {0: (0.50, 0.90, -2.0, 0.30, 0.30, 0.20)},
}


def _spec(label: str) -> dict:
    return {"name": label.split("(")[0] if label != EVIL else "evil", "params": {}, "label": label}


def write_job(root: Path, job_id: str, objective: str, seed: int, status: str = "ok", metrics: dict | None = None,
              error: str | None = None, encoder: str = "tiny", dataset: str = "shapes", suite: str = "toy",
              skipped: dict | None = None, main_scores: dict | None = DECLARED, job_extra: dict | None = None,
              extra: dict | None = None) -> Path:
    job = {
        "id": job_id, "suite": suite, "objective": _spec(objective), "encoder": _spec(encoder), "dataset": _spec(dataset),
        "train": {"steps": 10}, "seed": seed,
        "evaluations": [{"name": n, "params": {}, "label": n} for n in ("gap", "zeroshot_classification", "retrieval")],
        "save": [], "resources": {}, **(job_extra or {}),
    }
    result = {
        "status": status, "job": job, "metrics": metrics or {}, "metric_info": INFO, "skipped": skipped or {},
        "env": {"harness_version": "0.1.0", "git_commit": "abc123", "device_name": "Test CPU (2 cores)", "torch_threads": 2,
                "started_at": f"2025-01-0{1 + seed % 3}T10:00:00+00:00", "wall_time_s": 10.0, "train_time_s": 8.0},
        "error": error, "traceback": "Traceback ...\n" if error else None,
        **({"main_scores": main_scores} if main_scores is not None else {}), **(extra or {}),
    }
    d = root / job_id
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps(job))
    (d / "result.json").write_text(json.dumps(result))
    return d


def metrics_for(values: tuple) -> dict:
    cd, sep, unif, shape, color, r1 = values
    return {
        "gap": {"centroid_distance": cd, "linear_separability": sep, "uniformity": unif},
        "zeroshot_classification": {"shape": {"top1": shape}, "color": {"top1": color}},
        "retrieval": {"retrieval": {"image_to_text_r1": r1}},
        "train": {"final_loss": 2.0 + cd, "temperature": 0.01, "steps": 10},
    }


def write_store(root: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 0
    for objective, seeds in DATA.items():
        for seed, values in seeds.items():
            d = write_job(root, f"job{n:02d}", objective, seed, metrics=metrics_for(values),
                          skipped={"arithmetic": "no arithmetic set"} if objective == "cua" else None)
            n += 1
            (d / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 3.0 - s / 10 + seed / 100}) + "\n" for s in range(0, 11, 2)))
            if seed == 0 and objective in ("clip", "cua"):
                (d / "embeddings").mkdir()
                np.savez(d / "embeddings" / "shape.npz", image_emb=rng.normal(size=(12, 8)))
                np.savez(d / "embeddings" / "retrieval.npz", image_emb=rng.normal(size=(12, 8)) + 1,
                         pair_emb=rng.normal(size=(24, 8)) - 1, pair_image_index=np.repeat(np.arange(12), 2))
    partial = {"gap": {"centroid_distance": 99.0}}  # a failed job's partial metrics: never averaged in
    write_job(root, "job99", "cua", 3, status="failed", metrics=partial, error="RuntimeError: out of memory | boom\nsecond line")
    # in-progress and lock directories are ignored, even when they hold a corrupt result
    (root / ".tmp" / "job98.123.abcd").mkdir(parents=True)
    (root / ".tmp" / "job98.123.abcd" / "result.json").write_text("{not json")
    (root / "not-a-job").mkdir()
    return root


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    root = write_store(tmp_path_factory.mktemp("runs") / "toy")
    out = tmp_path_factory.mktemp("board")
    assert build_leaderboard(root, out=out, command="harness leaderboard runs/toy") == out
    return out


@pytest.fixture(scope="module")
def summary(board) -> pd.DataFrame:
    return pd.read_csv(board / "summary.csv").set_index("objective")


def _main(values_by_seed: dict) -> np.ndarray:
    return np.array([(v[3] + v[4]) / 2 for v in values_by_seed.values()])


def test_results_csv_has_one_row_per_job_with_dotted_metric_columns(board):
    df = pd.read_csv(board / "results.csv")
    assert list(df.columns[:7]) == ["objective", "encoder", "dataset", "seed", "replicate", "dataset_seed", "status"]
    assert (df["replicate"] == df["seed"]).all()  # a suite of seeds: each seed stands for its replicate
    assert df["dataset_seed"].isna().all()  # the fake dataset has no seed param
    assert {"gap.centroid_distance", "zeroshot_classification.shape.top1", "retrieval.retrieval.image_to_text_r1",
            "train.final_loss"} <= set(df.columns[7:])
    assert len(df) == 10
    assert df["status"].value_counts().to_dict() == {"ok": 9, "failed": 1}
    failed = df[df["status"] == "failed"].iloc[0]
    assert (failed["objective"], failed["seed"], failed["gap.centroid_distance"]) == ("cua", 3, 99.0)
    assert math.isnan(failed["zeroshot_classification.shape.top1"])
    row = df[(df["objective"] == "clip") & (df["seed"] == 1)].iloc[0]
    assert row["zeroshot_classification.color.top1"] == pytest.approx(0.45)


def test_summary_means_stds_over_ok_seeds_only(summary):
    clip, cua = summary.loc["clip"], summary.loc["cua"]
    assert clip["gap.centroid_distance.mean"] == pytest.approx(0.7)
    assert clip["gap.centroid_distance.std"] == pytest.approx(0.1)  # sample std of 0.6, 0.7, 0.8
    assert clip["gap.centroid_distance.n"] == 3
    # the failed seed's 99.0 is not averaged in
    assert cua["gap.centroid_distance.mean"] == pytest.approx(0.2)
    assert (cua["n_ok"], cua["n_failed"]) == (3, 1)
    assert cua["gap.uniformity.std"] == pytest.approx(np.std([-3.5, -3.6, -3.7], ddof=1))
    assert summary.loc[EVIL, "gap.centroid_distance.n"] == 1 and math.isnan(summary.loc[EVIL, "gap.centroid_distance.std"])
    for label, seeds in DATA.items():
        assert summary.loc[label, "main_score.mean"] == pytest.approx(_main(seeds).mean())


def test_rows_ranked_by_main_score(summary):
    ranked = summary.sort_values("rank").index.tolist()
    assert ranked == ["clip", "cua", EVIL, "clip(temperature=1.0)"]
    assert summary.loc["clip", "main_score.mean"] == pytest.approx(0.5)


def test_significance_is_the_paired_contrast_against_the_reference(summary):
    """No suite reference recorded: clip is the reference; each trained objective's contrast is the paired t
    over the replicates both ran (here the seeds), Holm over the contrasts that have a test."""
    clip = _main(DATA["clip"])
    p = {}
    for label in ("cua", "clip(temperature=1.0)"):
        a = _main(DATA[label])
        d = a - clip[: len(a)]  # the replicates both ran: seeds 0..len(a)-1
        t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))  # the paired t by hand, df = n - 1
        p[label] = 2 * stats.t.sf(abs(t), len(d) - 1)
        assert summary.loc[label, "p_vs_reference"] == pytest.approx(p[label])
        assert summary.loc[label, "diff_vs_reference"] == pytest.approx(d.mean())
    ordered = sorted(p.values())
    holm = np.maximum.accumulate([min(1.0, (2 - i) * q) for i, q in enumerate(ordered)])  # Holm by hand, 2 contrasts
    for label, v in p.items():
        assert summary.loc[label, "p_holm_vs_reference"] == pytest.approx(holm[ordered.index(v)])
    assert summary.loc["clip", "vs_reference"] == "reference"
    # two replicates resolve nothing here: Welch on unpaired seeds used to call clip(temperature=1.0) significant
    assert summary.loc["cua", "vs_reference"].startswith("n.s. (")
    assert summary.loc["clip(temperature=1.0)", "vs_reference"].startswith("n.s. (")
    assert summary.loc[EVIL, "vs_reference"].startswith("no test: only 1 replicate") and math.isnan(summary.loc[EVIL, "p_holm_vs_reference"])
    assert (summary["tier"] == 1).all()  # so every objective shares tier 1


def _table(readme: str, title: str) -> list[list[str]]:
    block = readme.split(f"### {title}\n\n", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in block.splitlines() if not line.startswith("|-")]


def test_readme_tables_bold_the_best_cell_by_direction(board):
    readme = (board / "README.md").read_text()
    gap = _table(readme, "Gap metrics: gap")
    header, rows = gap[0], {r[0]: r for r in gap[1:]}
    assert header[:2] == ["objective", "n"]
    assert header[2:] == ["centroid distance ↓", "linear separability ↓", "uniformity"]
    assert [r[0] for r in gap[1:]] == ["clip", "cua", ESCAPED, "clip(temperature=1.0)"]
    assert rows["cua"][1] == "3 (+1 failed)"
    assert rows["cua"][2] == "**0.200 ± 0.100**" and rows["clip"][2] == "0.700 ± 0.100"
    assert rows["cua"][3] == "**0.720 ± 0.020**"
    assert not any("**" in r[4] for r in gap[1:])  # uniformity has no direction: nothing bold
    assert rows[ESCAPED][2] == "0.500"  # one seed: no ± std

    main = _table(readme, "Main score")
    header, rows = main[0], {r[0]: r for r in main[1:]}
    assert header == ["objective", "main score ↑ (mean)", "95% CI (bootstrap)", "rank interval (95%)", "tier", "replicates",
                      "vs clip (paired t, Holm)"]
    assert rows["clip"][1] == "**0.500**" and rows["clip"][4] == "1"  # tier 1 is bold, not a single best row
    assert rows["cua"][5] == "3 (+1 failed)" and rows[ESCAPED][2] == "—"  # one replicate: no interval
    assert rows["clip"][6] == "reference" and rows["cua"][6].startswith("n.s. (") and rows[ESCAPED][6].startswith("no test: ")
    down = _table(readme, "Downstream: zeroshot_classification")
    header, rows = down[0], {r[0]: r for r in down[1:]}
    top1 = header.index("shape top-1 ↑")  # one evaluation per table: no evaluation prefix
    assert rows["clip"][top1] == "**0.550 ± 0.050**" and rows["cua"][top1] == "0.540 ± 0.053"
    train = _table(readme, "Training")
    assert train[0][2:] == ["final loss", "temperature", "steps"]
    assert not any("**" in c for r in train[1:] for c in r)


def test_readme_lists_failures_provenance_plots_and_escapes(board):
    readme = (board / "README.md").read_text()
    assert "## Failed jobs (1)" in readme
    assert "| cua | tiny | shapes | 3 | RuntimeError: out of memory \\| boom |" in re.sub(" +", " ", readme)
    assert "second line" not in readme
    assert "`harness leaderboard runs/toy`" in readme
    assert "2025-01-01 to 2025-01-03" in readme and "Test CPU (2 cores)" in readme and "abc123" in readme
    assert "10 (9 ok, 1 failed)" in readme and "1 min 40 s" in readme  # 10 jobs x 10 s
    assert "paired t" in readme and "Welch" not in readme and "Main score" in readme
    assert "arithmetic (3 jobs): no arithmetic set" in readme
    assert EVIL not in readme and "<script" not in readme
    for png in ("gap_vs_score.png", "cd_diagram.png", "loss_curves.png", "pca_shapes_tiny.png"):
        assert (board / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in readme


def test_html_page_is_standalone_and_escaped(board):
    page = (board / "index.html").read_text()
    assert page.count("<script>") == 1  # only the page's own sorting script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('src="data:image/png;base64,') == 4  # CD diagram, gap vs score, PCA, loss curves
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page
    # main score, the headline rule (zero-shot tasks), gap, zero-shot, retrieval, train, contrasts,
    # every pair + failed jobs
    assert page.count('<table class="sortable') == 9
    assert "Zero-shot tasks against the headline rule" in page
    assert 'class="best" data-value="0.2' in page


def test_pca_uses_the_paired_set_of_one_seed_per_objective(tmp_path):
    root = write_store(tmp_path / "toy")
    for job in ("job00", "job03"):  # clip and cua seed 0: without retrieval.npz there is nothing paired
        shutil.rmtree(root / job / "embeddings")
    out = build_leaderboard(root, out=tmp_path / "lb", formats=["md"])
    assert not (out / "pca_shapes_tiny.png").exists()
    assert (out / "gap_vs_score.png").exists() and not (out / "index.html").exists() and not (out / "results.csv").exists()


def test_main_score_falls_back_to_retrieval(tmp_path):
    root = tmp_path / "runs" / "ctrl"
    for i, (label, r1) in enumerate([("a", 0.2), ("a", 0.4), ("b", 0.5), ("b", 0.7)]):
        write_job(root, f"j{i}", label, i, suite="ctrl", metrics={"retrieval": {"retrieval": {"image_to_text_r1": r1}}, "gap": {"centroid_distance": 0.1}})
    out = build_leaderboard(root, out=tmp_path / "lb", formats=["csv", "md"])
    s = pd.read_csv(out / "summary.csv").set_index("objective")
    assert s.loc["b", "rank"] == 1 and s.loc["b", "main_score.mean"] == pytest.approx(0.6)
    assert "Main score: image→text R@1" in (out / "README.md").read_text()


def test_default_out_is_leaderboard_suite(tmp_path, monkeypatch):
    root = tmp_path / "runs" / "toy"
    write_job(root, "j0", "clip", 0, metrics=metrics_for(DATA["clip"][0]))
    monkeypatch.chdir(tmp_path)
    assert build_leaderboard("runs/toy", formats=["csv"]) == Path("leaderboard/toy")
    assert (tmp_path / "leaderboard" / "toy" / "results.csv").exists()
    assert (tmp_path / "leaderboard" / "index.html").exists()  # under a directory named leaderboard: the index is kept current


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "no such directory"),
    (lambda root: root.mkdir(), "no result.json under it"),
    (lambda root: (root / "j0").mkdir(parents=True) or (root / "j0" / "result.json").write_text('{"status": "ok",'), "j0/result.json: corrupt result (invalid JSON at line 1"),
    (lambda root: (root / "j0").mkdir(parents=True) or (root / "j0" / "result.json").write_text('{"status": "done", "job": {}}'), "j0/result.json: corrupt result (status must be"),
    (lambda root: (root / "j0").mkdir(parents=True) or (root / "j0" / "result.json").write_text("[1]"), "expected a JSON object"),
])
def test_bad_input_is_one_line_harness_error(tmp_path, setup, message):
    root = tmp_path / "runs"
    setup(root)
    with pytest.raises(HarnessError) as info:
        build_leaderboard(root, out=tmp_path / "lb")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_cli_exit_codes(tmp_path, capsys):
    root = write_store(tmp_path / "runs" / "toy")
    out = tmp_path / "lb"
    assert cli_main(["leaderboard", str(root), "--out", str(out), "--format", "csv"]) == 0
    assert str(out) in capsys.readouterr().out and (out / "summary.csv").exists()
    assert cli_main(["leaderboard", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_cell_format_and_paired_edge_cases():
    assert fmt_cell(0.5, 0.05, 3) == "0.500 ± 0.050"
    assert fmt_cell(1234.4, 12.6, 3) == "1234 ± 13"
    assert fmt_cell(0.5, math.nan, 1) == "0.500"
    assert fmt_cell(math.nan, math.nan, 0) == "—"
    assert fmt_cell(0.00123, 0.0004, 2) == "1.23e-03 ± 4.00e-04"
    one = paired([0.5, np.nan], [0.1, 0.2])  # one replicate both ran
    assert one.n == 1 and math.isnan(one.p_value) and "only 1 replicate" in one.note
    same = paired([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])  # identical scores: no p, never p = 1 or 0
    assert math.isnan(same.p_value) and "identical scores" in same.note
    shifted = paired([1.0, 1.0, 1.0], [0.999, 0.999, 0.999])  # scipy would say p = 0
    assert math.isnan(shifted.p_value) and "zero variance" in shifted.note and shifted.diff == pytest.approx(0.001)
    ok = paired([0.1, 0.2, 0.35], [0.1, 0.25, 0.3])
    assert ok.p_value == pytest.approx(stats.ttest_rel([0.1, 0.2, 0.35], [0.1, 0.25, 0.3]).pvalue) and ok.note == ""


def test_markdown_escaping_keeps_text_readable_and_inert():
    assert md("n<2") == "n<2" and md("a & b") == "a & b" and md("x > y") == "x > y"
    assert md("<b>x</b>") == "&lt;b>x&lt;/b>" and md("<!-- c -->") == "&lt;!-- c -->" and md("<http://x>") == "&lt;http://x>"
    assert md("&amp;") == "&amp;amp;" and md("&#60;") == "&amp;#60;"
    assert md("a|b*c`d[e]f\\g") == "a\\|b\\*c\\`d\\[e\\]f\\\\g"
    assert md("two\nlines") == "two lines"


def test_pca_projection_matches_sklearn():
    from sklearn.decomposition import PCA

    from harness.leaderboard.plots import _pca2

    rng = np.random.default_rng(1)
    image, pair = rng.normal(size=(30, 6)) * [3, 2, 1, 1, 1, 1] + 2, rng.normal(size=(40, 6))
    xi, xp = _pca2(image, pair)
    ref = PCA(n_components=2).fit_transform(np.concatenate([image, pair]))
    ours = np.concatenate([xi, xp])
    signs = np.sign((ours * ref).sum(axis=0))  # components are defined up to sign
    np.testing.assert_allclose(ours * signs, ref, atol=1e-8)


def test_only_failed_jobs_still_give_a_page_listing_them(tmp_path):
    root = tmp_path / "runs" / "toy"
    write_job(root, "j0", "clip", 0, status="failed", error="ValueError: bad")
    write_job(root, "j1", "cua", 0, status="failed", error=None)
    out = build_leaderboard(root, out=tmp_path / "lb")
    readme = (out / "README.md").read_text()
    assert "## Failed jobs (2)" in readme and "ValueError: bad" in readme and "(no error message recorded)" in readme
    assert "2 (0 ok, 2 failed)" in readme and not list(out.glob("*.png"))
    s = pd.read_csv(out / "summary.csv")
    assert s["n_ok"].tolist() == [0, 0] and s["n_failed"].tolist() == [1, 1]


def test_plots_with_more_objectives_than_colours_vary_the_marker_and_line_style():
    from harness.leaderboard.plots import COLORS, _colors, _linestyles, _markers

    names = [f"o{i}" for i in range(len(COLORS) * 2 + 3)]
    colors, markers, styles = _colors(names), _markers(names), _linestyles(names)
    looks = {(colors[n], markers[n]) for n in names}
    assert len(looks) == len(names)  # no two objectives alike
    assert len({(colors[n], styles[n]) for n in names}) == len(names)
    assert markers[names[0]] != markers[names[len(COLORS)]] and colors[names[0]] == colors[names[len(COLORS)]]
