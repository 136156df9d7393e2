"""Read a run store (``runs/<suite>/<job_id>/result.json``) into one pandas row per job.

Directories whose name starts with ``.`` (``.tmp/``, ``.locks/``) and directories without a
``result.json`` are ignored. A metric column is ``<evaluation>.<key>.<key>`` (nested keys joined by
dots, e.g. ``gap.centroid_distance``, ``zeroshot_classification.shape.top1``); how it is shown comes
from the result's ``metric_info[<evaluation>][<leaf key>]`` (unknown: group ``downstream``, no
direction; the ``train`` evaluation defaults to group ``train``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from harness.errors import HarnessError

RESULT = "result.json"
ID_COLUMNS = ["objective", "encoder", "dataset", "seed", "status"]
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

    @property
    def error_line(self) -> str:
        lines = [line.strip() for line in (self.error or "").splitlines() if line.strip()]
        line = lines[0] if lines else "(no error message recorded)"
        return line if len(line) <= 200 else line[:199] + "…"


@dataclass
class RunStore:
    """Every job under a runs directory, plus the metric columns they report (in first-seen order)."""

    runs_dir: Path
    suite: str
    runs: list[Run]
    metrics: dict[str, Metric] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """results.csv: objective, encoder, dataset, seed, status, then one column per metric."""
        rows = [
            {"objective": r.objective, "encoder": r.encoder, "dataset": r.dataset, "seed": r.seed, "status": r.status, **r.values}
            for r in self.runs
        ]
        df = pd.DataFrame(rows, columns=ID_COLUMNS + list(self.metrics))
        df["seed"] = df["seed"].astype(int)
        return df


def _result_files(root: Path) -> Iterator[Path]:
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if RESULT in files:
            yield Path(here) / RESULT


def _label(spec: Any, where: str, path: Path) -> str:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise HarnessError(f"{path}: job.{where} must be a mapping with a name")
    if spec.get("label"):
        return str(spec["label"])
    params = spec.get("params") or {}
    inner = ",".join(f"{k}={v!r}" for k, v in sorted(params.items()))
    return f"{spec['name']}({inner})" if inner else spec["name"]


def _flatten(tree: Any, prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], float]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, prefix + (str(key),))
    elif tree is None:
        yield prefix, math.nan
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, float(tree)
    # strings, lists and booleans are not metrics: left out


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
        display=str(display),
        group=group,
        higher_is_better=hib if isinstance(hib, bool) else None,
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: corrupt result (not UTF-8 text at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: corrupt result (invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: corrupt result (expected a JSON object, got {type(data).__name__})")
    return data


def _run(path: Path, data: dict[str, Any], metrics: dict[str, Metric]) -> Run:
    status = data.get("status")
    if status not in ("ok", "failed"):
        raise HarnessError(f"{path}: corrupt result (status must be 'ok' or 'failed', got {status!r})")
    job = data.get("job")
    if not isinstance(job, dict):
        raise HarnessError(f"{path}: corrupt result (no 'job' record)")
    seed = job.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise HarnessError(f"{path}: corrupt result (job.seed must be an integer, got {seed!r})")
    labels = {k: _label(job.get(k), k, path) for k in ("objective", "encoder", "dataset")}
    raw = data.get("metrics") or {}
    info = data.get("metric_info") or {}
    if not isinstance(raw, dict) or not isinstance(info, dict):
        raise HarnessError(f"{path}: corrupt result (metrics and metric_info must be mappings)")
    plugins = _plugin_names(job)
    values: dict[str, float] = {}
    for keys, value in _flatten(raw, ()):
        if len(keys) < 2:
            continue  # a bare number directly under "metrics" has no evaluation
        column = ".".join(keys)
        values[column] = value
        if column not in metrics:
            leaf_info = (info.get(keys[0]) or {}).get(keys[-1]) if isinstance(info.get(keys[0]), dict) else None
            metrics[column] = _metric(column, keys, plugins.get(keys[0], keys[0]), leaf_info)
    skipped = data.get("skipped") or {}
    return Run(
        dir=path.parent,
        job=job,
        status=status,
        seed=seed,
        values=values,
        env=data.get("env") if isinstance(data.get("env"), dict) else {},
        error=str(data["error"]) if data.get("error") is not None else None,
        skipped={str(k): str(v) for k, v in skipped.items()} if isinstance(skipped, dict) else {},
        **labels,
    )


def load_runs(runs_dir: str | Path) -> RunStore:
    """Every ``result.json`` under ``runs_dir``; bad input raises a one-line ``HarnessError``."""
    root = Path(runs_dir)
    if not root.exists():
        raise HarnessError(f"{root}: no such directory (expected a results directory such as runs/<suite>)")
    if not root.is_dir():
        raise HarnessError(f"{root}: not a directory (expected a results directory such as runs/<suite>)")
    metrics: dict[str, Metric] = {}
    runs = [_run(path, _read(path), metrics) for path in _result_files(root)]
    if not runs:
        raise HarnessError(f"{root}: no result.json under it; run a suite first (harness run SUITE)")
    suites = sorted({str(r.job.get("suite") or "") for r in runs})
    if len(suites) > 1:
        raise HarnessError(f"{root}: holds results of several suites ({', '.join(suites)}); point it at one suite's directory")
    runs.sort(key=lambda r: (r.dataset, r.encoder, r.objective, r.seed, str(r.dir)))
    return RunStore(runs_dir=root, suite=suites[0] or root.name, runs=runs, metrics=metrics)
