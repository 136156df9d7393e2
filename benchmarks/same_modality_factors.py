"""Which factor opens the gap in the same-modality control: paired contrasts between its arms.

    .venv/bin/python benchmarks/same_modality_factors.py leaderboard/same-modality/results.csv \
        --out leaderboard/same-modality/factors.csv

Reads the page's ``results.csv`` (``suites/same-modality.yaml``: encoders ``<separate|shared> init ·
<identical|augmented> views``, objectives ``clip_t0.01``, ``clip_t0.03``, ``clip_t0.07``,
``clip_learnable``) and, for each metric (centroid distance, linear separability), compares arms
that differ in one factor with the others held fixed, paired by replicate (the same world draw and
training seed): initialisation (shared − separate, per views × temperature), views (augmented −
identical, per initialisation × temperature) and temperature (0.01 − 0.07 and 0.03 − 0.07 fixed,
learnable − 0.07 fixed, per initialisation × views). Paired t (scipy ``ttest_rel``), Holm over all
contrasts of a metric: the leaderboard's own ``harness.leaderboard.stats.paired`` and ``holm``
(scipy ``ttest_rel``, statsmodels ``multipletests``); a contrast whose differences are all equal
gets no p (the reason in ``note``). Writes one row per contrast and prints a summary per factor.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

METRICS = ("gap.centroid_distance", "gap.linear_separability")
TEMPS = ("clip_t0.01", "clip_t0.03", "clip_t0.07", "clip_learnable")


def arms(results: pd.DataFrame) -> pd.DataFrame:
    ok = results[results["status"] == "ok"].copy()
    ok["init"] = ok["encoder"].str.extract(r"^(separate|shared) init")[0]
    ok["views"] = ok["encoder"].str.extract(r"(identical|augmented) views$")[0]
    if ok[["init", "views"]].isna().any().any():
        raise SystemExit("encoder labels must read '<separate|shared> init · <identical|augmented> views'")
    return ok


def contrast(ok: pd.DataFrame, metric: str, factor: str, a: dict, b: dict, fixed: dict) -> dict:
    """Arm ``a`` against arm ``b`` (the ``fixed`` settings shared), paired by replicate with the
    leaderboard's own test (``harness.leaderboard.stats.paired``: paired t, no p for a degenerate pair)."""
    from harness.leaderboard.stats import paired

    def values(sel: dict) -> pd.Series:
        rows = ok
        for k, v in {**fixed, **sel}.items():
            rows = rows[rows[k] == v]
        return rows.set_index("replicate")[metric].astype(float)

    va, vb = values(a), values(b)
    replicates = sorted(set(va.index) | set(vb.index))
    p = paired(va.reindex(replicates).to_numpy(), vb.reindex(replicates).to_numpy())
    return {"metric": metric, "factor": factor, **{f"fixed.{k}": v for k, v in fixed.items()},
            "a": " ".join(str(v) for v in a.values()), "b": " ".join(str(v) for v in b.values()), "n": p.n,
            "mean_a": p.mean_a, "mean_b": p.mean_b, "diff": p.diff, "test": "paired t", "p_value": p.p_value,
            "note": p.note}


def contrasts(ok: pd.DataFrame) -> pd.DataFrame:
    from harness.leaderboard.stats import holm

    rows = []
    for metric in METRICS:
        block = []
        for views in ("identical", "augmented"):
            for t in TEMPS:
                block.append(contrast(ok, metric, "initialisation", {"init": "shared"}, {"init": "separate"},
                                      {"views": views, "objective": t}))
        for init in ("separate", "shared"):
            for t in TEMPS:
                block.append(contrast(ok, metric, "views", {"views": "augmented"}, {"views": "identical"},
                                      {"init": init, "objective": t}))
        for init in ("separate", "shared"):
            for views in ("identical", "augmented"):
                for t in ("clip_t0.01", "clip_t0.03", "clip_learnable"):
                    block.append(contrast(ok, metric, "temperature", {"objective": t}, {"objective": "clip_t0.07"},
                                          {"init": init, "views": views}))
        tested = [i for i, r in enumerate(block) if np.isfinite(r["p_value"])]
        for r in block:
            r["p_holm"] = np.nan
        for i, p in zip(tested, holm([block[i]["p_value"] for i in tested])):
            block[i]["p_holm"] = float(p)
        rows += block
    frame = pd.DataFrame(rows)
    frame["significant"] = frame["p_holm"] < 0.05
    order = ["metric", "factor", "fixed.init", "fixed.views", "fixed.objective", "a", "b", "n", "mean_a", "mean_b",
             "diff", "test", "p_value", "p_holm", "significant", "note"]
    return frame[[c for c in order if c in frame]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    frame = contrasts(arms(pd.read_csv(args.results)))
    if args.out:
        frame.to_csv(args.out, index=False)
    for (metric, factor), g in frame.groupby(["metric", "factor"], sort=False):
        print(f"{metric} · {factor}: {int(g['significant'].sum())} of {len(g)} contrasts resolved (Holm over the "
              f"metric's {int((frame['metric'] == metric).sum())}); diff {g['diff'].min():+.3f} to {g['diff'].max():+.3f}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
