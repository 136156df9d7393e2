"""The sentences under each main-score table and in the page's "Across tables" part.

They never rank what the tests do not resolve: they name tiers ("tier 1: a, b, c"), never a "top"
or "best" objective, and say "not resolved" rather than "equal".
"""

from __future__ import annotations

import math

from harness.leaderboard.models import Friedman, Kendall
from harness.leaderboard.resample import RESAMPLES, SEED
from harness.leaderboard.stats import ALPHA, POWER, TEST


SOURCES = {"suite": "the suite's reference", "default": "the default reference",
           "first by label": "no clip here: the first trained objective by label"}


def _num(x: float) -> str:
    """3 significant digits (variances and differences span many scales)."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3g}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _names(objectives: list[str]) -> str:
    return ", ".join(objectives) if objectives else "none"


def tier_sentence(tier_of: dict[str, int]) -> str:
    if not tier_of:
        return ""
    n = max(tier_of.values())
    parts = [f"tier {t}: {_names([o for o, k in tier_of.items() if k == t])}" for t in range(1, n + 1)]
    return ("Tiers (" + "; ".join(parts) + "). Tier 1 is the objective with the best mean plus every objective the "
            "Holm-corrected paired tests do not resolve from it; each next tier repeats this on the objectives left. "
            "Within a tier nothing is ranked: the row order is the order of the means, not a ranking.")


def table_notes(stats) -> list[str]:
    """The notes of one table (``stats``: aggregate.TableStats)."""
    main, head = stats.main, stats.head
    if main is None:
        return [f"No main score for this table: {stats.why_none}. Objectives are not ranked or tested."]
    direction = "higher is better" if main.higher_is_better else "lower is better"
    source = "named by the suite" if main.source == "suite" else "declared by its evaluation"
    notes = [f"Main score: {main.description} ({main.pattern}; {direction}; {source})."
             + (f" Note: {main.note}." if main.note else "")]
    if head.tier_of:
        notes.append(tier_sentence(head.tier_of))
    n = head.replicates
    notes.append(f"{n} replicate{'s' if n != 1 else ''} (independent world draws; old runs: training seeds). "
                 f"CI and rank interval: percentile bootstrap over whole replicates ({RESAMPLES:,} resamples, "
                 f"numpy seed {SEED}); with few replicates both are too narrow."
                 + (" With fewer than 2 replicates nothing is tested: every objective shares tier 1." if n < 2 else ""))
    if head.untrained:
        notes.append(f"Untrained (0 training steps; not in the contrasts, the mixed model or Friedman's test): "
                     f"{_names(head.untrained)}.")
    con = head.contrasts
    if head.reference is not None:
        tested = int(con["p_value"].notna().sum())
        resolved = _names(list(con.loc[con["significant"], "objective"]))
        how = SOURCES.get(head.reference_source, head.reference_source)
        text = (f"Planned contrasts: each trained objective against {head.reference} ({how}), "
                f"{TEST} over the replicates both ran, Holm over the {tested} tested: resolved: {resolved}.")
        notes.append(text + (f" Note: {head.reference_note}." if head.reference_note else ""))
    elif head.reference_note:
        notes.append(f"No planned contrasts: {head.reference_note}.")
    det = head.detectable
    if det is not None:
        text = (f"Smallest difference these replicates resolve ({TEST}, df = n − 1, α = {ALPHA}, power {POWER}, "
                f"n = {det.n} replicates, SD of the paired differences {_num(det.sd_diff)} pooled over the contrasts): "
                f"{_num(det.mdd)}")
        if det.mdd_holm is not None:
            text += f"; at Holm's first step over the {det.contrasts} contrasts (α = {ALPHA}/{det.contrasts}): {_num(det.mdd_holm)}"
        notes.append(text + ". A smaller true difference mostly reads \"n.s.\": not resolved, not equal. The "
                     "contrasts table says how many replicates would resolve each unresolved contrast.")
    mx = head.mixed
    if math.isnan(mx.world_var):
        notes.append(f"Mixed model (score ~ objective + a random intercept per replicate): {mx.note}.")
    else:
        notes.append(f"Mixed model (statsmodels MixedLM, REML: score ~ objective + a random intercept per world, "
                     f"trained objectives, {mx.n_obs} scores on {mx.n_worlds} replicates): between-world variance "
                     f"{_num(mx.world_var)} (SD {_num(math.sqrt(mx.world_var))}), residual variance {_num(mx.resid_var)} "
                     f"(SD {_num(math.sqrt(mx.resid_var))})." + (f" Note: {mx.note}." if mx.note else ""))
    if head.friedman is not None:
        notes.append(friedman_sentence(head.friedman))
    notes += [kendall_sentence(k) for k in head.kendall if _rankable(k)]
    return notes


def _rankable(k: Kendall) -> bool:
    """Whether a Kendall pair is worth a sentence: pairs of tables with fewer than 3 shared trained
    objectives (a sweep of one objective over encoders) have no τ to give; ``across.csv`` keeps their note."""
    return len(k.objectives) >= 3


def friedman_sentence(fr: Friedman) -> str:
    kind = fr.kind.replace("replicates", "replicate").replace("cells", "cell") if len(fr.blocks) == 1 else fr.kind
    text = (f"Mean rank over {len(fr.blocks)} {kind} (independent blocks; trained objectives; 1 = best; "
            f"ranked within each block)")
    if not math.isnan(fr.p_value):
        text += (f": Friedman χ² = {fr.statistic:.2f}, p = {_p(fr.p_value)}; Nemenyi critical difference "
                 f"{fr.cd:.2f} (α = {ALPHA}): mean ranks closer than that are not distinguishable")
    elif fr.note:
        text += f": {fr.note}"
    if fr.dropped_objectives:
        text += f". Left out (a score on fewer than 2 blocks): {_names(fr.dropped_objectives)}"
    if fr.dropped_blocks:
        text += f". Left out (missing an objective): {len(fr.dropped_blocks)} block{'s' if len(fr.dropped_blocks) != 1 else ''}"
    return text + "."


def kendall_sentence(k: Kendall) -> str:
    head = f"Kendall's τ of the trained objectives' means, {k.dataset}: {k.encoder_a} against {k.encoder_b}"
    if math.isnan(k.tau):
        return f"{head}: {k.note}."
    return f"{head}: τ = {k.tau:.2f}, p = {_p(k.p_value)} ({len(k.objectives)} objectives)."


def across_notes(agg) -> list[str]:
    """The page's "Across tables" paragraph (``agg``: aggregate.Aggregate); empty with one table."""
    out = []
    if agg.across is not None:
        out.append(friedman_sentence(agg.across) + " Objectives: those trained in every table.")
    out += [kendall_sentence(k) for k in agg.kendall if _rankable(k)]
    return out
