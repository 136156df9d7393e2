"""``run_job``: build -> train -> embed the evaluation sets once -> evaluate, into one directory.

Writes ``job.json``, ``log.jsonl`` (training records, then the job's captured library warnings),
optionally ``checkpoint.pt`` and ``embeddings/<set>.npz``, and last ``result.json``. With a
``checkpoint_dir`` (outside ``out_dir``, which an interrupted run loses) training resumes from the
checkpoint there and writes one every ``train.checkpoint_every`` steps; with a ``curves_dir`` it
writes TensorBoard curves there (``harness.training``). Whatever a job
raises (an exception, or a plugin's ``SystemExit``/``KeyboardInterrupt``/``GeneratorExit``) fails
only this job: the result records ``status: failed``, a one-line ``error`` and the ``traceback``.
Only the user's own Ctrl-C or SIGTERM stops the run (``harness.interrupts``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness import interrupts
from harness.config import TrainConfig, workers_of
from harness.distributed import world
from harness.embed import embed_sets, embed_texts, save_embeddings
from harness.env import env_info
from harness.errors import one_line
from harness.job import Job, PluginSpec
from harness.jsonsafe import reference_rows, safe_result, to_json
from harness.precision import resolve_precision
from harness.store import MAX_RESULT_BYTES, write_json_atomic
from harness.threads import job_threads, pinned
from harness.training import TrainState, train
from harness.training.checkpoint import Checkpointing, CheckpointWarning, ResumeFailed
from harness.types import EvalContext, MetricInfo, Skip

PREPARE_LOG = "prepare.log.jsonl"  # in the run's cache: the library warnings of the worlds' preparations

TRAIN_METRICS = {
    "final_loss": MetricInfo("final train loss", "train", None),
    "temperature": MetricInfo("temperature", "train", None),
    "bias": MetricInfo("sigmoid bias", "train", None),
    "steps": MetricInfo("steps", "train", None),
    "samples_per_s": MetricInfo("samples/s", "train", True),
    "train_time_s": MetricInfo("train time (s)", "train", False),
    "shape_only_rows": MetricInfo("batch rows told apart by shape alone", "train", None),
}


def warm_up() -> None:
    """What every process that runs jobs pays once, before its first job rather than inside it: the
    scientific libraries the evaluations and the training probes load on first use (scikit-learn,
    scipy's optimiser; about 1.5 s on a 2-core CPU), so a process's first job costs what the next do."""
    import importlib

    for name in ("sklearn.linear_model", "scipy.optimize", "open_clip"):
        try:
            importlib.import_module(name)
        except ImportError:  # an optional library: the job that needs it says so
            pass


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


def create_plugin(kind: str, spec: PluginSpec) -> Any:
    """Build the plugin a job's spec names, its params validated again on the way in.

    A job record may come from a file (``job.json`` of ``harness evaluate``), so its params are
    never trusted: they go through the registry's checks (and an encoder's or dataset's
    ``check_params``) exactly as a suite's do; a bad value raises ``ParamError`` (exit 2).
    """
    from harness.registry import get_registry

    entry = get_registry().get(kind, spec.name)
    params = entry.resolve(spec.params, where=f"{kind} {spec.name!r} params")
    check = entry.info.check_params if kind in ("encoder", "dataset") else None
    if check is not None:
        check(**params)
    return entry.create(**params)


def new_result(job: Job) -> dict[str, Any]:
    """The skeleton of a ``result.json``: failed until proven otherwise."""
    return {
        "status": "failed",
        "job": job.to_dict(),
        "metrics": {},
        "metric_info": {},
        "main_scores": {},
        "reference_rows": {},
        "skipped": {},
        "env": {},
        "error": None,
        "traceback": None,
    }


def failed_result(job: Job, error: str, tb: str | None, env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result of a job that failed before or outside ``run_job`` (e.g. its Ray task died)."""
    result = new_result(job)
    result.update(error=error, traceback=tb, env=dict(env or {}))
    return result


