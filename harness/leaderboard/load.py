"""Read a run store (``runs/<suite>/<job_id>/result.json``) into one pandas row per job.

Directories whose name starts with ``.`` (``.tmp/``, ``.locks/``) and directories without a
``result.json`` are ignored. A metric column is ``<evaluation>.<key>.<key>`` (nested keys joined by
dots, e.g. ``gap.centroid_distance``, ``zeroshot_classification.shape.top1``); how it is shown comes
from the result's ``metric_info[<evaluation>][<leaf key>]`` (unknown: group ``downstream``, no
direction; the ``train`` evaluation defaults to group ``train``).

Fields read besides ``status``, ``job``, ``metrics``, ``metric_info``, ``skipped``, ``env``, ``error``
(all optional; a malformed one is a one-line ``HarnessError`` naming the file and the field):

- ``main_scores``: {evaluation key: {"key": dotted path, one component may be ``*``,
  "higher_is_better": bool, "description": str}}, in the suite's evaluation order;
- ``reference_rows``: {row label: {metric column: number}} (chance, oracles, raw-pixel probe...);
- ``job.main_score``: the suite's explicit choice, ``"<evaluation>.<key>"`` (``*`` allowed);
- ``job.stage``: ``"tune"`` marks a tuning job (kept apart: ``RunStore.tuning``), anything else is final;
- ``job.trial`` (tuning jobs) and ``job.tuned`` (final jobs): {"train.lr": 0.001, ...};
- ``job.tuning`` (final jobs of a tuned suite, optionally tuning jobs): {"trials": n, "seeds": [...], "metric": column};
- ``job.train.lr``: the learning rate, shown as the ``train.lr`` column.

Hostile input stays bad input: a result.json that is a symbolic link, a FIFO or a device, larger
than ``MAX_BYTES``, nested deeper than ``MAX_DEPTH``, holding an integer literal of more than
``MAX_INT_DIGITS`` digits, a number literal that overflows a float (``1e400``) or more than
``MAX_METRICS`` metric values is refused with one line naming it (``harness.safefiles`` reads it);
so is a store whose results hold more than ``MAX_METRICS`` metric columns in all. ``NaN``/``Infinity``
(what ``json.dumps`` writes for them) are accepted as values. Labels, metric keys, errors and
environment strings are made printable (terminal escapes shown escaped); an environment number that
is not finite or beyond ``MAX_ENV_NUMBER`` is dropped (it only feeds the provenance lines).

Only the jobs of the suite's current configuration are read: those ``.suite.json`` lists
(``harness.leaderboard.current``); ``RunStore.left_out`` counts the others.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from harness.columns import flatten
from harness.errors import HarnessError, printable
from harness.safefiles import MAX_DEPTH, MAX_INT_DIGITS, Refused, parse_json, read_bytes  # noqa: F401 (documented limits)
from harness.store import MAX_RESULT_BYTES

RESULT = "result.json"
ID_COLUMNS = ["objective", "encoder", "dataset", "seed", "replicate", "dataset_seed", "status"]
LR_COLUMN = "train.lr"  # each job's job.train.lr
RESERVED = frozenset(ID_COLUMNS) | {LR_COLUMN, "main_score"}  # metric columns never take these names
MAX_BYTES = MAX_RESULT_BYTES  # a result.json is a few KiB; one larger than this is not one
MAX_METRICS = 20_000  # metric values in one result, and metric columns in all (harness.jsonsafe stores fewer)
MAX_ENV_NUMBER = 1e15
MAX_WALK_DEPTH = 4  # OUT/<suite>/<job>/result.json, pointed at OUT: results are at most this deep
MAX_SEED = 2**63 - 1
GROUPS = ("gap", "downstream", "train")
TRAIN_DISPLAY = {"final_loss": "final loss", "samples_per_s": "samples/s"}


@dataclass(frozen=True)
class Metric:
    """One metric column and how to show it."""

    column: str  # e.g. "zeroshot_classification.shape.top1"
    evaluation: str  # the key under result["metrics"], e.g. "zeroshot_classification"
    plugin: str  # the evaluation plugin's name (the key may be a label)
    middle: tuple[str, ...]  # keys between the evaluation and the leaf, e.g. ("shape",)
    leaf: str  # e.g. "top1"
    display: str
    group: str  # "gap" | "downstream" | "train"
    higher_is_better: bool | None


@dataclass(frozen=True)
class Declaration:
    """An evaluation's declared main score (``result["main_scores"][evaluation]``)."""

    evaluation: str  # the key under metrics (label or name)
    key: str  # dotted path under that evaluation's metrics; one component may be "*"
    higher_is_better: bool
    description: str

    @property
    def pattern(self) -> str:
        return f"{self.evaluation}.{self.key}"


