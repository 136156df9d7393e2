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
from dataclasses import dataclass, field
from pathlib import Path
from collections import Counter
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, field_validator, model_validator

from harness.config import Resources, Seed, Strict, TrainConfig, check_scale, format_validation_error
from harness.errors import HarnessError, short_repr
from harness.job import Job, PluginSpec
from harness.plugin_checks import _check_factory, check_extras, check_requires  # noqa: F401 (re-exported)
from harness.suite_yaml import read_suite_text, read_yaml
from harness.tuning import TuneConfig

MAX_REPLICATES = 1000
SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEFAULT_EVALUATIONS = ["gap", "zeroshot_classification", "retrieval", "arithmetic", "linear_probe"]
DISTRIBUTION_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$"  # a PEP 508 project name


def _as_ref(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


class PluginRef(Strict):
    name: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, min_length=1, max_length=200)


class ObjectiveRef(PluginRef):
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the suite's train config


class EncoderRef(PluginRef):
    # with the suite's ``replicates: N``: this encoder runs only replicates 0..M-1 (M <= N)
    replicates: int | None = Field(default=None, ge=1, le=MAX_REPLICATES, strict=True)
    # overrides of the suite's train config for this encoder's jobs (e.g. a batch-size axis:
    # ``train: {batch_size: 16}``); an objective's own overrides are applied after these
    train: dict[str, Any] = Field(default_factory=dict)


class Suite(Strict):
    name: str
    description: str = ""
    objectives: list[ObjectiveRef] = Field(min_length=1)
    encoders: list[EncoderRef] = Field(min_length=1)
    datasets: list[PluginRef] = Field(min_length=1)
    train: TrainConfig
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    replicates: int | None = Field(default=None, ge=1, le=MAX_REPLICATES, strict=True)
    reference: str | None = Field(default=None, min_length=1, max_length=200)
    evaluations: list[PluginRef] = Field(default_factory=lambda: [PluginRef(name=n) for n in DEFAULT_EVALUATIONS])
    save: list[Literal["checkpoint", "embeddings"]] = Field(default_factory=list)
    log: list[Literal["tensorboard"]] = Field(default_factory=list)  # training curves; not in the job ids
    resources: Resources = Field(default_factory=Resources)
    requires: list[Annotated[str, Field(pattern=DISTRIBUTION_NAME)]] = Field(default_factory=list)
    main_score: str | None = Field(default=None, min_length=1, max_length=200)
    tune: TuneConfig | None = None

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG.fullmatch(v):
            raise ValueError("must be a slug (it names directories): 1 to 64 lowercase letters, digits, '-' and "
                             "'_', starting with a letter or digit")
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

    @field_validator("seeds", "save", "log")
    @classmethod
    def _unique(cls, v: list) -> list:
        dupes = [x for x, n in Counter(v).items() if n > 1]
        if dupes:
            raise ValueError(f"entries must be unique; {short_repr(dupes[0])} appears twice")
        return v

    @model_validator(mode="after")
    def _seeds_or_replicates(self) -> "Suite":
        if self.replicates is not None and "seeds" in self.model_fields_set:
            raise ValueError("give seeds or replicates, not both: replicate r trains with seed r on world draw r")
        for i, enc in enumerate(self.encoders):
            if enc.replicates is not None and (self.replicates is None or enc.replicates > self.replicates):
                raise ValueError(f"encoders[{i}].replicates: at most the suite's replicates "
                                 f"({self.replicates if self.replicates is not None else 'none: the suite gives seeds'}), "
                                 f"got {enc.replicates}")
        if self.tune is not None and any(enc.train for enc in self.encoders):
            raise ValueError("encoders[].train overrides cannot be combined with tune: (the trials are per objective)")
        return self

    def blocks(self) -> list[tuple[int | None, int]]:
        """``(replicate, training seed)`` of every job of a grid cell: the seeds, or the replicates."""
        if self.replicates is None:
            return [(None, seed) for seed in self.seeds]
        return [(r, r) for r in range(self.replicates)]

    def train_for(self, i: int, e: int | None = None) -> TrainConfig:
        """The train config of ``objectives[i]`` (on ``encoders[e]``): the suite's, with that
        encoder's overrides, then that objective's.

        An override that sets ``steps`` or ``epochs`` replaces the budget below it (so ``steps: 0``
        works in a suite that trains for some epochs). Raises ``pydantic.ValidationError``.
        """
        base = self.train.model_dump(exclude_unset=True)
        layers = ([self.encoders[e].train] if e is not None else []) + [self.objectives[i].train]
        for override in layers:
            if "steps" in override or "epochs" in override:
                base.pop("steps", None)
                base.pop("epochs", None)
            base = {**base, **override}
        return TrainConfig.model_validate(base)


