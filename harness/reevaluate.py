"""``harness evaluate RUNS_DIR``: re-run evaluations from saved embeddings, without retraining.

Needs jobs run with ``save: [embeddings]``. Evaluations that embed text (prompts, words) also need
``save: [checkpoint]``. An evaluation's stored metrics are replaced only by a successful re-run:
one that cannot be recomputed here (it raises ``Skip``, e.g. no checkpoint for its prompts, or
fails) keeps its stored metrics untouched, and the reason is printed and recorded under
``result["reevaluated"]``. The job's ``result.json`` is rewritten in place (atomically).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

from harness.config import TrainConfig
from harness.embed import load_embeddings
from harness.errors import HarnessError, one_line
from harness.job import Job, PluginSpec
from harness.precision import resolve_precision
from harness.runner import create_plugin, eval_sets_of, resolve_device, run_evaluations, text_embedder
from harness.store import Store, read_result, write_json_atomic
from harness.types import EvalContext

NO_CHECKPOINT = "no checkpoint saved (run with `save: [checkpoint]`): text prompts cannot be embedded"


def job_dirs(runs_dir: Path) -> list[Path]:
    if (runs_dir / "job.json").exists():
        return [runs_dir]
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "job.json").exists())


def _read_job(job_dir: Path) -> Job:
    try:
        return Job.from_dict(json.loads((job_dir / "job.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise HarnessError(f"{job_dir}/job.json: not a job record ({one_line(exc, 120)})") from None


def reevaluate_job(job_dir: Path, names: list[str] | None = None) -> dict:
    """Re-run the job's evaluations (or ``names``) from its saved embeddings; returns the new result."""
    result = read_result(job_dir)
    if result is None or result.get("status") != "ok":
        raise HarnessError(f"{job_dir}: no successful result.json to re-evaluate")
    if not (job_dir / "embeddings").is_dir():
        raise HarnessError(f"{job_dir}: no saved embeddings (run the suite with `save: [embeddings]`)")
    job = _read_job(job_dir)
    specs = [s for s in job.evaluations if names is None or s.display in names or s.name in names]
    specs += [PluginSpec(name=n, label=n) for n in names or [] if all(n not in (s.name, s.display) for s in job.evaluations)]
    cfg = TrainConfig.model_validate(job.train)
    dataset = create_plugin("dataset", job.dataset)
    sets = [load_embeddings(record, job_dir / "embeddings") for record in eval_sets_of(dataset, job)]
    device = resolve_device(cfg.device)
    encoder = create_plugin("encoder", job.encoder)
    precision = resolve_precision(cfg.precision or getattr(encoder, "precision", None), device)
    text_fn, reason = None, NO_CHECKPOINT
    checkpoint = job_dir / "checkpoint.pt"
    if encoder.pair_modality != "text":
        reason = "the encoder has no text tower (same-modality control)"
    elif checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        encoder.model.load_state_dict(state["model"])
        encoder.model.to(device).eval()
        text_fn = text_embedder(encoder, device, cfg.eval_batch_size, precision)

    ctx = EvalContext(sets=sets, pair_modality=encoder.pair_modality, seed=job.seed, encode_texts_fn=text_fn,
                      no_text_reason=reason)
    report = result.setdefault("reevaluated", {})
    for spec in specs:
        fresh = {"metrics": {}, "metric_info": {}, "main_scores": {}, "reference_rows": {}, "skipped": {}}
        try:
            run_evaluations({spec.display: create_plugin("evaluation", spec)}, ctx, fresh)
        except Exception as exc:  # kept as stored: an evaluation that fails here changes nothing
            report[spec.display] = f"kept the stored metrics: re-running failed ({one_line(exc, 200)})"
            continue
        if spec.display in fresh["skipped"]:
            why = fresh["skipped"][spec.display]
            kept = "kept the stored metrics" if spec.display in result["metrics"] else "nothing stored"
            report[spec.display] = f"{kept}: not recomputed ({why})"
            continue
        _merge(result, fresh, spec.display)
        report[spec.display] = "recomputed"
    write_json_atomic(job_dir / "result.json", result)
    return result


def _merge(result: dict, fresh: dict, name: str) -> None:
    """Replace one evaluation's entries of ``result`` by the freshly computed ones."""
    result["skipped"].pop(name, None)
    for key in ("metrics", "metric_info", "main_scores"):
        result.setdefault(key, {}).pop(name, None)
        if name in fresh[key]:
            result[key][name] = copy.deepcopy(fresh[key][name])
    rows = result.setdefault("reference_rows", {})
    for row in rows.values():
        for column in [c for c in row if c.startswith(f"{name}.")]:
            del row[column]
    for row, values in fresh["reference_rows"].items():
        rows.setdefault(row, {}).update(values)


def reevaluate(runs_dir: str | Path, evaluations: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Re-evaluate every job under ``runs_dir``; returns (job dirs with bad input, job dirs that failed)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise HarnessError(f"{runs_dir}: no such results directory")
    if evaluations:
        from harness.registry import get_registry

        registry = get_registry()
        for name in evaluations:
            if name not in registry.plugins["evaluation"]:
                registry.get("evaluation", name)  # raises a one-line error with suggestions
    try:
        dirs = job_dirs(runs_dir)
    except OSError as exc:
        raise HarnessError(f"{runs_dir}: cannot read: {exc.strerror or exc}") from None
    if not dirs:
        raise HarnessError(f"{runs_dir}: no job directories (job.json) found")
    bad, failed = [], []
    for job_dir in dirs:
        store = Store(job_dir.parent.parent, job_dir.parent.name)
        if not store.claim(job_dir.name):
            print(f"{job_dir.name}: busy (another run holds its lock), skipped", file=sys.stderr)
            continue
        try:
            result = reevaluate_job(job_dir, evaluations)
            for name, what in result.get("reevaluated", {}).items():
                print(f"{job_dir.name}: {name}: {what}", file=sys.stderr)
        except HarnessError as exc:  # bad input: said on one line, the other jobs go on
            print(f"{job_dir.name}: {' '.join(str(exc).split())}", file=sys.stderr)
            bad.append(str(job_dir))
        except Exception as exc:  # one job's problem never stops the others
            print(f"{job_dir.name}: {one_line(exc)}", file=sys.stderr)
            failed.append(str(job_dir))
        finally:
            store.release(job_dir.name)
    return bad, failed
