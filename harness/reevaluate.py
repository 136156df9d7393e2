"""``harness evaluate RUNS_DIR``: re-run evaluations from saved embeddings, without retraining.

Needs jobs run with ``save: [embeddings]``. Evaluations that embed text (prompts, words) also need
``save: [checkpoint]``. An evaluation's stored metrics are replaced only by a successful re-run:
one that cannot be recomputed here (it raises ``Skip``, e.g. no checkpoint for its prompts, or
fails) keeps its stored metrics untouched, and the reason is printed and recorded under
``result["reevaluated"]``. The job's ``result.json`` is rewritten in place (atomically).

A job directory is data that may have been edited or damaged, so everything in it is read as
hostile (``harness.safefiles``): never through a symbolic link, a FIFO or a device, with size
limits. A ``job.json`` whose fields have the wrong type or value (a string seed, a train config
out of range, a plugin spec without a name) is bad input naming the file and the field, as is a
damaged ``result.json``, ``.npz`` (not an archive, pickled objects, a shape the data does not have,
towers that do not match each other or the dataset's sets) or checkpoint: that job is skipped
(exit 2 at the end), the others go on.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pydantic
import torch

from harness.config import MAX_SEED, TrainConfig, format_validation_error
from harness.errors import HarnessError, one_line, printable, short_repr
from harness.job import Job, PluginSpec
from harness.precision import resolve_precision
from harness.runner import create_plugin, eval_sets_of, resolve_device, run_evaluations, text_embedder
from harness.safefiles import Refused, load_npz, open_regular, read_json
from harness.store import MACHINE_ERRNOS, Store, read_result_checked, write_json_atomic
from harness.types import EmbeddedSet, EvalContext, EvalSet

NO_CHECKPOINT = "no checkpoint saved (run with `save: [checkpoint]`): text prompts cannot be embedded"
MAX_JOB_BYTES = 4 * 2**20  # a job.json is a few KiB
MAX_EMBEDDING_BYTES = 8 * 2**30  # one array of an embeddings/<set>.npz
SPEC_FIELDS = {"name", "params", "label"}
OPTIONAL_TEXT = ("main_score", "stage")
OPTIONAL_MAPPINGS = ("trial", "tuned", "tuning")


def job_dirs(runs_dir: Path) -> list[Path]:
    if os.path.lexists(runs_dir / "job.json"):
        return [runs_dir]
    return sorted(p for p in runs_dir.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and os.path.lexists(p / "job.json"))


def _read_job(job_dir: Path) -> Job:
    path = job_dir / "job.json"
    try:
        data = read_json(path, MAX_JOB_BYTES)
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Refused as exc:
        raise HarnessError(f"{path}: not a job record ({exc})") from None
    check_job_record(data, path)
    return Job.from_dict(data)


def check_job_record(data: Any, path: Path) -> None:
    """A ``job.json`` as ``Job.to_dict`` writes it, field by field; ``HarnessError`` naming the file
    and the first field that is not (a job record is data: it is never trusted)."""
    def bad(field: str, what: str, value: Any = None) -> HarnessError:
        got = "" if value is None else f" (got {short_repr(value)})"
        return HarnessError(f"{path}: not a job record: {field}: {what}{got}")

    if not isinstance(data, dict):
        raise bad("(top level)", "expected a JSON object", type(data).__name__)
    if not isinstance(data.get("suite"), str):
        raise bad("suite", "expected a string", data.get("suite"))
    specs = [(k, data.get(k)) for k in ("objective", "encoder", "dataset")]
    evaluations = data.get("evaluations")
    if not isinstance(evaluations, list):
        raise bad("evaluations", "expected a list of plugin specs", evaluations)
    specs += [(f"evaluations[{i}]", e) for i, e in enumerate(evaluations)]
    for field, spec in specs:
        if not isinstance(spec, dict):
            raise bad(field, "expected a mapping with name, params, label", spec)
        if set(spec) - SPEC_FIELDS:
            raise bad(f"{field}.{sorted(set(spec) - SPEC_FIELDS)[0]}", "unknown field; expected name, params, label")
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise bad(f"{field}.name", "expected a plugin name", spec.get("name"))
        if not isinstance(spec.get("params", {}), dict):
            raise bad(f"{field}.params", "expected a mapping", spec.get("params"))
        if spec.get("label") is not None and not isinstance(spec["label"], str):
            raise bad(f"{field}.label", "expected a string", spec["label"])
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise bad("seed", f"expected an integer from 0 to {MAX_SEED}", seed if seed is not None else "nothing")
    if not isinstance(data.get("train"), dict):
        raise bad("train", "expected a mapping", data.get("train"))
    try:  # JSON's strict mode: "0.001" is not a number, 1 is a float
        TrainConfig.model_validate_json(json.dumps(data["train"]), strict=True)
    except pydantic.ValidationError as exc:
        raise HarnessError(format_validation_error(exc, f"{path}: not a job record", prefix="train")) from None
    for field, kind, types in (("save", "a list of strings", list), ("resources", "a mapping", dict)):
        if field in data and not isinstance(data[field], types):
            raise bad(field, f"expected {kind}", data[field])
    if not all(isinstance(x, str) for x in data.get("save") or []):
        raise bad("save", "expected a list of strings", data.get("save"))
    if not isinstance(data.get("split", "test"), str):
        raise bad("split", "expected a string", data.get("split"))
    for field in OPTIONAL_TEXT:
        if data.get(field) is not None and not isinstance(data[field], str):
            raise bad(field, "expected a string", data[field])
    for field in OPTIONAL_MAPPINGS:
        if data.get(field) is not None and not isinstance(data[field], dict):
            raise bad(field, "expected a mapping", data[field])


def load_embedding_file(record: EvalSet, directory: Path) -> EmbeddedSet:
    """``embeddings/<set>.npz`` as an ``EmbeddedSet``, read as hostile data and checked against
    itself and the dataset's set; ``HarnessError`` naming the file otherwise."""
    path = directory / f"{record.name}.npz"
    try:
        arrays = load_npz(path, ["image_emb"], MAX_EMBEDDING_BYTES, optional=("pair_emb", "pair_image_index"))
        image, pair, index = arrays["image_emb"], arrays.get("pair_emb"), arrays.get("pair_image_index")
        _check_embeddings(record, image, pair, index)
    except FileNotFoundError:
        raise HarnessError(f"{path}: missing (the job saved no embeddings of set {printable(record.name)!r})") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Refused as exc:
        raise HarnessError(f"{path}: corrupt embeddings ({exc})") from None
    return EmbeddedSet(record=record, image_emb=torch.from_numpy(image),
                       pair_emb=None if pair is None else torch.from_numpy(pair),
                       pair_image_index=None if index is None else torch.from_numpy(index))