def _known_fields(path: list[str]) -> list[str]:
    """The allowed keys of the suite mapping at ``path`` (an unknown key was found there)."""
    if not path:
        return list(Suite.model_fields)
    nested = {"train": TrainConfig, "resources": Resources, "objectives": ObjectiveRef, "tune": TuneConfig,
              "encoders": EncoderRef, "datasets": PluginRef, "evaluations": PluginRef}
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
        raise HarnessError(format_validation_error(exc, source, known_fields=_known_fields)) from None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; every problem is a one-line ``HarnessError``."""
    return parse_suite(read_yaml(read_suite_text(path), str(path)), str(path))



def _spec(kind: str, ref: PluginRef, field: str, registry) -> PluginSpec:
    try:
        entry = registry.get(kind, ref.name)
    except HarnessError as exc:
        raise HarnessError(f"{field}.name: {exc}") from None
    params = entry.resolve(ref.params, where=f"{field}.params")
    given = {k: params[k] for k in ref.params if k in params}  # as coerced
    params = id_stable(entry, params)
    return PluginSpec(name=ref.name, params=params, label=ref.label or default_label(ref.name, given, entry.params))


def id_stable(entry, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` less those a plugin added after its job ids were published, where they hold their
    default (the factory's ``ID_OPTIONAL_PARAMS``). Resolved params (defaults filled in) are part of
    a job's id, so a new param would otherwise change the id of every earlier job of the plugin; at
    its default it changes no number, and the factory gets the same default when the job runs, so
    leaving it out keeps every earlier id meaning the same numbers."""
    optional = getattr(entry.factory, "ID_OPTIONAL_PARAMS", ())
    defaults = entry.params
    return {k: v for k, v in params.items() if not (k in optional and k in defaults and v == defaults[k])}


def default_label(name: str, given: dict[str, Any], defaults: dict[str, Any]) -> str:
    """``name`` plus the params that differ from the plugin's defaults, e.g. ``clip(temperature=0.01)``."""
    changed = {k: v for k, v in sorted(given.items()) if defaults.get(k, object()) != v}
    if not changed:
        return name
    return f"{name}(" + ",".join(f"{k}={v}" for k, v in changed.items()) + ")"


def expand(suite: Suite, source: str = "<suite>", registry=None, check_build: bool = True) -> list[Job]:
    """The grid as ``Job`` records, plugin params resolved against the registry.

    Every declaration is checked here, before anything runs: the distributions the suite
    ``requires``, plugin names, params (types and limits from the factories' signatures), the
    extras each loss declares against what each dataset supplies, and the explicit ``main_score``.
    With ``check_build``, losses and evaluations (cheap) are built once, so a combination of values
    the factory itself rejects fails here; encoders and datasets (weights, files) are not built: a
    factory of theirs with a ``check_params(**params)`` callable gets its values checked by that.
    Nothing is ever called with data: no loss ``forward``, no ``evaluate``.
    """
    return expand_grid(suite, source, registry, check_build).jobs