@dataclass
class Run:
    """One job's result."""

    dir: Path
    job: dict[str, Any]
    status: str
    objective: str
    encoder: str
    dataset: str
    seed: int
    values: dict[str, float]
    env: dict[str, Any]
    error: str | None
    skipped: dict[str, str]
    stage: str = "final"  # "tune" for a tuning job
    lr: float = math.nan  # job.train.lr
    declarations: tuple[Declaration, ...] = ()
    explicit_main_score: str | None = None  # job.main_score
    reference_rows: dict[str, dict[str, float]] = field(default_factory=dict)
    trial: dict[str, Any] = field(default_factory=dict)  # tuning jobs: the values tried
    tuned: dict[str, Any] = field(default_factory=dict)  # final jobs of a tuned suite: the values chosen
    tuning: dict[str, Any] = field(default_factory=dict)  # {"trials": n, "seeds": [...], "metric": column}
    replicate: int = 0  # job.replicate (the world draw shared by every objective), else the seed
    dataset_seed: int | None = None  # job.dataset.params.seed, when given

    @property
    def error_line(self) -> str:
        lines = [line.strip() for line in (self.error or "").splitlines() if line.strip()]
        line = printable(lines[0]) if lines else "(no error message recorded)"
        return line if len(line) <= 200 else line[:199] + "…"


@dataclass
class RunStore:
    """Every job under a runs directory, plus the metric columns they report (in first-seen order).

    ``runs`` are the final jobs (the leaderboard's rows); ``tuning`` the jobs of a tuning stage
    (``job.stage == "tune"``), with their own metric columns in ``tuning_metrics``.
    """

    runs_dir: Path
    suite: str
    runs: list[Run]
    metrics: dict[str, Metric] = field(default_factory=dict)
    tuning: list[Run] = field(default_factory=list)
    tuning_metrics: dict[str, Metric] = field(default_factory=dict)
    left_out: int = 0  # jobs of an earlier configuration of the suite (not in its .suite.json)
    expected: int | None = None  # jobs of the suite's last `harness run` (.suite.json), when recorded
    missing: list[str] = field(default_factory=list)  # those without a result yet (their descriptions)

    def frame(self) -> pd.DataFrame:
        """results.csv without main_score: objective, encoder, dataset, seed, status, train.lr, then one column per metric."""
        return _frame(self.runs, self.metrics)

    def tuning_frame(self) -> pd.DataFrame:
        """The tuning jobs: the same columns as ``frame`` (their own metric columns)."""
        return _frame(self.tuning, self.tuning_metrics)


def _frame(runs: list[Run], metrics: dict[str, Metric]) -> pd.DataFrame:
    rows = [
        {"objective": r.objective, "encoder": r.encoder, "dataset": r.dataset, "seed": r.seed,
         "replicate": r.replicate, "dataset_seed": r.dataset_seed, "status": r.status, LR_COLUMN: r.lr, **r.values}
        for r in runs
    ]
    df = pd.DataFrame(rows, columns=ID_COLUMNS + [LR_COLUMN] + list(metrics))
    df["seed"] = df["seed"].astype(int)
    df["replicate"] = df["replicate"].astype(int)
    df["dataset_seed"] = df["dataset_seed"].astype("Int64")  # empty for a dataset without a seed
    df[LR_COLUMN] = df[LR_COLUMN].astype(float)
    return df


def _result_files(root: Path) -> Iterator[Path]:
    """Each result.json under ``root``, at most ``MAX_WALK_DEPTH`` deep; never below a job's own
    directory (its embeddings/), never into ``.``-directories or through a link to a directory."""
    for here, dirs, files in os.walk(root):
        depth = len(Path(here).relative_to(root).parts)
        if RESULT in files:
            dirs[:] = []
            yield Path(here) / RESULT
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_WALK_DEPTH else []