def text_embedder(encoder, device: torch.device, batch: int, precision: str) -> Callable | None:
    """``texts -> normalised embeddings`` through the encoder's text tower, or None without one."""
    if encoder.pair_modality != "text":
        return None

    def embed(texts):
        return embed_texts(encoder, texts, device, batch, precision)

    return embed


def run_job(job: Job, out_dir: str | Path, progress: Callable[[TrainState], None] | None = None,
            device: torch.device | None = None, cache_dir: str | Path | None = None,
            checkpoint_dir: str | Path | None = None, curves_dir: str | Path | None = None,
            attempt: int | None = None) -> dict[str, Any]:
    """Run one job into ``out_dir`` and return its result (also written as ``result.json``).

    ``checkpoint_dir``: where the job's mid-run checkpoint lives (None: no checkpoints); the result
    records ``env.resumed_from_step``. ``curves_dir``: where its TensorBoard curves go (None: none).
    ``attempt``: which try of the job this is, recorded as ``env.attempts`` (executors that retry).

    ``device`` overrides ``train.device`` (a Ray Train worker passes the one Ray gave it). Inside a
    ``torch.distributed`` group (a job of ``resources.workers_per_job`` workers) every worker trains
    and uses its share of ``cpus_per_job`` as threads; only rank 0 embeds and evaluates, and its
    directory is the job's. ``cache_dir`` (the executors pass ``<store>/.cache``) is where the
    evaluations keep what every job of the run shares (``EvalContext.cache_dir``); None: no disk cache.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "job.json", job.to_dict())
    threads = job_threads(job.resources, workers_of(job.resources))
    t0 = time.perf_counter()
    result = new_result(job)
    with pinned(threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _run_resuming(job, out_dir, progress, result, device, cache_dir, checkpoint_dir, curves_dir)
            result["status"] = "ok"
        except BaseException as exc:  # one job's failure never takes the suite down; a user's stop does
            if interrupts.is_user_stop(exc):
                raise
            result["error"] = one_line(exc)
            result["traceback"] = traceback.format_exc()
    _log_warnings(caught, out_dir / "log.jsonl")
    result["env"]["wall_time_s"] = time.perf_counter() - t0
    if attempt is not None:
        result["env"]["attempts"] = attempt
    result = safe_result(result, MAX_RESULT_BYTES)  # what JSON cannot hold fails this job, never the suite
    write_json_atomic(out_dir / "result.json", result)
    return result


def _run_resuming(job: Job, out_dir: Path, progress, result: dict[str, Any], device: torch.device | None,
                  cache_dir: str | Path | None, checkpoint_dir: str | Path | None, curves_dir: str | Path | None) -> None:
    """``_run``; when a checkpoint that passed its checks breaks while loading, ``_run`` again from scratch."""
    try:
        _run(job, out_dir, progress, result, device, cache_dir, checkpoint_dir, curves_dir)
    except ResumeFailed as exc:
        (out_dir / "log.jsonl").unlink(missing_ok=True)
        warnings.warn(f"checkpoint refused: {one_line(exc)}; training starts from step 0", CheckpointWarning)
        _run(job, out_dir, progress, result, device, cache_dir, checkpoint_dir, curves_dir, resume=False)


def _run(job: Job, out_dir: Path, progress, result: dict[str, Any], device: torch.device | None = None,
         cache_dir: str | Path | None = None, checkpoint_dir: str | Path | None = None,
         curves_dir: str | Path | None = None, resume: bool = True) -> None:
    cfg = TrainConfig.model_validate(job.train)
    device = device or resolve_device(cfg.device)
    result["env"] = env_info(device)
    seed_everything(job.seed)
    dataset = create_plugin("dataset", job.dataset)
    encoder = create_plugin("encoder", job.encoder)
    loss = create_plugin("loss", job.objective)
    evaluations = {spec.display: create_plugin("evaluation", spec) for spec in job.evaluations}
    if hasattr(dataset, "info"):
        result["dataset_info"] = to_json(dataset.info(), f"dataset {job.dataset.display!r} info()")

    checkpoint = (Checkpointing(Path(checkpoint_dir), cfg.checkpoint_every, job.id, resume)
                  if checkpoint_dir is not None else None)
    curves = (Path(curves_dir), job.display) if curves_dir is not None else None
    stats = train(encoder, loss, dataset.train_pairs() if cfg.steps != 0 else [], cfg, job.seed, device,
                  out_dir / "log.jsonl", progress, loss_name=job.objective.name, checkpoint=checkpoint, curves=curves)
    result["metrics"]["train"] = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    result["metric_info"]["train"] = {k: dataclasses.asdict(v) for k, v in TRAIN_METRICS.items()}
    result["env"]["precision"] = stats.get("precision", "fp32")
    result["env"]["train_time_s"] = stats.get("train_time_s", 0.0)
    result["env"]["samples_per_s"] = stats.get("samples_per_s")
    result["env"].update(stats.get("env", {}))
    if world()[0] != 0:  # another worker of a multi-worker job: rank 0 evaluates and writes the job
        return

    precision = resolve_precision(cfg.precision or getattr(encoder, "precision", None), device)
    t_eval = time.perf_counter()
    announce = phase_reporter(progress, stats.get("steps", 0))
    announce("embed")
    sets = embed_sets(encoder, eval_sets_of(dataset, job), device, cfg.eval_batch_size, precision)
    if "embeddings" in job.save:
        save_embeddings(sets, out_dir / "embeddings")
    if "checkpoint" in job.save:
        torch.save({"model": encoder.model.state_dict(), "loss": loss.state_dict(), "job": job.to_dict()},
                   out_dir / "checkpoint.pt")
    ctx = EvalContext(sets=sets, pair_modality=encoder.pair_modality, seed=job.seed,
                      encode_texts_fn=text_embedder(encoder, device, cfg.eval_batch_size, precision),
                      cache_dir=Path(cache_dir) if cache_dir is not None else None)
    run_evaluations(evaluations, ctx, result, announce)
    result["env"]["eval_time_s"] = time.perf_counter() - t_eval


def world_key(job: Job) -> str:
    """What a job's model-free evaluation work depends on: its evaluation sets (dataset, split), its
    evaluations and its threads (a probe's cache key). Jobs with one key share ``prepare``'s work."""
    return json.dumps({"dataset": job.dataset.identity(), "split": getattr(job, "split", "test"),
                       "evaluations": [e.identity() for e in job.evaluations],
                       "threads": job_threads(job.resources, workers_of(job.resources))},
                      sort_keys=True, separators=(",", ":"), default=str)


def shared_worlds(jobs: list[Job]) -> set[str]:
    """The ``world_key``s that two or more of ``jobs`` share and whose evaluations have something to
    prepare (one of them declares ``prepare``): an executor prepares each of them once, just before
    it starts the first of their jobs. Worlds with nothing to prepare take no worker slot."""
    counts: dict[str, int] = {}
    sample: dict[str, Job] = {}
    for job in jobs:
        key = world_key(job)
        counts[key] = counts.get(key, 0) + 1
        sample.setdefault(key, job)
    return {key for key, n in counts.items() if n > 1 and _prepares(sample[key])}


def _prepare_hooks(job: Job) -> list[Callable[[list, Path], None]]:
    """The ``prepare`` methods of ``job``'s evaluations that declare one (evaluations are light to build)."""
    evaluations = [create_plugin("evaluation", spec) for spec in job.evaluations]
    return [e.prepare for e in evaluations if callable(getattr(e, "prepare", None))]


def _prepares(job: Job) -> bool:
    """Whether one of ``job``'s evaluations declares ``prepare`` (one that cannot be built prepares
    nothing: its job records the error)."""
    try:
        return bool(_prepare_hooks(job))
    except Exception:  # noqa: BLE001 - the job meets the same error and records it
        return False


def prepare(job: Job, cache_dir: str | Path) -> float | None:
    """Compute into ``cache_dir`` what ``job``'s evaluations keep there independently of any model
    (each evaluation's optional ``prepare(records, cache_dir)``: the reference rows' probes and
    oracles), on the job's threads, so that the first job of a world costs what the others do and
    a second worker trains while the references are computed. The same functions and cache keys as
    a job's own ``reference_rows``: no number changes. Best effort: whatever fails here (a bad
    dataset, a plugin's error) is left for the job itself to meet and record; returns the seconds
    spent, or None when nothing was prepared. Library warnings go to ``<cache_dir>/prepare.log.jsonl``.
    In a pool a preparation runs in a job worker: a dataset that kills its process there breaks the
    pool as that world's job would (the jobs in flight run again alone, ``env.attempts`` 2)."""
    t0 = time.perf_counter()
    hooks: list = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with pinned(job_threads(job.resources, workers_of(job.resources))):
                hooks = _prepare_hooks(job)
                if hooks:
                    records = eval_sets_of(create_plugin("dataset", job.dataset), job)
                    for hook in hooks:
                        hook(records, Path(cache_dir))
        except BaseException as exc:  # noqa: BLE001 - the job meets the same error and records it
            if interrupts.is_user_stop(exc):
                raise
            hooks = []
    if caught:  # a reference probe that did not converge: said where the job's own log cannot say it
        with contextlib.suppress(OSError):
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            _log_warnings(caught, Path(cache_dir) / PREPARE_LOG)
    return time.perf_counter() - t0 if hooks else None


def phase_reporter(progress: Callable[[TrainState], None] | None, steps: int) -> Callable[[str], None]:
    """``announce(phase)``: tell the caller's progress callback that the job entered ``phase``
    (``TrainState.phase``: "embed", "evaluate <name>"), its training done."""
    def announce(phase: str) -> None:
        if progress is not None:
            progress(TrainState(steps, steps, float("nan"), 0.0, phase=phase))

    return announce


def eval_sets_of(dataset, job: Job) -> list:
    """The job's evaluation sets: the reported ones, or the validation split for a tuning job."""
    split = getattr(job, "split", "test")
    return dataset.eval_sets() if split == "test" else dataset.eval_sets(split=split)


def run_evaluations(evaluations: dict[str, Any], ctx: EvalContext, result: dict[str, Any],
                    announce: Callable[[str], None] | None = None) -> None:
    """Run each evaluation on the shared context into ``result``; ``Skip`` records its reason.

    Each evaluation that produced metrics also records its declared main score
    (``result["main_scores"]``) and its reference rows (``result["reference_rows"]``, keys
    prefixed with the evaluation's name).
    """
    for name, evaluation in evaluations.items():
        if announce is not None:
            announce(f"evaluate {name}")
        try:
            metrics = evaluation.evaluate(ctx)
        except Skip as why:
            result["skipped"][name] = str(why)
            continue
        result["metrics"][name] = to_json(metrics, f"evaluation {name!r} returned metrics")
        result["metric_info"][name] = to_json({k: dataclasses.asdict(v) for k, v in getattr(evaluation, "metric_info", {}).items()},
                                              f"evaluation {name!r} metric_info")
        declared = getattr(evaluation, "main_score", None)
        if declared is not None:
            result.setdefault("main_scores", {})[name] = dataclasses.asdict(declared)
        if callable(getattr(evaluation, "reference_rows", None)):
            rows = result.setdefault("reference_rows", {})
            for row, values in reference_rows(evaluation.reference_rows(ctx), name).items():
                rows.setdefault(row, {}).update({f"{name}.{key}": v for key, v in values.items()})


def _log_warnings(caught: list[warnings.WarningMessage], log_path: Path) -> None:
    """Append the job's library warnings to its log (once each, with a count), not the terminal."""
    counts: dict[tuple[str, str, str], int] = {}
    for w in caught:
        key = (type(w.message).__name__ if isinstance(w.message, Warning) else w.category.__name__,
               " ".join(str(w.message).split())[:500], f"{w.filename}:{w.lineno}")
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return
    with open(log_path, "a") as fh:
        for (category, message, where), n in counts.items():
            fh.write(json.dumps({"warning": message, "category": category, "where": where, "count": n}) + "\n")