def check_main_score(suite: Suite, evaluations: list[PluginSpec]) -> None:
    """An explicit ``main_score`` names one of the suite's evaluations: ``<evaluation>.<key>``."""
    if suite.main_score is None:
        return
    head, _, key = suite.main_score.partition(".")
    names = [e.display for e in evaluations]
    if head not in names or not key or any(not part for part in key.split(".")):
        raise HarnessError(
            f"main_score: expected '<evaluation>.<key>' with <evaluation> one of {', '.join(names)} "
            f"(got {short_repr(suite.main_score)})"
        )


def _unique_labels(field: str, specs: list[PluginSpec]) -> None:
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.display in seen:
            raise HarnessError(
                f"{field}[{i}].label: {spec.display!r} is already used by {field}[{seen[spec.display]}]; "
                f"give one a different label"
            )
        seen[spec.display] = i


def world_draw(spec: PluginSpec, replicate: int | None, ref: PluginRef, field: str, registry) -> PluginSpec:
    """The dataset of replicate ``replicate``: its ``seed`` param set to the replicate (a new world draw:
    held-out combinations, test and validation sets, training scenes), its label unchanged so every
    replicate lands in the same table. A dataset without a ``seed`` param is the same data in every
    replicate (only the training seed changes). ``None`` (a suite of seeds) leaves it as it is."""
    if replicate is None or "seed" not in registry.get("dataset", spec.name).params:
        return spec
    if "seed" in ref.params:
        raise HarnessError(f"{field}.params.seed: replicates draw each world's seed (replicate r uses seed r); "
                           f"remove it, or give seeds instead of replicates")
    return PluginSpec(spec.name, {**spec.params, "seed": replicate}, label=spec.display)


def check_reference(suite: Suite, objectives: list[PluginSpec]) -> str | None:
    """The suite's ``reference`` objective (planned contrasts are against it), which must be one of its
    objectives' labels; ``None`` when not given (the leaderboard then uses ``clip`` if present)."""
    if suite.reference is None:
        return None
    labels = [spec.display for spec in objectives]
    if suite.reference not in labels:
        raise HarnessError(f"reference: {short_repr(suite.reference)} is not an objective of this suite; "
                           f"one of: {', '.join(labels)}")
    return suite.reference


def _cell_train(suite: Suite) -> dict[tuple[int, int], TrainConfig]:
    """(objective, encoder) -> train config, for the encoders with ``train`` overrides (checked
    like an objective's; one-line errors naming both entries)."""
    out = {}
    for e, enc in enumerate(suite.encoders):
        if not enc.train:
            continue
        for i in range(len(suite.objectives)):
            where = f"encoders[{e}].train" if not suite.objectives[i].train else f"encoders[{e}].train with objectives[{i}].train"
            try:
                out[(i, e)] = cfg = suite.train_for(i, e)
            except pydantic.ValidationError as exc:
                raise HarnessError(format_validation_error(exc, "", prefix=where)[2:]) from None
            check_scale(cfg, suite.resources, where)
    return out


@dataclass
class Grid:
    """A suite resolved against the registry: its plugin specs, its grid of jobs, and its tuning trials.

    ``objectives`` holds (index, spec, train config); ``trials`` maps the index of each tuned
    objective to its trials (empty without a ``tune:`` section). For a tuned suite ``jobs`` are the
    final jobs before the chosen values are applied (``harness.tuning``).
    """

    suite: Suite
    objectives: list[tuple[int, PluginSpec, TrainConfig]]
    encoders: list[PluginSpec]
    datasets: list[PluginSpec]
    evaluations: list[PluginSpec]
    jobs: list[Job]
    trials: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def tuning_jobs(self, registry=None) -> list[Job]:
        """Stage 1 of a tuned suite (none otherwise)."""
        from harness.registry import get_registry
        from harness.tuning import tuning_jobs

        if not self.trials:
            return []
        return tuning_jobs(self.jobs, self.trials, self.objectives, self.suite, registry or get_registry())