def _label(spec: Any, where: str, path: Path) -> str:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise HarnessError(f"{path}: job.{where} must be a mapping with a name")
    if spec.get("label"):
        return printable(spec["label"])
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        raise HarnessError(f"{path}: job.{where}.params must be a mapping")
    inner = ",".join(f"{k}={v!r}" for k, v in sorted(params.items()))
    return printable(f"{spec['name']}({inner})" if inner else spec["name"])


def _plugin_names(job: dict[str, Any]) -> dict[str, str]:
    """Map a metrics key (an evaluation's label or name) to the evaluation plugin's name."""
    names: dict[str, str] = {}
    for ev in job.get("evaluations") or []:
        if isinstance(ev, dict) and isinstance(ev.get("name"), str):
            names.setdefault(ev["name"], ev["name"])
            if ev.get("label"):
                names[str(ev["label"])] = ev["name"]
    return names


def _metric(column: str, keys: tuple[str, ...], plugin: str, info: Any) -> Metric:
    evaluation, leaf = keys[0], keys[-1]
    info = info if isinstance(info, dict) else {}
    default_group = "train" if evaluation == "train" else "downstream"
    group = info.get("group") if info.get("group") in GROUPS else default_group
    hib = info.get("higher_is_better")
    display = info.get("display") or TRAIN_DISPLAY.get(leaf) or leaf.replace("_", " ")
    return Metric(
        column=column,
        evaluation=evaluation,
        plugin=plugin,
        middle=tuple(keys[1:-1]),
        leaf=leaf,
        display=printable(str(display)),
        group=group,
        higher_is_better=hib if isinstance(hib, bool) else None,
    )


def _read(path: Path) -> dict[str, Any]:
    """A result.json read as hostile data (``harness.safefiles``): never a link, FIFO or device,
    at most ``MAX_BYTES``, refused with one line naming the file."""
    try:
        data = parse_json(read_bytes(path, MAX_BYTES))
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Refused as exc:
        raise HarnessError(f"{path}: corrupt result ({exc})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: corrupt result (expected a JSON object, got {type(data).__name__})")
    return data


