"""Suite files: YAML (``yaml.safe_load`` only) validated into typed models and expanded into jobs.

A suite is a grid ``objectives x encoders x datasets x seeds`` sharing one training budget and one
list of evaluations. An objective entry may override parts of ``train`` (e.g. ``steps: 0`` for an
``untrained`` baseline row).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.errors import HarnessError
from harness.job import Job, PluginSpec

SLUG = r"^[a-z0-9][a-z0-9_-]*$"
DEFAULT_EVALUATIONS = ["gap", "zeroshot_classification", "retrieval", "arithmetic", "linear_probe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(_Strict):
    """The training budget and optimiser (AdamW, linear warmup then cosine decay)."""

    steps: int | None = Field(default=None, ge=0)
    epochs: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=5e-4, gt=0)
    weight_decay: float = Field(default=0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = Field(default=1e-6, gt=0)
    warmup: int = Field(default=0, ge=0)
    grad_clip: float | None = Field(default=None, gt=0)
    log_every: int = Field(default=10, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: int = Field(default=256, ge=1)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("each beta must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _one_budget(self) -> "TrainConfig":
        if self.steps is None and self.epochs is None:
            raise ValueError("give either steps or epochs")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        return self


class Resources(_Strict):
    gpus_per_job: float = Field(default=0, ge=0)
    cpus_per_job: int = Field(default=1, ge=1)


def _as_ref(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


class PluginRef(_Strict):
    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, min_length=1)


class ObjectiveRef(PluginRef):
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the suite's train config


class Suite(_Strict):
    name: str = Field(pattern=SLUG)
    description: str = ""
    objectives: list[ObjectiveRef] = Field(min_length=1)
    encoders: list[PluginRef] = Field(min_length=1)
    datasets: list[PluginRef] = Field(min_length=1)
    train: TrainConfig
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    evaluations: list[PluginRef] = Field(default_factory=lambda: [PluginRef(name=n) for n in DEFAULT_EVALUATIONS])
    save: list[Literal["checkpoint", "embeddings"]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("objectives", "encoders", "datasets", "evaluations", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
        return [_as_ref(x) for x in v] if isinstance(v, list) else v

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_or_seeds(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be unique")
        return v


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def format_validation_error(exc: pydantic.ValidationError, source: str, prefix: str = "") -> str:
    """One line: ``source: field.path: what is expected (got value)``."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    got = err.get("input")
    shown = "" if err["type"] in ("missing", "extra_forbidden") or isinstance(got, (dict, list)) else f" (got {got!r})"
    loc = _loc(err["loc"])
    loc = f"{prefix}.{loc}" if prefix and err["loc"] else (prefix or loc)
    return f"{source}: {loc}: {msg}{shown}"


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    if not isinstance(data, dict):
        raise HarnessError(f"{source}: expected a mapping of suite fields at the top level, got {type(data).__name__}")
    try:
        return Suite.model_validate(data)
    except pydantic.ValidationError as exc:
        raise HarnessError(format_validation_error(exc, source)) from None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; every problem is a one-line ``HarnessError``."""
    path = Path(path)
    if not path.exists():
        raise HarnessError(f"{path}: no such suite file")
    if path.is_dir():
        raise HarnessError(f"{path}: is a directory, expected a suite YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HarnessError(f"{path}: YAML syntax error{where}: {problem}") from None
    return parse_suite(data, str(path))


def _spec(kind: str, ref: PluginRef, field: str, registry) -> PluginSpec:
    try:
        entry = registry.get(kind, ref.name)
    except HarnessError as exc:
        raise HarnessError(f"{field}.name: {exc}") from None
    params = entry.resolve(ref.params, where=f"{field}.params")
    return PluginSpec(name=ref.name, params=params, label=ref.label or default_label(ref.name, ref.params, entry.params))


def default_label(name: str, given: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``name`` plus the params that differ from the plugin's defaults, e.g. ``clip(temperature=0.01)``."""
    changed = {k: v for k, v in sorted(given.items()) if defaults.get(k, object()) != v}
    if not changed:
        return name
    return f"{name}(" + ",".join(f"{k}={v}" for k, v in changed.items()) + ")"


def expand(suite: Suite, source: str = "<suite>", registry=None, check_build: bool = True) -> list[Job]:
    """The grid as ``Job`` records, plugin params resolved against the registry.

    Losses and evaluations are cheap, so with ``check_build`` they are also built once here, so a
    param the factory itself rejects (e.g. a negative temperature) fails before any training.
    """
    from harness.registry import get_registry

    registry = registry or get_registry()
    try:
        return _expand(suite, registry, check_build)
    except HarnessError as exc:
        raise HarnessError(f"{source}: {exc}") from None


def _built(kind: str, spec: PluginSpec, field: str, registry) -> None:
    try:
        registry.get(kind, spec.name).create(**spec.params)
    except HarnessError:
        raise
    except Exception as exc:
        raise HarnessError(f"{field}.params: {kind} {spec.name!r} rejected its params: {exc}") from None


def _expand(suite: Suite, registry, check_build: bool) -> list[Job]:
    objectives = []
    labels: dict[str, int] = {}
    for i, ref in enumerate(suite.objectives):
        spec = _spec("loss", ref, f"objectives[{i}]", registry)
        merged = {**suite.train.model_dump(), **ref.train}
        try:
            train = TrainConfig.model_validate(merged)
        except pydantic.ValidationError as exc:
            raise HarnessError(format_validation_error(exc, "", prefix=f"objectives[{i}].train")[2:]) from None
        if spec.label in labels:
            raise HarnessError(f"objectives[{i}].label: {spec.label!r} is already used by objectives[{labels[spec.label]}]")
        labels[spec.label] = i
        if check_build:
            _built("loss", spec, f"objectives[{i}]", registry)
        objectives.append((i, spec, train))
    encoders = [_spec("encoder", r, f"encoders[{i}]", registry) for i, r in enumerate(suite.encoders)]
    datasets = [_spec("dataset", r, f"datasets[{i}]", registry) for i, r in enumerate(suite.datasets)]
    evaluations = [_spec("evaluation", r, f"evaluations[{i}]", registry) for i, r in enumerate(suite.evaluations)]
    if check_build:
        for i, spec in enumerate(evaluations):
            _built("evaluation", spec, f"evaluations[{i}]", registry)

    jobs: list[Job] = []
    origin: dict[str, str] = {}
    for (i, obj, train), (e, enc), (d, ds), seed in itertools.product(
        objectives, enumerate(encoders), enumerate(datasets), suite.seeds
    ):
        job = Job(
            suite=suite.name,
            objective=obj,
            encoder=enc,
            dataset=ds,
            train=train.model_dump(),
            seed=seed,
            evaluations=evaluations,
            save=list(suite.save),
            resources=suite.resources.model_dump(),
        )
        where = f"objectives[{i}] x encoders[{e}] x datasets[{d}] x seed {seed}"
        if job.id in origin:
            raise HarnessError(f"{where}: resolves to the same job as {origin[job.id]}; make their params differ")
        origin[job.id] = where
        jobs.append(job)
    return jobs
