"""suites/paper-dims.yaml and its page: the paper's published numbers (a CSV read as data) beside the
runs' means, and the gap metrics plotted against the encoder's embed_dim."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.leaderboard import build_leaderboard
from harness.leaderboard.aggregate import aggregate
from harness.leaderboard.load import load_runs
from harness.leaderboard.published import comparison, overlay, read_published
from harness.leaderboard.sweep import sweep_data, sweep_param, sweeps

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "suites" / "paper-dims.yaml"
PUBLISHED = ROOT / "suites" / "paper-dims.published.csv"
METRICS = ("gap.centroid_distance", "gap.linear_separability", "gap.mean_paired_cosine", "gap.uniformity",
           "gap.cross_uniformity", "gap.alignment", "retrieval.*.image_to_text_r1", "retrieval.*.text_to_image_r1")
# the paper's table (PAPER_NOTES.md), typed in again here: (objective label, d) -> the eight numbers above
PAPER = {
    ("clip_t0.01", 128): (0.661, 1.000, 0.567, -1.91, -2.82, 0.866, 0.275, 0.269),
    ("cua_t0.01", 128): (0.082, 0.729, 0.728, -3.65, -3.69, 0.544, 0.258, 0.254),
    ("cuaxu_t0.01", 128): (0.127, 0.826, 0.637, -3.75, -3.82, 0.727, 0.266, 0.270),
    ("clip_t0.01", 64): (0.314, 0.999, 0.825, -1.61, -1.82, 0.350, 0.260, 0.254),
    ("cua_t0.01", 64): (0.069, 0.648, 0.773, -3.60, -3.62, 0.454, 0.251, 0.245),
    ("clip_t0.01", 32): (0.104, 0.782, 0.909, -1.50, -1.52, 0.182, 0.239, 0.239),
    ("cua_t0.01", 32): (0.068, 0.589, 0.813, -3.52, -3.54, 0.374, 0.235, 0.229),
}


# --- the published file -------------------------------------------------------------------------------


def test_the_shipped_file_is_the_papers_table():
    pub = read_published(PUBLISHED)
    assert pub.keys == ("embed_dim",) and pub.metrics == METRICS
    assert {(r.objective, int(r.keys["embed_dim"])): tuple(r.values[m] for m in METRICS) for r in pub.rows} == PAPER
    assert [r.name for r in pub.rows] == ["CLIP", "CUA", "CUAXU", "CLIP", "CUA", "CLIP", "CUA"]
    (source,) = pub.sources
    assert "Fahim et al. 2024" in source and "COCO" in source and "ViT-B/32" in source and "PAPER_NOTES.md" in source
    assert pub.rows[0].texts["gap.uniformity"] == "-1.91"  # the paper's precision, as written


def test_the_shipped_file_names_the_suites_objectives_and_dims():
    from harness.suite import load_suite

    suite = load_suite(SUITE)
    labels = {o.label or o.name for o in suite.objectives}
    dims = {e.params["embed_dim"] for e in suite.encoders}
    pub = read_published(PUBLISHED)
    assert {r.objective for r in pub.rows} <= labels and {int(r.keys["embed_dim"]) for r in pub.rows} == dims


def test_the_shipped_files_columns_are_metrics_the_suites_evaluations_declare():
    from harness.registry import Registry

    registry = Registry()
    for pattern in read_published(PUBLISHED).metrics:
        evaluation, *middle, leaf = pattern.split(".")
        assert middle in ([], ["*"])  # gap metrics sit at the top, retrieval's under each retrieval set
        assert leaf in registry.get("evaluation", evaluation).factory().metric_info, pattern


HEADER = "objective,encoder.embed_dim,name,source,gap.centroid_distance\n"
BAD = {
    "number": (HEADER + "clip,32,CLIP,paper,abc\n", "line 2, field 'gap.centroid_distance': expected a number or an empty cell, got 'abc'"),
    "nan": (HEADER + "clip,32,CLIP,paper,nan\n", "line 2, field 'gap.centroid_distance': expected a number"),
    "formula": (HEADER + "clip,32,CLIP,paper,=1+2\n", "line 2, field 'gap.centroid_distance': expected a number"),
    "huge": (HEADER + "clip,32,CLIP,paper,1e999\n", "line 2, field 'gap.centroid_distance': number out of range"),
    "no source": ("objective,gap.centroid_distance\nclip,0.1\n", "line 1, field 'source': missing from the header"),
    "no metric": ("objective,source\nclip,paper\n", "line 1: the header names no metric column"),
    "unknown column": ("objective,source,centroid distance\nclip,p,0.1\n", "line 1, field 'centroid distance': not a column of this format"),
    "twice": ("objective,source,gap.a,gap.a\nclip,p,1,2\n", "line 1, field 'gap.a': named twice in the header"),
    "fields": ("# a comment\n" + HEADER + "clip,32,CLIP\n", "line 3: 3 fields, the header has 5"),
    "repeat": (HEADER + "clip,32,CLIP,p,0.1\nclip,32.0,CLIP,p,0.2\n", "line 3: repeats the objective and encoder values of line 2"),
    "empty key": (HEADER + "clip,,CLIP,p,0.1\n", "line 2, field 'encoder.embed_dim': empty (every row names it)"),
    "header only": (HEADER, "a header and no row of numbers"),
    "empty": ("# nothing but a comment\n", "no header line"),
    "quote": (HEADER + 'clip,32,CLIP,"p,0.1\n', "not CSV"),
    "two lines": (HEADER + 'clip,32,CLIP,"p\nq",0.1\n', "a cell of more than one line"),
    "long": (HEADER + f"clip,32,CLIP,{'x' * 600},0.1\n", "field 'source': a cell of more than one line or over 500 characters"),
    "nul": (HEADER + "clip,32,CLIP,p\x00,0.1\n", "holds a NUL byte"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_one_line_errors_naming_file_and_field(tmp_path, name):
    text, message = BAD[name]
    path = tmp_path / "pub.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(HarnessError) as err:
        read_published(path)
    line = str(err.value)
    assert "\n" not in line and line.startswith(str(path)) and message in line, line


def test_unreadable_files_are_one_line_errors(tmp_path):
    (tmp_path / "big.csv").write_bytes(b"#" * (2**20 + 1))
    (tmp_path / "latin.csv").write_bytes(HEADER.encode() + "clip,32,CLIP,caf\xe9,0.1\n".encode("latin-1"))
    (tmp_path / "real.csv").write_text(HEADER + "clip,32,CLIP,p,0.1\n")
    os.symlink(tmp_path / "real.csv", tmp_path / "link.csv")
    for file, message in (("missing.csv", "no such file"), ("big.csv", "refused: larger than 1 MiB"),
                          ("latin.csv", "not UTF-8 text"), ("link.csv", "refused: a symbolic link")):
        with pytest.raises(HarnessError, match=re.escape(message)) as err:
            read_published(tmp_path / file)
        assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path / file))
    assert read_published(tmp_path / "real.csv").rows[0].values == {"gap.centroid_distance": 0.1}


# --- a toy run: two dims, two objectives of the file and one not in it -----------------------------------

INFO = {"gap": {"centroid_distance": {"display": "centroid distance", "group": "gap", "higher_is_better": False},
                "linear_separability": {"display": "linear separability", "group": "gap", "higher_is_better": False}},
        "retrieval": {"image_to_text_r1": {"display": "I->T R@1", "group": "downstream", "higher_is_better": True}}}
# (objective, d) -> per replicate: (centroid distance, separability, R@1 of set a, R@1 of set b)
TOY = {
    ("clip_t0.01", 32): [(0.5, 1.0, 0.2, 0.4), (0.6, 0.9, 0.3, 0.5), (0.7, 0.8, 0.1, 0.3)],
    ("clip_t0.01", 64): [(0.8, 1.0, 0.2, 0.2), (1.0, 1.0, 0.4, 0.4)],  # + a failed third replicate
    ("cua_t0.01", 32): [(0.1, 0.6, 0.2, 0.2), (0.2, 0.7, 0.2, 0.2), (0.3, 0.8, 0.2, 0.2)],
    ("cua_t0.01", 64): [(0.4, 0.5, 0.1, 0.1), (0.4, 0.7, 0.3, 0.3), (0.4, 0.6, 0.2, 0.2)],
    ("extra", 32): [(0.9, 1.0, 0.0, 0.0)],
}
TOY_PUBLISHED = (
    "# toy numbers\n"
    "objective,encoder.embed_dim,name,source,gap.centroid_distance,retrieval.*.image_to_text_r1\n"
    "clip_t0.01,32,CLIP,Paper X (toy),0.104,.239\n"
    "cua_t0.01,32,CUA,Paper X (toy),0.068,\n"
    "clip_t0.01,64,CLIP,Paper X (toy),0.314,0.260\n"
    "clip_t0.01,128,CLIP,Paper X (toy),0.661,0.275\n"
)


def _job(root: Path, job_id: str, objective: str, d: int, replicate: int, values: tuple | None) -> None:
    spec = lambda name, label, params=None: {"name": name, "params": params or {}, "label": label}  # noqa: E731
    job = {"id": job_id, "suite": "paper-dims", "objective": spec(objective.split("_")[0], objective),
           "encoder": spec("open_clip", f"d={d}", {"model": "harness-tiny-cnn", "embed_dim": d}),
           "dataset": spec("shapes", "shapes", {"seed": replicate}), "train": {"lr": 1e-3}, "seed": replicate,
           "replicate": replicate, "evaluations": [spec("gap", "gap"), spec("retrieval", "retrieval")], "save": [], "resources": {}}
    metrics = {}
    if values is not None:
        cd, sep, r1a, r1b = values
        metrics = {"gap": {"centroid_distance": cd, "linear_separability": sep},
                   "retrieval": {"a": {"image_to_text_r1": r1a}, "b": {"image_to_text_r1": r1b}}}
    result = {"status": "ok" if values is not None else "failed", "job": job, "metrics": metrics, "metric_info": INFO,
              "main_scores": {"retrieval": {"key": "*.image_to_text_r1", "higher_is_better": True, "description": "R@1"}},
              "env": {"started_at": "2025-01-01T00:00:00+00:00"}, "error": None if values is not None else "RuntimeError: boom"}
    (root / job_id).mkdir(parents=True)
    (root / job_id / "result.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    base = tmp_path_factory.mktemp("dims")
    root = base / "runs" / "paper-dims"
    n = 0
    for (objective, d), reps in TOY.items():
        for r, values in enumerate(reps):
            _job(root, f"j{n:02d}", objective, d, r, values)
            n += 1
    _job(root, "jfail", "clip_t0.01", 64, 2, None)
    pub = base / "toy.published.csv"
    pub.write_text(TOY_PUBLISHED)
    out = base / "page"
    build_leaderboard(root, out=out, published=pub)
    return root, pub, out


def _table(readme: str, title: str) -> list[list[str]]:
    block = readme.split(f"### {title}\n\n", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in block.splitlines() if not line.startswith("|-")]


def test_the_page_shows_our_mean_beside_the_published_value(toy):
    _, pub, out = toy
    readme = (out / "README.md").read_text()
    rows = _table(readme, "Against the published numbers: shapes")
    assert rows[0] == ["encoder", "embed_dim", "objective", "numbers", "centroid distance ↓",
                       "I->T R@1 ↑ (mean over retrieval.\\*.image_to_text_r1)"]
    # each job's R@1 is first averaged over its two retrieval sets: clip d=32 gives 0.3, 0.4, 0.2
    assert rows[1:] == [
        ["d=32", "32", "clip_t0.01", "ours (n=3)", "0.600 ± 0.100", "0.300 ± 0.100"],
        ["d=32", "32", "clip_t0.01", "published: CLIP", "0.104", "0.239"],
        ["d=32", "32", "cua_t0.01", "ours (n=3)", "0.200 ± 0.100", "0.200 ± 0.000"],
        ["d=32", "32", "cua_t0.01", "published: CUA", "0.068", "—"],
        ["d=32", "32", "extra", "ours (n=1)", "0.900", "0.000"],  # not in the file: no published row
        ["d=64", "64", "clip_t0.01", "ours (n=2)", "0.900 ± 0.141", "0.300 ± 0.141"],  # the failed job is not averaged in
        ["d=64", "64", "clip_t0.01", "published: CLIP", "0.314", "0.260"],
        ["d=64", "64", "cua_t0.01", "ours (n=3)", "0.400 ± 0.000", "0.200 ± 0.100"],
        ["d=64", "64", "cua_t0.01", "published: not reported", "—", "—"],
    ]
    assert "Published: Paper X (toy)." in readme
    assert "line 6: clip_t0.01 embed_dim=128 matches no run here" in readme
    section = readme.split("## Against the published numbers", 1)[1].split("\n## ", 1)[0]
    assert "](param_sweep.png)" in section  # the figure sits with the table, not among the other plots
    assert f"--published {pub}" in readme and "published numbers**: " in readme  # the command and the file on the page


def test_published_csv_and_html_hold_the_same_numbers(toy):
    _, _, out = toy
    frame = pd.read_csv(out / "published.csv")
    row = frame[(frame["encoder"] == "d=64") & (frame["objective"] == "clip_t0.01")
                & (frame["metric"] == "gap.centroid_distance")].iloc[0]
    assert (row["mean"], round(row["std"], 12), row["n"], row["n_ok"], row["published"], row["encoder.embed_dim"]) == (
        0.9, round(math.sqrt(0.02), 12), 2, 2, 0.314, 64)
    missing = frame[(frame["encoder"] == "d=64") & (frame["objective"] == "cua_t0.01")]
    assert missing["published"].isna().all() and len(missing) == 2
    page = (out / "index.html").read_text()
    assert "<h2>Against the published numbers</h2>" in page and '<td data-value="0.314">0.314</td>' in page
    assert page.count('src="data:image/png;base64,') >= 2


def test_sweep_data_is_the_mean_and_std_per_objective_and_d(toy):
    root, pub, _ = toy
    store = load_runs(root)
    agg = aggregate(store)
    assert sweeps(store) == {"shapes": ("embed_dim", {"d=32": 32.0, "d=64": 64.0})}
    data = sweep_data(agg.results, {"d=32": 32.0, "d=64": 64.0}, "shapes", "gap.centroid_distance")
    got = {(r.objective, r.x): (round(r.mean, 12), None if math.isnan(r.std) else round(r.std, 12), r.n) for r in data.itertuples()}
    by_hand = {}
    for (objective, d), reps in TOY.items():
        v = np.array([r[0] for r in reps])
        by_hand[(objective, float(d))] = (round(v.mean(), 12), round(v.std(ddof=1), 12) if len(v) > 1 else None, len(v))
    assert got == by_hand
    assert list(data[data["objective"] == "clip_t0.01"]["x"]) == [32.0, 64.0]
    points = overlay(store, comparison(store, agg.results, read_published(pub)))
    cd = points[points["column"] == "gap.centroid_distance"]
    assert sorted(zip(cd["objective"], cd["encoder"], cd["value"])) == [
        ("clip_t0.01", "d=32", 0.104), ("clip_t0.01", "d=64", 0.314), ("cua_t0.01", "d=32", 0.068)]
    assert set(points[points["column"] == "retrieval.a.image_to_text_r1"]["value"]) == {0.239, 0.26}


@pytest.mark.parametrize("specs, expected", [
    ({"a": ("open_clip", {"model": "m", "embed_dim": 32}), "b": ("open_clip", {"model": "m", "embed_dim": 64})}, "embed_dim"),
    ({"a": ("open_clip", {"embed_dim": 32}), "b": ("open_clip", {})}, None),  # a default is not a number here
    ({"a": ("open_clip", {"model": "m", "embed_dim": 32}), "b": ("open_clip", {"model": "n", "embed_dim": 64})}, None),
    ({"a": ("open_clip", {"embed_dim": 32}), "b": ("other", {"embed_dim": 64})}, None),
    ({"a": ("same_modality", {"shared_init": False}), "b": ("same_modality", {"shared_init": True})}, None),
    ({"a": ("open_clip", {"embed_dim": 32})}, None),
])
def test_the_swept_param_is_the_one_number_the_encoders_differ_in(specs, expected):
    assert sweep_param(specs) == expected


def test_without_published_numbers_the_sweep_joins_the_other_plots(toy, tmp_path):
    root, _, _ = toy
    out = build_leaderboard(root, out=tmp_path / "page")
    readme = (out / "README.md").read_text()
    assert "Against the published numbers" not in readme and not (out / "published.csv").exists()
    assert "](param_sweep.png)" in readme.split("## Plots", 1)[1]


def test_text_from_the_file_is_inert_on_the_page_and_in_the_csv(toy, tmp_path):
    root, _, _ = toy
    evil = tmp_path / "evil.csv"
    evil.write_text('objective,encoder.embed_dim,name,source,gap.centroid_distance\n'
                    'clip_t0.01,32,"=HYPERLINK(""http://x"")",<script>alert(1)</script>,0.5\n')
    out = build_leaderboard(root, out=tmp_path / "page", published=evil)
    assert "<script>alert" not in (out / "README.md").read_text() and "<script>alert" not in (out / "index.html").read_text()
    assert "&lt;script>alert(1)&lt;/script>" in (out / "README.md").read_text()
    names = set(pd.read_csv(out / "published.csv")["name"].dropna())
    assert names == {"'=HYPERLINK(\"http://x\")"}  # a spreadsheet would not run it


def test_a_bad_published_file_stops_before_any_output(toy, tmp_path):
    root, _, _ = toy
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "clip,32,CLIP,p,oops\n")
    with pytest.raises(HarnessError, match="bad.csv, line 2, field 'gap.centroid_distance'"):
        build_leaderboard(root, out=tmp_path / "page", published=bad)
    assert not (tmp_path / "page").exists()


# --- the suite ------------------------------------------------------------------------------------------


def test_the_suite_expands_to_3_objectives_x_3_dims_x_5_replicates():
    from harness.registry import Registry
    from harness.suite import expand_grid, load_suite

    grid = expand_grid(load_suite(SUITE), source=str(SUITE), registry=Registry(), check_build=False)
    jobs = grid.jobs
    assert len(jobs) == 45 and len({j.id for j in jobs}) == 45
    cells = {(j.objective.display, j.encoder.display) for j in jobs}
    assert cells == {(o, f"d={d}") for o in ("clip_t0.01", "cua_t0.01", "cuaxu_t0.01") for d in (32, 64, 128)}
    for j in jobs:
        assert j.objective.name == j.objective.display.split("_")[0]
        assert {k: j.objective.params[k] for k in ("temperature", "learnable_temperature")} == {"temperature": 0.01, "learnable_temperature": False}
        assert j.encoder.name == "open_clip" and j.encoder.params["model"] == "harness-tiny-cnn"
        assert j.encoder.display == f"d={j.encoder.params['embed_dim']}"
        assert {k: j.dataset.params[k] for k in ("train_size", "eval_size", "captions", "headline", "seed")} == {
            "train_size": 20000, "eval_size": 1000, "captions": "canonical", "headline": ["shape", "size", "position"],
            "seed": j.replicate}
        assert j.seed == j.replicate and j.reference == "clip_t0.01"
        assert {k: j.train[k] for k in ("steps", "batch_size", "lr", "weight_decay", "betas", "warmup", "grad_clip", "log_every")} == {
            "steps": 600, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.1, "betas": (0.9, 0.98), "warmup": 50,
            "grad_clip": 1.0, "log_every": 10}
        assert [e.name for e in j.evaluations] == ["gap", "zeroshot_classification", "retrieval"]
        assert j.resources["cpus_per_job"] == 1
    assert sorted(j.replicate for j in jobs if j.objective.display == "cua_t0.01" and j.encoder.display == "d=64") == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("d", [32, 64, 128])
def test_the_projection_to_d_has_no_bias(d):
    import torch

    from harness.registry import Registry

    torch.set_num_threads(1)
    model = Registry().get("encoder", "open_clip").factory(model="harness-tiny-cnn", embed_dim=d).model
    head = model.visual.head.proj  # open_clip TimmModel, timm_proj linear, proj_bias False
    assert isinstance(head, torch.nn.Linear) and head.bias is None and head.weight.shape == (d, 64)
    assert isinstance(model.text_projection, torch.nn.Parameter) and model.text_projection.shape == (64, d)  # x @ W
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("visual.head", "text_projection")) and n.endswith("bias") for n in names)
    with torch.no_grad():
        x = model.encode_image(torch.zeros(2, 3, 32, 32))
    assert x.shape == (2, d)
