"""benchmarks/same_modality_factors.py: paired contrasts between the same-modality arms, checked by hand."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "same_modality_factors.py"
spec = importlib.util.spec_from_file_location("same_modality_factors", PATH)
factors = importlib.util.module_from_spec(spec)
spec.loader.exec_module(factors)


def toy() -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for init in ("separate", "shared"):
        for views in ("identical", "augmented"):
            for t, base in zip(factors.TEMPS, (0.12, 0.08, 0.04, 0.05)):
                for r in range(4):
                    cd = base + (0.01 if init == "shared" else 0.0) + 0.002 * r + rng.normal(0, 0.001)
                    rows.append({"objective": t, "encoder": f"{init} init · {views} views", "replicate": r, "status": "ok",
                                 "gap.centroid_distance": cd, "gap.linear_separability": 0.5})
    return pd.DataFrame(rows)


def test_contrasts_are_paired_by_replicate_with_holm_per_metric():
    data = toy()
    frame = factors.contrasts(factors.arms(data))
    cd = frame[frame["metric"] == "gap.centroid_distance"]
    assert len(cd) == 8 + 8 + 12 and set(cd["factor"]) == {"initialisation", "views", "temperature"}
    row = cd[(cd["factor"] == "temperature") & (cd["fixed.init"] == "shared") & (cd["fixed.views"] == "augmented")
             & (cd["a"] == "clip_t0.01")].iloc[0]
    enc = data[data["encoder"] == "shared init · augmented views"]
    a = enc[enc["objective"] == "clip_t0.01"].sort_values("replicate")["gap.centroid_distance"].to_numpy()
    b = enc[enc["objective"] == "clip_t0.07"].sort_values("replicate")["gap.centroid_distance"].to_numpy()
    assert row["diff"] == pytest.approx((a - b).mean()) and row["p_value"] == pytest.approx(ttest_rel(a, b).pvalue)
    ps = np.sort(cd["p_value"].to_numpy())
    m = len(ps)
    holm = np.minimum(1, np.maximum.accumulate([(m - i) * p for i, p in enumerate(ps)]))
    assert np.sort(cd["p_holm"].to_numpy()) == pytest.approx(holm)  # Holm over the metric's 28 contrasts


def test_a_contrast_of_equal_differences_gets_no_p():
    frame = factors.contrasts(factors.arms(toy()))
    sep = frame[frame["metric"] == "gap.linear_separability"]
    assert sep["p_value"].isna().all() and sep["p_holm"].isna().all()  # every arm at 0.5: nothing to test
    assert set(sep["note"]) == {"identical scores on every replicate: no t-test"} and not sep["significant"].any()


def test_bad_encoder_labels_are_refused():
    data = toy()
    data.loc[0, "encoder"] = "something else"
    with pytest.raises(SystemExit, match="encoder labels"):
        factors.arms(data)
