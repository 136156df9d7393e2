"""``run_job``: build -> train -> embed the evaluation sets once -> evaluate, into one directory.

Writes ``job.json``, ``log.jsonl`` (during training), optionally ``checkpoint.pt`` and
``embeddings/<set>.npz``, and last ``result.json``. Any exception fails only this job: the result
records ``status: failed``, a one-line ``error`` and the ``traceback``.
"""

from __future__ import annotations

import dataclasses
import random
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness.embed import embed_sets, embed_texts, save_embeddings
from harness.env import env_info
from harness.job import Job
from harness.store import write_json_atomic
from harness.train import TrainState, resolve_precision, train
from harness.types import EvalContext, MetricInfo, Skip

TRAIN_METRICS = {
    "final_loss": MetricInfo("final train loss", "train", None),
    "temperature": MetricInfo("temperature", "train", None),
    "bias": MetricInfo("sigmoid bias", "train", None),
    "steps": MetricInfo("steps", "train", None),
    "samples_per_s": MetricInfo("samples/s", "train", True),
    "train_time_s": MetricInfo("train time (s)", "train", False),
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def _create(kind: str, spec) -> Any:
    from harness.registry import get_registry

    return get_registry().get(kind, spec.name).create(**spec.params)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_job(job: Job, out_dir: str | Path, progress: Callable[[TrainState], None] | None = None) -> dict[str, Any]:
    """Run one job into ``out_dir`` and return its result (also written as ``result.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "job.json", job.to_dict())
    threads = int(job.resources.get("cpus_per_job") or torch.get_num_threads())
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "status": "failed",
        "job": job.to_dict(),
        "metrics": {},
        "metric_info": {},
        "skipped": {},
        "env": {},
        "error": None,
        "traceback": None,
    }
    try:
        device = resolve_device(job.train["device"])
        result["env"] = env_info(device)
        seed_everything(job.seed)
        dataset = _create("dataset", job.dataset)
        encoder = _create("encoder", job.encoder)
        loss = _create("loss", job.objective)
        evaluations = {spec.display: _create("evaluation", spec) for spec in job.evaluations}
        if hasattr(dataset, "info"):
            result["dataset_info"] = dataset.info()

        stats = train(encoder, loss, dataset.train_pairs() if job.train.get("steps") != 0 else [], job.train,
                      job.seed, device, out_dir / "log.jsonl", progress)
        result["metrics"]["train"] = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
        result["metric_info"]["train"] = {k: dataclasses.asdict(v) for k, v in TRAIN_METRICS.items()}
        result["env"]["precision"] = stats.get("precision", "fp32")
        result["env"]["train_time_s"] = stats.get("train_time_s", 0.0)
        result["env"]["samples_per_s"] = stats.get("samples_per_s")

        precision = resolve_precision(job.train.get("precision") or getattr(encoder, "precision", None), device)
        batch = job.train.get("eval_batch_size", 256)
        t_eval = time.perf_counter()
        sets = embed_sets(encoder, dataset.eval_sets(), device, batch, precision)
        if "embeddings" in job.save:
            save_embeddings(sets, out_dir / "embeddings")
        if "checkpoint" in job.save:
            torch.save({"model": encoder.model.state_dict(), "loss": loss.state_dict(), "job": job.to_dict()},
                       out_dir / "checkpoint.pt")
        text_fn = None
        if encoder.pair_modality == "text":
            def text_fn(texts):
                return embed_texts(encoder, texts, device, batch, precision)
        ctx = EvalContext(sets=sets, pair_modality=encoder.pair_modality, seed=job.seed, encode_texts_fn=text_fn)
        run_evaluations(evaluations, ctx, result)
        result["env"]["eval_time_s"] = time.perf_counter() - t_eval
        result["status"] = "ok"
    except Exception as exc:  # one job's failure never takes the suite down
        result["error"] = _one_line(exc)
        result["traceback"] = traceback.format_exc()
    result["env"]["wall_time_s"] = time.perf_counter() - t0
    write_json_atomic(out_dir / "result.json", result)
    return result


def run_evaluations(evaluations: dict[str, Any], ctx: EvalContext, result: dict[str, Any]) -> None:
    """Run each evaluation on the shared context; ``Skip`` records its reason."""
    for name, evaluation in evaluations.items():
        try:
            metrics = evaluation.evaluate(ctx)
        except Skip as why:
            result["skipped"][name] = str(why)
            continue
        result["metrics"][name] = metrics
        result["metric_info"][name] = {k: dataclasses.asdict(v) for k, v in getattr(evaluation, "metric_info", {}).items()}
