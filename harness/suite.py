"""Suite files: YAML (a ``yaml.SafeLoader``: plain data only) validated into typed models and expanded into jobs.

A suite is a grid ``objectives x encoders x datasets x seeds`` sharing one training budget and one
list of evaluations. An objective entry may override parts of ``train`` (e.g. ``steps: 0`` for an
``untrained`` baseline row; an override of ``steps`` or ``epochs`` replaces the suite's budget).

Every problem is a one-line ``HarnessError``: ``FILE: field.path: what is expected (got value)``.
Plugin params are checked against the factory's annotations and stored coerced (``1`` -> ``1.0``
for a ``float``), so equal settings spelled differently give the same job id.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from harness.errors import HarnessError
from harness.job import Job, PluginSpec

SLUG = r"^[a-z0-9][a-z0-9_-]*$"
DEFAULT_EVALUATIONS = ["gap", "zeroshot_classification", "retrieval", "arithmetic", "linear_probe"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _not_bool(v: Any) -> Any:
    """YAML ``true`` is not a number (pydantic's lax mode would read it as 1)."""
    if isinstance(v, bool):
        raise ValueError("expected a number, not a boolean")
    return v


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
Seed = Annotated[int, BeforeValidator(_not_bool), Field(ge=0)]


class TrainConfig(_Strict):
    """The training budget and optimiser (AdamW, linear warmup then cosine decay)."""

    steps: Int | None = Field(default=None, ge=0)
    epochs: Float | None = Field(default=None, gt=0)
    batch_size: Int = Field(default=128, ge=1)
    lr: Float = Field(default=5e-4, gt=0)
    weight_decay: Float = Field(default=0.1, ge=0)
    betas: tuple[Float, Float] = (0.9, 0.98)
    eps: Float = Field(default=1e-6, gt=0)
    warmup: Int = Field(default=0, ge=0)
    grad_clip: Float | None = Field(default=None, gt=0)
    log_every: Int = Field(default=10, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: Int = Field(default=256, ge=1)

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
    gpus_per_job: Float = Field(default=0, ge=0)
    cpus_per_job: Int = Field(default=1, ge=1)


def _as_ref(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


class PluginRef(_Strict):
    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, min_length=1)


class ObjectiveRef(PluginRef):
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the suite's train config


class Suite(_Strict):
    name: str
    description: str = ""
    objectives: list[ObjectiveRef] = Field(min_length=1)
    encoders: list[PluginRef] = Field(min_length=1)
    datasets: list[PluginRef] = Field(min_length=1)
    train: TrainConfig
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    evaluations: list[PluginRef] = Field(default_factory=lambda: [PluginRef(name=n) for n in DEFAULT_EVALUATIONS])
    save: list[Literal["checkpoint", "embeddings"]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not re.match(SLUG, v):
            raise ValueError("must be a slug (it names directories): lowercase letters, digits, '-' and '_', "
                             "starting with a letter or digit")
        return v

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

    @field_validator("seeds", "save")
    @classmethod
    def _unique(cls, v: list) -> list:
        dupes = sorted({x for x in v if v.count(x) > 1}, key=str)
        if dupes:
            raise ValueError(f"entries must be unique; {dupes[0]!r} appears twice")
        return v

    def train_for(self, i: int) -> TrainConfig:
        """The train config of ``objectives[i]``: the suite's, with that objective's overrides.

        An override that sets ``steps`` or ``epochs`` replaces the suite's budget (so ``steps: 0``
        works in a suite that trains for some epochs). Raises ``pydantic.ValidationError``.
        """
        override = self.objectives[i].train
        base = self.train.model_dump(exclude_unset=True)
        if "steps" in override or "epochs" in override:
            base.pop("steps", None)
            base.pop("epochs", None)
        return TrainConfig.model_validate({**base, **override})


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_PLUGIN_LISTS = ("objectives", "encoders", "datasets", "evaluations")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation_error(exc: pydantic.ValidationError, source: str, prefix: str = "") -> str:
    """One line: ``source: field.path: what is expected (got value)``."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        known = _known_fields(err["loc"], prefix)
        msg = "unknown field" + (f"; expected one of: {', '.join(known)}" if known else "")
    elif err["type"] == "model_type":
        loc = err["loc"]
        plugin = len(loc) == 2 and loc[0] in _PLUGIN_LISTS or len(loc) == 1 and loc[0] in _PLUGIN_LISTS
        msg = "expected a plugin name or a mapping with name, params, label" if plugin else "expected a mapping"
    got = err.get("input")
    hidden = ("missing", "extra_forbidden")
    shown = "" if err["type"] in hidden or isinstance(got, (dict, list)) else f" (got {_short(got)})"
    loc = _loc(err["loc"])
    loc = f"{prefix}.{loc}" if prefix and err["loc"] else (prefix or loc)
    return f"{source}: {loc}: {msg}{shown}"


def _known_fields(loc: tuple, prefix: str) -> list[str]:
    """The allowed keys of the mapping an unknown key was found in (for the error message)."""
    path = [part for part in loc[:-1] if not isinstance(part, int)]
    if prefix:  # an objective's train overrides
        return list(TrainConfig.model_fields) if not path else []
    if not path:
        return list(Suite.model_fields)
    nested = {"train": TrainConfig, "resources": Resources, "objectives": ObjectiveRef,
              "encoders": PluginRef, "datasets": PluginRef, "evaluations": PluginRef}
    return list(nested[path[0]].model_fields) if len(path) == 1 and path[0] in nested else []


def parse_suite(data: Any, source: str = "<suite>") -> Suite:
    """Validate already-loaded YAML data; every problem is a one-line ``HarnessError``."""
    if data is None:
        raise HarnessError(f"{source}: the suite is empty; expected a mapping with name, objectives, encoders, "
                           f"datasets, train")
    if not isinstance(data, dict):
        raise HarnessError(f"{source}: expected a mapping of suite fields at the top level, got {type(data).__name__}")
    try:
        return Suite.model_validate(data)
    except pydantic.ValidationError as exc:
        raise HarnessError(format_validation_error(exc, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (same safety: plain data only) that rejects a key given twice in a mapping.

    PyYAML silently keeps the last of two ``train:`` blocks; for a suite that is always a mistake.
    """


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (a key may appear once per mapping)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text (safe loader: plain data only); a syntax error is a one-line ``HarnessError``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        kind = "YAML syntax error" if isinstance(exc, (yaml.scanner.ScannerError, yaml.parser.ParserError)) else "invalid YAML"
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and cmark and mark and cmark.line != mark.line:
            problem += f" ({context} at line {cmark.line + 1})"
        raise HarnessError(f"{source}: {kind}{where}: {problem}") from None
    except RecursionError:
        raise HarnessError(f"{source}: YAML nested too deeply") from None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; every problem is a one-line ``HarnessError``."""
    path = Path(path)
    try:
        if not path.exists():
            raise HarnessError(f"{path}: no such suite file")
        if path.is_dir():
            raise HarnessError(f"{path}: is a directory, expected a suite YAML file")
        if not path.is_file():
            raise HarnessError(f"{path}: not a regular file, expected a suite YAML file")
        raw = path.read_bytes()
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); save the file as UTF-8") from None
    return parse_suite(read_yaml(text, str(path)), str(path))


def _spec(kind: str, ref: PluginRef, field: str, registry) -> PluginSpec:
    try:
        entry = registry.get(kind, ref.name)
    except HarnessError as exc:
        raise HarnessError(f"{field}.name: {exc}") from None
    params = entry.resolve(ref.params, where=f"{field}.params")
    given = {k: params[k] for k in ref.params if k in params}  # as coerced
    return PluginSpec(name=ref.name, params=params, label=ref.label or default_label(ref.name, given, entry.params))


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
    Encoders and datasets are too costly to build here (weights, files); a factory of theirs that
    has a ``check_params(**params)`` callable gets its values checked by that instead.
    """
    from harness.registry import get_registry

    registry = registry or get_registry()
    try:
        return _expand(suite, registry, check_build)
    except HarnessError as exc:
        raise HarnessError(f"{source}: {exc}") from None


def _built(kind: str, spec: PluginSpec, field: str, registry, build: bool = True) -> None:
    """Build the plugin once (or, with ``build=False``, call its factory's ``check_params`` if it
    has one); a ``ValueError``/``TypeError`` from either is bad input.

    The error names ``field.params.<p>`` for the first param its message mentions. Any other
    exception is a bug in the plugin and propagates (the CLI logs its traceback).
    """
    entry = registry.get(kind, spec.name)
    check = entry.create if build else getattr(entry.factory, "check_params", None)
    if not callable(check):
        return
    try:
        check(**spec.params)
    except (ValueError, TypeError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        named = [p for p in sorted(spec.params, key=len, reverse=True) if re.search(rf"\b{re.escape(p)}\b", text)]
        where = f"{field}.params.{named[0]}" if named else f"{field}.params"
        raise HarnessError(f"{where}: {kind} {spec.name!r} rejected its params: {text}") from None


def _unique_labels(field: str, specs: list[PluginSpec]) -> None:
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.display in seen:
            raise HarnessError(
                f"{field}[{i}].label: {spec.display!r} is already used by {field}[{seen[spec.display]}]; "
                f"give one a different label"
            )
        seen[spec.display] = i


def _expand(suite: Suite, registry, check_build: bool) -> list[Job]:
    objectives = []
    for i, ref in enumerate(suite.objectives):
        spec = _spec("loss", ref, f"objectives[{i}]", registry)
        try:
            train = suite.train_for(i)
        except pydantic.ValidationError as exc:
            raise HarnessError(format_validation_error(exc, "", prefix=f"objectives[{i}].train")[2:]) from None
        objectives.append((i, spec, train))
    encoders = [_spec("encoder", r, f"encoders[{i}]", registry) for i, r in enumerate(suite.encoders)]
    datasets = [_spec("dataset", r, f"datasets[{i}]", registry) for i, r in enumerate(suite.datasets)]
    evaluations = [_spec("evaluation", r, f"evaluations[{i}]", registry) for i, r in enumerate(suite.evaluations)]
    _unique_labels("objectives", [spec for _, spec, _ in objectives])
    _unique_labels("encoders", encoders)
    _unique_labels("datasets", datasets)
    _unique_labels("evaluations", evaluations)
    if check_build:
        for i, spec, _ in objectives:
            _built("loss", spec, f"objectives[{i}]", registry)
        for i, spec in enumerate(evaluations):
            _built("evaluation", spec, f"evaluations[{i}]", registry)
        for i, spec in enumerate(encoders):
            _built("encoder", spec, f"encoders[{i}]", registry, build=False)
        for i, spec in enumerate(datasets):
            _built("dataset", spec, f"datasets[{i}]", registry, build=False)

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