def expand_grid(suite: Suite, source: str = "<suite>", registry=None, check_build: bool = True) -> Grid:
    """Like ``expand``, with everything the grid was built from (and the tuning trials)."""
    from harness.registry import get_registry

    registry = registry or get_registry()
    try:
        check_requires(suite, registry)
        return _expand(suite, registry, check_build)
    except HarnessError as exc:
        raise HarnessError(f"{source}: {exc}") from None


def _expand(suite: Suite, registry, check_build: bool) -> Grid:
    if "tensorboard" in suite.log:
        from harness.optional import require_tensorboard

        require_tensorboard()
    objectives = []
    for i, ref in enumerate(suite.objectives):
        spec = _spec("loss", ref, f"objectives[{i}]", registry)
        try:
            train = suite.train_for(i)
        except pydantic.ValidationError as exc:
            raise HarnessError(format_validation_error(exc, "", prefix=f"objectives[{i}].train")[2:]) from None
        if "batch_size" in ref.train or any("batch_size" not in enc.train for enc in suite.encoders):
            # a config some job uses (when every encoder sets its own batch size, the cells are checked instead)
            check_scale(train, suite.resources, f"objectives[{i}].train" if "batch_size" in ref.train else "train")
        objectives.append((i, spec, train))
    cell_train = _cell_train(suite)
    encoders = [_spec("encoder", r, f"encoders[{i}]", registry) for i, r in enumerate(suite.encoders)]
    datasets = [_spec("dataset", r, f"datasets[{i}]", registry) for i, r in enumerate(suite.datasets)]
    evaluations = [_spec("evaluation", r, f"evaluations[{i}]", registry) for i, r in enumerate(suite.evaluations)]
    _unique_labels("objectives", [spec for _, spec, _ in objectives])
    _unique_labels("encoders", encoders)
    _unique_labels("datasets", datasets)
    _unique_labels("evaluations", evaluations)
    for i, spec, _ in objectives:
        loss = _check_factory("loss", spec, f"objectives[{i}]", registry, build=check_build)
        check_extras(loss if loss is not None else registry.get("loss", spec.name).factory, spec,
                     f"objectives[{i}]", datasets, registry)
    if check_build:
        for i, spec in enumerate(evaluations):
            _check_factory("evaluation", spec, f"evaluations[{i}]", registry)
        for i, spec in enumerate(encoders):
            _check_factory("encoder", spec, f"encoders[{i}]", registry, build=False)
        for i, spec in enumerate(datasets):
            _check_factory("dataset", spec, f"datasets[{i}]", registry, build=False)
    check_main_score(suite, evaluations)

    jobs: list[Job] = []
    origin: dict[str, str] = {}
    reference = check_reference(suite, [spec for _, spec, _ in objectives])
    for (i, obj, train), (e, enc), (d, ds), (replicate, seed) in itertools.product(
        objectives, enumerate(encoders), enumerate(datasets), suite.blocks()
    ):
        cap = suite.encoders[e].replicates
        if cap is not None and replicate is not None and replicate >= cap:
            continue  # this encoder runs the first ``cap`` replicates only
        job = Job(
            suite=suite.name,
            objective=obj,
            encoder=enc,
            dataset=world_draw(ds, replicate, suite.datasets[d], f"datasets[{d}]", registry),
            train=cell_train.get((i, e), train).model_dump(),
            seed=seed,
            evaluations=evaluations,
            save=list(suite.save),
            log=list(suite.log),
            resources=suite.resources.model_dump(),
            main_score=suite.main_score,
            replicate=replicate,
            reference=reference,
        )
        block = f"seed {seed}" if replicate is None else f"replicate {replicate}"
        where = f"objectives[{i}] x encoders[{e}] x datasets[{d}] x {block}"
        if job.id in origin:
            raise HarnessError(f"{where}: resolves to the same job as {origin[job.id]}; make their params differ")
        origin[job.id] = where
        jobs.append(job)
    trials = {}
    if suite.tune is not None:
        from harness.tuning import expand_tuning

        trials = expand_tuning(suite, objectives, encoders, datasets, evaluations, registry)
    return Grid(suite, objectives, encoders, datasets, evaluations, jobs, trials)
