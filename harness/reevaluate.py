"""``harness evaluate RUNS_DIR``: re-run evaluations from saved embeddings, without retraining.

Needs jobs run with ``save: [embeddings]``. Evaluations that embed text (prompts, words) also need
``save: [checkpoint]``; without it they are skipped with that reason. The job's ``result.json`` is
rewritten in place (atomically) with the new metrics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from harness.embed import embed_texts, load_embeddings
from harness.errors import HarnessError
from harness.job import Job, PluginSpec
from harness.runner import _create, _one_line, resolve_device, run_evaluations
from harness.store import Store, read_result, write_json_atomic
from harness.types import EvalContext


def job_dirs(runs_dir: Path) -> list[Path]:
    if (runs_dir / "job.json").exists():
        return [runs_dir]
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "job.json").exists())


def reevaluate_job(job_dir: Path, names: list[str] | None = None) -> dict:
    result = read_result(job_dir)
    if result is None or result.get("status") != "ok":
        raise HarnessError(f"{job_dir}: no successful result.json to re-evaluate")
    if not (job_dir / "embeddings").is_dir():
        raise HarnessError(f"{job_dir}: no saved embeddings (run the suite with `save: [embeddings]`)")
    job = Job.from_dict(json.loads((job_dir / "job.json").read_text()))
    specs = [s for s in job.evaluations if names is None or s.display in names or s.name in names]
    specs += [PluginSpec(name=n, label=n) for n in names or [] if all(n not in (s.name, s.display) for s in job.evaluations)]
    dataset = _create("dataset", job.dataset)
    sets = [load_embeddings(record, job_dir / "embeddings") for record in dataset.eval_sets()]
    device = resolve_device(job.train["device"])
    text_fn, reason = None, "no checkpoint saved (run with `save: [checkpoint]`): text prompts cannot be embedded"
    checkpoint = job_dir / "checkpoint.pt"
    encoder = _create("encoder", job.encoder)
    if encoder.pair_modality != "text":
        reason = "the encoder has no text tower (same-modality control)"
    elif checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        encoder.model.load_state_dict(state["model"])
        encoder.model.to(device).eval()

        def text_fn(texts):
            return embed_texts(encoder, texts, device, job.train.get("eval_batch_size", 256))

    ctx = EvalContext(sets=sets, pair_modality=encoder.pair_modality, seed=job.seed, encode_texts_fn=text_fn,
                      no_text_reason=reason)
    evaluations = {s.display: _create("evaluation", s) for s in specs}
    for name in evaluations:
        result["metrics"].pop(name, None)
        result["skipped"].pop(name, None)
    run_evaluations(evaluations, ctx, result)
    write_json_atomic(job_dir / "result.json", result)
    return result


def reevaluate(runs_dir: str | Path, evaluations: list[str] | None = None) -> list[str]:
    """Re-evaluate every job under ``runs_dir``; returns the job dirs that failed."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise HarnessError(f"{runs_dir}: no such results directory")
    dirs = job_dirs(runs_dir)
    if not dirs:
        raise HarnessError(f"{runs_dir}: no job directories (job.json) found")
    failed = []
    for job_dir in dirs:
        store = Store(job_dir.parent.parent, job_dir.parent.name)
        if not store.claim(job_dir.name):
            print(f"{job_dir.name}: busy (another run holds its lock), skipped", file=sys.stderr)
            continue
        try:
            result = reevaluate_job(job_dir, evaluations)
            print(f"{job_dir.name}: re-evaluated {', '.join(result['metrics'])}", file=sys.stderr)
        except Exception as exc:  # one job's problem never stops the others
            print(f"{job_dir.name}: {_one_line(exc)}", file=sys.stderr)
            failed.append(str(job_dir))
        finally:
            store.release(job_dir.name)
    return failed