def _check_embeddings(record: EvalSet, image, pair, index) -> None:
    if image.ndim != 2 or image.dtype.kind != "f":
        raise Refused(f"image_emb is {image.dtype} of shape {image.shape}, not a 2-D float matrix")
    n = _length(record.images)
    if n is not None and len(image) != n:
        raise Refused(f"image_emb has {len(image)} rows for the set's {n} images")
    if (pair is None) != (index is None):
        raise Refused("pair_emb and pair_image_index go together")
    if pair is None:
        return
    if pair.ndim != 2 or pair.dtype.kind != "f" or pair.shape[1] != image.shape[1]:
        raise Refused(f"pair_emb is {pair.dtype} of shape {pair.shape}; image_emb is {image.shape}")
    if index.ndim != 1 or index.dtype.kind not in "iu" or len(index) != len(pair):
        raise Refused(f"pair_image_index is {index.dtype} of shape {index.shape} for {len(pair)} pair rows")
    if len(index) and (index.min() < 0 or index.max() >= len(image)):
        raise Refused("pair_image_index points outside image_emb")


def _length(images: Any) -> int | None:
    try:
        return len(images)
    except TypeError:
        return None


def _load_checkpoint(path: Path, device) -> dict:
    """The weights of ``checkpoint.pt`` (never unpickling code: ``weights_only``), or ``HarnessError``."""
    try:
        fd = open_regular(path)
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Refused as exc:
        raise HarnessError(f"{path}: not a checkpoint ({exc})") from None
    try:
        with os.fdopen(fd, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about a foreign file's pickle protocol
            state = torch.load(fh, map_location=device, weights_only=True)
    except Exception as exc:  # torch's unpickler and zip reader: corrupt, truncated or foreign data
        raise HarnessError(f"{path}: corrupt checkpoint ({one_line(exc, 160)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise HarnessError(f"{path}: corrupt checkpoint (no 'model' weights)")
    return state


def reevaluate_job(job_dir: Path, names: list[str] | None = None) -> dict:
    """Re-run the job's evaluations (or ``names``) from its saved embeddings; returns the new result."""
    result, why = read_result_checked(job_dir)
    if why is not None:
        raise HarnessError(f"{job_dir / 'result.json'}: corrupt result ({why})")
    if result is None or result.get("status") != "ok":
        raise HarnessError(f"{job_dir}: no successful result.json to re-evaluate")
    if not (job_dir / "embeddings").is_dir():
        raise HarnessError(f"{job_dir}: no saved embeddings (run the suite with `save: [embeddings]`)")
    job = _read_job(job_dir)
    specs = [s for s in job.evaluations if names is None or s.display in names or s.name in names]
    specs += [PluginSpec(name=n, label=n) for n in names or [] if all(n not in (s.name, s.display) for s in job.evaluations)]
    cfg = TrainConfig.model_validate(job.train)
    dataset = create_plugin("dataset", job.dataset)
    sets = [load_embedding_file(record, job_dir / "embeddings") for record in eval_sets_of(dataset, job)]
    device = resolve_device(cfg.device)
    encoder = create_plugin("encoder", job.encoder)
    precision = resolve_precision(cfg.precision or getattr(encoder, "precision", None), device)
    text_fn, reason = None, NO_CHECKPOINT
    checkpoint = job_dir / "checkpoint.pt"
    if encoder.pair_modality != "text":
        reason = "the encoder has no text tower (same-modality control)"
    elif os.path.lexists(checkpoint):
        state = _load_checkpoint(checkpoint, device)
        try:
            encoder.model.load_state_dict(state["model"])
        except (RuntimeError, TypeError, ValueError, KeyError) as exc:
            raise HarnessError(f"{checkpoint}: does not fit the job's encoder ({one_line(exc, 160)})") from None
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
                print(printable(f"{job_dir.name}: {name}: {what}"), file=sys.stderr)
        except HarnessError as exc:  # bad input: said on one line, the other jobs go on
            print(printable(f"{job_dir.name}: {' '.join(str(exc).split())}"), file=sys.stderr)
            bad.append(str(job_dir))
        except OSError as exc:
            if exc.errno in MACHINE_ERRNOS:  # a full disk stops the command: one line at the CLI
                raise
            print(printable(f"{job_dir.name}: {one_line(exc)}"), file=sys.stderr)
            failed.append(str(job_dir))
        except Exception as exc:  # one job's problem never stops the others
            print(printable(f"{job_dir.name}: {one_line(exc)}"), file=sys.stderr)
            failed.append(str(job_dir))
        finally:
            store.release(job_dir.name)
    return bad, failed