def _mapping(value: Any, path: Path, field_name: str) -> dict[str, Any]:
    """An optional mapping field: {} when absent or null, else it must be a JSON object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HarnessError(f"{path}: corrupt result ({field_name} must be a mapping, got {type(value).__name__})")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _declarations(raw: Any, path: Path) -> tuple[Declaration, ...]:
    out = []
    for evaluation, spec in _mapping(raw, path, "main_scores").items():
        where = f"main_scores.{evaluation}"
        spec = _mapping(spec, path, where)
        key, hib, desc = spec.get("key"), spec.get("higher_is_better"), spec.get("description", "")
        if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
            raise HarnessError(f"{path}: corrupt result ({where}.key must be a dotted metric path, got {key!r:.60})")
        if not isinstance(hib, bool):
            raise HarnessError(f"{path}: corrupt result ({where}.higher_is_better must be true or false)")
        if not isinstance(desc, str):
            raise HarnessError(f"{path}: corrupt result ({where}.description must be a string)")
        evaluation, key, desc = printable(str(evaluation)), printable(key), printable(desc)
        out.append(Declaration(evaluation, key, hib, desc or f"{evaluation}.{key}"))
    return tuple(out)


def _reference_rows(raw: Any, path: Path) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for label, values in _mapping(raw, path, "reference_rows").items():
        values = _mapping(values, path, f"reference_rows.{label}")
        row = {}
        for column, value in values.items():
            if value is not None and not _is_number(value):
                raise HarnessError(f"{path}: corrupt result (reference_rows.{label}.{column} must be a number)")
            row[printable(str(column))] = math.nan if value is None else float(value)
        rows[printable(str(label))] = row
    return rows


def _env(raw: Any) -> dict[str, Any]:
    """A job's environment record for the provenance lines: strings printable, numbers finite and
    below ``MAX_ENV_NUMBER`` (others dropped), one level of mappings (``packages``)."""
    def clean(value: Any, nested: bool) -> Any:
        if isinstance(value, str):
            return printable(value[:500])
        if _is_number(value):
            return value if math.isfinite(value) and abs(value) < MAX_ENV_NUMBER else None
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, dict) and not nested:
            return {printable(str(k)[:100]): clean(v, True) for k, v in list(value.items())[:200]}
        return None

    if not isinstance(raw, dict):
        return {}
    cleaned = {printable(str(k)[:100]): clean(v, False) for k, v in list(raw.items())[:200]}
    return {k: v for k, v in cleaned.items() if v is not None}


def _scalars(raw: Any, path: Path, field_name: str) -> dict[str, Any]:
    """job.trial / job.tuned: {name: number or string}."""
    out = {}
    for key, value in _mapping(raw, path, field_name).items():
        if not (_is_number(value) or isinstance(value, (str, bool)) or value is None):
            raise HarnessError(f"{path}: corrupt result ({field_name}.{key} must be a number or a string)")
        out[printable(str(key))] = printable(value) if isinstance(value, str) else value
    return out


def _tuning(raw: Any, path: Path) -> dict[str, Any]:
    tuning = _mapping(raw, path, "job.tuning")
    trials, seeds, metric = tuning.get("trials"), tuning.get("seeds"), tuning.get("metric")
    if trials is not None and (not isinstance(trials, int) or isinstance(trials, bool)):
        raise HarnessError(f"{path}: corrupt result (job.tuning.trials must be an integer)")
    if seeds is not None and (not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
        raise HarnessError(f"{path}: corrupt result (job.tuning.seeds must be a list of integers)")
    if metric is not None and not isinstance(metric, str):
        raise HarnessError(f"{path}: corrupt result (job.tuning.metric must be a string)")
    return {"trials": trials, "seeds": seeds, "metric": None if metric is None else printable(metric)}


def _run(path: Path, data: dict[str, Any], final_metrics: dict[str, Metric], tuning_metrics: dict[str, Metric]) -> Run:
    status = data.get("status")
    if status not in ("ok", "failed"):
        raise HarnessError(f"{path}: corrupt result (status must be 'ok' or 'failed', got {status!r})")
    job = data.get("job")
    if not isinstance(job, dict):
        raise HarnessError(f"{path}: corrupt result (no 'job' record)")
    seed = job.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or abs(seed) > MAX_SEED:
        raise HarnessError(f"{path}: corrupt result (job.seed must be an integer below 2**63, got {seed!r:.40})")
    labels = {k: _label(job.get(k), k, path) for k in ("objective", "encoder", "dataset")}
    replicate = seed if job.get("replicate") is None else job["replicate"]  # old runs: the seed is the replicate
    if not isinstance(replicate, int) or isinstance(replicate, bool) or abs(replicate) > MAX_SEED:
        raise HarnessError(f"{path}: corrupt result (job.replicate must be an integer below 2**63, got {replicate!r:.40})")
    world = job["dataset"].get("params") if isinstance(job["dataset"].get("params"), dict) else {}
    world = world.get("seed") if isinstance(world.get("seed"), int) and not isinstance(world.get("seed"), bool) else None
    world = world if world is not None and abs(world) <= MAX_SEED else None
    stage = job.get("stage")
    if stage is not None and not isinstance(stage, str):
        raise HarnessError(f"{path}: corrupt result (job.stage must be a string)")
    stage = "tune" if stage == "tune" else "final"
    if stage == "tune" and isinstance(job.get("objective_label"), str) and job["objective_label"]:
        labels["objective"] = job["objective_label"]  # the label of the objective being tuned, when given apart
    explicit = job.get("main_score")
    explicit = printable(explicit) if isinstance(explicit, str) else explicit
    if explicit is not None and (not isinstance(explicit, str) or "." not in explicit):
        raise HarnessError(f"{path}: corrupt result (job.main_score must be a string '<evaluation>.<key>')")
    train = job.get("train") if isinstance(job.get("train"), dict) else {}
    lr = float(train["lr"]) if _is_number(train.get("lr")) else math.nan
    raw = data.get("metrics") or {}
    info = data.get("metric_info") or {}
    if not isinstance(raw, dict) or not isinstance(info, dict):
        raise HarnessError(f"{path}: corrupt result (metrics and metric_info must be mappings)")
    if not isinstance(job.get("evaluations") or [], list):
        raise HarnessError(f"{path}: corrupt result (job.evaluations must be a list)")
    metrics = tuning_metrics if stage == "tune" else final_metrics
    plugins = _plugin_names(job)
    values: dict[str, float] = {}
    if sum(1 for _ in itertools.islice(flatten(raw), MAX_METRICS + 1)) > MAX_METRICS:
        raise HarnessError(f"{path}: corrupt result (more than {MAX_METRICS} metric values)")
    for keys, value in flatten(raw):
        if len(keys) < 2:
            continue  # a bare number directly under "metrics" has no evaluation
        keys = tuple(printable(k) for k in keys)
        column = ".".join(keys)
        if column in RESERVED:
            continue  # would shadow an identity column (e.g. a metric "train.lr"): the job's own value wins
        values[column] = value
        if column not in metrics:
            leaf_info = (info.get(keys[0]) or {}).get(keys[-1]) if isinstance(info.get(keys[0]), dict) else None
            metrics[column] = _metric(column, keys, plugins.get(keys[0], keys[0]), leaf_info)
            if len(metrics) > MAX_METRICS:
                raise HarnessError(f"{path}: the results hold more than {MAX_METRICS} metric columns in all; "
                                   f"this one adds new columns past that (a corrupt or foreign result?)")
    skipped = data.get("skipped") or {}
    return Run(
        dir=path.parent,
        job=job,
        status=status,
        seed=seed,
        values=values,
        env=_env(data.get("env")),
        error=str(data["error"])[:20000] if data.get("error") is not None else None,
        skipped={printable(str(k)): printable(str(v)[:2000]) for k, v in skipped.items()} if isinstance(skipped, dict) else {},
        stage=stage,
        lr=lr,
        declarations=_declarations(data.get("main_scores"), path),
        explicit_main_score=explicit,
        reference_rows=_reference_rows(data.get("reference_rows"), path),
        trial=_scalars(job.get("trial"), path, "job.trial"),
        tuned=_scalars(job.get("tuned"), path, "job.tuned"),
        tuning=_tuning(job.get("tuning"), path),
        replicate=replicate,
        dataset_seed=world,
        **labels,
    )


def load_runs(runs_dir: str | Path) -> RunStore:
    """Every ``result.json`` under ``runs_dir``; bad input raises a one-line ``HarnessError``."""
    root = Path(runs_dir)
    if not root.exists():
        raise HarnessError(f"{root}: no such directory (expected a results directory such as runs/<suite>)")
    if not root.is_dir():
        raise HarnessError(f"{root}: not a directory (expected a results directory such as runs/<suite>)")
    from harness.leaderboard.current import Current, check_not_pooled

    metrics: dict[str, Metric] = {}
    tuning_metrics: dict[str, Metric] = {}
    current = Current(root)
    everything = [_run(path, _read(path), metrics, tuning_metrics) for path in _result_files(root) if current.keep(path)]
    if not everything and current.left_out:
        raise HarnessError(f"{root}: none of its {current.left_out} result(s) is a job of the suite's current "
                           f"configuration (.suite.json); run the suite (harness run SUITE)")
    if not everything:
        raise HarnessError(f"{root}: no result.json under it; run a suite first (harness run SUITE)")
    check_not_pooled(everything, current.unrecorded)
    suites = sorted({str(r.job.get("suite") or "") for r in everything})
    if len(suites) > 1:
        raise HarnessError(f"{root}: holds results of several suites ({', '.join(suites)}); point it at one suite's directory")
    everything.sort(key=lambda r: (r.dataset, r.encoder, r.objective, r.seed, json.dumps(r.trial, sort_keys=True, default=str), str(r.dir)))
    runs = [r for r in everything if r.stage != "tune"]
    tuning = [r for r in everything if r.stage == "tune"]
    expected, missing = current.completeness(root, {r.dir.name for r in everything})
    return RunStore(runs_dir=root, suite=suites[0] or root.name, runs=runs, metrics=metrics, tuning=tuning,
                    tuning_metrics=tuning_metrics, left_out=current.left_out, expected=expected, missing=missing)
