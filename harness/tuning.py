"""Tuning with an equal budget: a stage of ordinary jobs in front of the suite's grid.

A suite's ``tune:`` section names a grid of values per objective, the seeds to tune on and the
metric to select by::

    tune:
      grid: {train.lr: [3.0e-4, 1.0e-3, 3.0e-3]}       # every trained objective
      objectives: {clip: {params.temperature: [0.03, 0.07]}}   # optional, per objective label
      seeds: [0]
      metric: zeroshot_classification.mean_top1         # default: the main score
      mode: max                                         # max or min (default: the main score's direction)

Keys are ``train.<field>`` (any ``train`` setting) or ``params.<name>`` (a loss parameter). Every
tuned objective gets the same number of trials (Musgrave et al. 2020: compare losses at equal tuning
effort); rows with ``train: {steps: 0}`` are not tuned. Stage 1 runs each trial on the tuning
seeds as ordinary jobs (stored, resumable, either executor) that evaluate on the dataset's
*validation* split (``eval_sets(split="validation")``), never on a reported set. The selection
reads their results from the store: per objective, encoder and dataset, the trial with the best
mean metric over the tuning seeds (ties: the first in grid order). The final jobs are the suite's
grid with the chosen values; they record them (``tuned``) and the budget (``tuning``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Literal

from pydantic import Field, field_validator

from harness.columns import first_mean, flatten
from harness.config import Seed, Strict, TrainConfig, check_scale, format_validation_error
from harness.errors import HarnessError, short_repr
from harness.job import Job, PluginSpec

KEY = r"^(train|params)\.[A-Za-z_][A-Za-z0-9_]*$"
MAX_TRIALS = 1000


class TuneConfig(Strict):
    """The ``tune:`` section of a suite."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)
    objectives: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, max_length=100)
    metric: str | None = Field(default=None, min_length=1, max_length=200)
    mode: Literal["max", "min"] | None = None

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        _refuse_duplicates(v, "seeds")
        return v

    @field_validator("grid")
    @classmethod
    def _keys(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        _check_grid(v)
        return v

    @field_validator("objectives")
    @classmethod
    def _objective_keys(cls, v: dict[str, dict[str, list[Any]]]) -> dict[str, dict[str, list[Any]]]:
        for grid in v.values():
            _check_grid(grid)
        return v


def _check_grid(grid: dict[str, list[Any]]) -> None:
    import re

    for key, values in grid.items():
        if not re.match(KEY, key):
            raise ValueError(f"grid key {short_repr(key)} must be train.<field> or params.<name>")
        if not values:
            raise ValueError(f"grid key {key!r} needs at least one value")
        if len(values) > MAX_TRIALS:
            raise ValueError(f"grid key {key!r} has more than {MAX_TRIALS} values")
        _refuse_duplicates(values, f"grid key {key!r}")


def _refuse_duplicates(values: list[Any], what: str) -> None:
    """``ValueError`` when two values are equal (``1`` and ``1.0`` too): a trial or seed run twice."""
    for i, a in enumerate(values):
        for b in values[:i]:
            if (type(a) is bool) == (type(b) is bool) and a == b:  # True is not 1, but 1 is 1.0
                raise ValueError(f"{what} lists {short_repr(b)} and {short_repr(a)}: the same value twice")


def trials_of(tune: TuneConfig, label: str) -> list[dict[str, Any]]:
    """The trials of the objective labelled ``label``: the grid product, its own keys replacing the common ones."""
    grid = {**tune.grid, **tune.objectives.get(label, {})}
    keys = list(grid)
    count = math.prod(len(grid[k]) for k in keys)  # before building any: a short grid can multiply out huge
    if count > MAX_TRIALS:
        raise HarnessError(f"tune: objective {short_repr(label)} has {count:,} trials (the product of its grid's "
                           f"value counts), more than {MAX_TRIALS}")
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def apply_trial(trial: dict[str, Any], spec: PluginSpec, train: dict[str, Any], registry, where: str,
                resources=None) -> tuple[PluginSpec, dict]:
    """The objective spec and train config with the trial's values, validated like the suite's own
    (the loss's params, the train config, and with ``resources`` how they fit together).

    The spec keeps its label, so a tuned objective is the same row of the leaderboard.
    """
    params, train = dict(spec.params), dict(train)
    for key, value in trial.items():
        section, _, name = key.partition(".")
        (params if section == "params" else train)[name] = value
    resolved = registry.get("loss", spec.name).resolve(params, where=f"{where}.params")
    try:
        cfg = TrainConfig.model_validate(train)
    except ValueError as exc:  # pydantic.ValidationError: a grid value the train config refuses
        raise HarnessError(format_validation_error(exc, "", prefix=f"{where}.train")[2:]) from None
    if resources is not None:
        check_scale(cfg, resources, f"{where}.train")
    return PluginSpec(spec.name, resolved, label=spec.display), cfg.model_dump()


def expand_tuning(suite, objectives, encoders, datasets, evaluations, registry) -> dict[int, list[dict[str, Any]]]:
    """Check the ``tune:`` section against the suite; returns objective index -> its trials (tuned ones only)."""
    tune: TuneConfig = suite.tune
    labels = {spec.display for _, spec, _ in objectives}
    for label in tune.objectives:
        if label not in labels:
            raise HarnessError(f"tune.objectives.{label}: no objective has this label; labels: {', '.join(sorted(labels))}")
    for d, ds in enumerate(datasets):
        if "validation" not in registry.get("dataset", ds.name).info.splits:
            raise HarnessError(f"tune: dataset {ds.name!r} (datasets[{d}]) has no validation split to tune on; "
                               f"tuning never selects on a reported set")
    check_metric(tune.metric, suite.main_score, evaluations, registry)
    out: dict[int, list[dict[str, Any]]] = {}
    for i, spec, train in objectives:
        if train.steps == 0:
            continue  # an untrained row: nothing to tune
        trials = trials_of(tune, spec.display)
        if len(trials) > MAX_TRIALS:
            raise HarnessError(f"tune: objectives[{i}] has {len(trials)} trials, more than {MAX_TRIALS}")
        for t, trial in enumerate(trials):
            apply_trial(trial, spec, train.model_dump(), registry, f"tune (objectives[{i}], trial {t})", suite.resources)
        out[i] = trials
    sizes = {objectives[i][1].display: len(t) for i, t in out.items()}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise HarnessError(f"tune: every objective must get the same number of trials (equal budget); got {listing}")
    return out


def check_metric(metric: str | None, main_score: str | None, evaluations, registry) -> None:
    """There is something to select trials by, before any trial runs (one-line ``HarnessError``).

    ``tune.metric`` must be ``<evaluation>.<key>`` of one of the suite's evaluations, and its last
    component a metric that evaluation declares (its ``metric_info`` or main score; ``*`` matches
    any) when it declares any. Without ``tune.metric`` the suite's ``main_score`` or an evaluation's
    declared main score selects; a suite with none of them is refused.
    """
    by_label = {e.display: e for e in evaluations}
    if metric is None:
        declared = [e for e in evaluations if registry.get("evaluation", e.name).info.main_score is not None]
        if main_score is None and not declared:
            raise HarnessError("tune.metric: no evaluation of this suite declares a main score to select trials by; "
                               "set tune.metric to '<evaluation>.<key>'")
        return
    head, _, key = metric.partition(".")
    if head not in by_label or not key:
        raise HarnessError(f"tune.metric: expected '<evaluation>.<key>' with one of the suite's evaluations "
                           f"({', '.join(by_label)}), got {short_repr(metric)}")
    spec = by_label[head]
    known = known_leaves(spec, registry)
    leaf = key.rsplit(".", 1)[-1]
    if known and leaf != "*" and leaf not in known:
        raise HarnessError(f"tune.metric: evaluation {head!r} reports no metric {leaf!r}; its metrics: "
                           f"{', '.join(sorted(known))}")


def known_leaves(spec: PluginSpec, registry) -> set[str]:
    """The leaf metric names an evaluation declares: its ``metric_info`` keys and its main score's last key."""
    from harness.registry import guarded

    entry = registry.get("evaluation", spec.name)
    try:
        evaluation = guarded(entry.create, **spec.params)
    except Exception:  # its own errors are reported where the suite builds it
        return set()
    info = getattr(evaluation, "metric_info", None)
    leaves = {str(k) for k in info} if isinstance(info, dict) else set()
    if entry.info.main_score is not None:
        leaves.add(entry.info.main_score.key.rsplit(".", 1)[-1])
    return leaves


def tuning_jobs(base: list[Job], trials: dict[int, list[dict[str, Any]]], objectives, suite, registry) -> list[Job]:
    """Stage 1: each trial of each tuned objective, on the tuning seeds, evaluated on the validation split."""
    from dataclasses import replace

    index = {spec.display: (i, spec, train) for i, spec, train in objectives}
    jobs, seen = [], set()
    for job in base:
        i, spec, train = index[job.objective.display]
        if i not in trials:
            continue
        key = (i, job.encoder.display, job.dataset.display)
        if key in seen:
            continue
        seen.add(key)
        for t, trial in enumerate(trials[i]):
            obj, cfg = apply_trial(trial, spec, train.model_dump(), registry, f"tune (objectives[{i}], trial {t})")
            for seed in suite.tune.seeds:
                jobs.append(replace(job, objective=obj, train=cfg, seed=seed, split="validation", stage="tune",
                                    trial=dict(trial), tuning=tuning_record(suite, trials[i])))
    return jobs


def tuning_record(suite, trials: list[dict[str, Any]]) -> dict[str, Any]:
    return {"trials": len(trials), "seeds": list(suite.tune.seeds), "metric": suite.tune.metric or suite.main_score}


def trial_score(result: dict[str, Any] | None, metric: str | None) -> tuple[float, bool] | None:
    """(score, higher_is_better) of one finished tuning job, or None when it failed or has no value.

    ``metric`` is a column pattern; without one, the job's declared main score (the first with values).
    """
    if not result or result.get("status") != "ok":
        return None
    columns = [(".".join(keys), v) for keys, v in flatten(result.get("metrics") or {})]
    if metric is not None:
        hit = first_mean(columns, [metric])
        return (hit[1], _direction(result, metric)) if hit else None
    decls = list((result.get("main_scores") or {}).items())
    hit = first_mean(columns, (f"{name}.{decl['key']}" for name, decl in decls))
    return (hit[1], bool(decls[hit[0]][1].get("higher_is_better", True))) if hit else None


def _direction(result: dict[str, Any], metric: str) -> bool:
    head, _, key = metric.partition(".")
    decl = (result.get("main_scores") or {}).get(head)
    if decl and decl.get("key") == key:
        return bool(decl.get("higher_is_better", True))
    leaf = (result.get("metric_info") or {}).get(head, {}).get(key.rsplit(".", 1)[-1], {})
    return leaf.get("higher_is_better") is not False


def select(tune_jobs: list[Job], store, mode: str | None) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(objective label, encoder, dataset) -> the chosen trial, from the stored tuning results.

    The best mean over the tuning seeds of the trials whose every seed finished; ties go to the
    first trial in grid order. A combination none of whose trials finished is absent.
    """
    groups: dict[tuple[str, str, str], dict[str, list]] = {}
    order: dict[tuple[str, str, str], list[str]] = {}
    for job in tune_jobs:
        key = (job.objective.display, job.encoder.display, job.dataset.display)
        trial_key = repr(sorted(job.trial.items()))
        order.setdefault(key, [])
        if trial_key not in order[key]:
            order[key].append(trial_key)
        groups.setdefault(key, {}).setdefault(trial_key, []).append((job, trial_score(store.result(job.id), job.tuning["metric"])))
    chosen = {}
    for key, trials in groups.items():
        best = None  # (signed mean, trial, mean)
        for trial_key in order[key]:
            scored = trials[trial_key]
            if any(s is None for _, s in scored):
                continue  # a trial with a failed seed is not comparable at equal budget
            mean = sum(score for _, (score, _) in scored) / len(scored)
            higher = scored[0][1][1] if mode is None else mode == "max"
            signed = mean if higher else -mean
            if math.isfinite(signed) and (best is None or signed > best[0]):
                best = (signed, scored[0][0].trial, mean)
        if best is not None:
            chosen[key] = {"trial": dict(best[1]), "score": best[2]}
    return chosen


def final_jobs(base: list[Job], trials: dict[int, list[dict[str, Any]]], objectives, chosen, suite, registry) -> tuple[list[Job], list[tuple[Job, str]]]:
    """Stage 2: the suite's grid with each objective's chosen values; (jobs, [(job, why) that cannot run])."""
    from dataclasses import replace

    index = {spec.display: (i, spec, train) for i, spec, train in objectives}
    jobs, missing = [], []
    for job in base:
        i, spec, train = index[job.objective.display]
        if i not in trials:
            jobs.append(job)  # not tuned (an untrained row)
            continue
        pick = chosen.get((job.objective.display, job.encoder.display, job.dataset.display))
        if pick is None:
            missing.append((job, "no tuning trial of this objective finished on every tuning seed"))
            continue
        obj, cfg = apply_trial(pick["trial"], spec, train.model_dump(), registry, f"objectives[{i}]")
        jobs.append(replace(job, objective=obj, train=cfg, tuned=dict(pick["trial"]),
                            tuning={**tuning_record(suite, trials[i]), "validation_score": pick["score"]}))
    return jobs, missing
