"""The parts of a suite that configure one job: its training budget and its resources.

Both are pydantic models with every number bounded: a value outside what real use needs is bad
input (exit 2 at validate time), never a crash halfway through a suite. ``TrainConfig`` is the one
description of a job's ``train`` dict: the trainer reads the model, never the dict with defaults
written again.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal

import pydantic

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_serializer, model_validator

from harness.errors import short_repr
from harness.precision import Precision

# Upper bounds generous enough for real use (a 32k CLIP batch, a long pre-training run, a large cluster).
MAX_BATCH = 65_536
MAX_STEPS = 10**8
MAX_SEED = 2**31 - 1
MAX_CPUS = 4096
MAX_GPUS = 1024
MAX_WORKERS = 1024
# Steps between a job's mid-run checkpoints (``harness.training.checkpoint``). One checkpoint of the
# gap suite's job (open_clip harness-tiny-cnn, 38 MiB of towers, AdamW state and RNGs) took 0.07 to
# 0.2 s on the shared 2-core machine, against 1.4 to 1.8 s per step there under load and about
# 0.05 to 0.09 s per step idle (22 minutes a suite): every 100 steps is 0.1% to 1.5% of the training
# time, well under 5% (benchmarks/checkpoint.py), and a kill loses at most 100 steps.
CHECKPOINT_EVERY = 100


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _not_bool(v: Any) -> Any:
    """YAML ``true`` is not a number (pydantic's lax mode would read it as 1)."""
    if isinstance(v, bool):
        raise ValueError("expected a number, not a boolean")
    return v


Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
Seed = Annotated[int, BeforeValidator(_not_bool), Field(ge=0, le=MAX_SEED)]


class TrainConfig(Strict):
    """The training budget and optimiser (AdamW, linear warmup then cosine decay)."""

    steps: Int | None = Field(default=None, ge=0, le=MAX_STEPS)
    epochs: Float | None = Field(default=None, gt=0, le=1e6)
    batch_size: Int = Field(default=128, ge=1, le=MAX_BATCH)
    lr: Float = Field(default=5e-4, gt=0, le=10)
    weight_decay: Float = Field(default=0.1, ge=0, le=100)
    betas: tuple[Float, Float] = (0.9, 0.98)
    eps: Float = Field(default=1e-6, gt=0, le=1)
    warmup: Int = Field(default=0, ge=0, le=MAX_STEPS)
    grad_clip: Float | None = Field(default=None, gt=0, le=1e9)
    log_every: Int = Field(default=10, ge=1, le=MAX_STEPS)
    precision: Precision | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_batch_size: Int = Field(default=256, ge=1, le=MAX_BATCH)
    # GradCache (Gao et al. 2021): embed each (per-worker) batch in chunks of this many pairs; the
    # loss still sees the whole batch. None, or >= the batch, is the plain one-pass step.
    micro_batch: Int | None = Field(default=None, ge=1, le=MAX_BATCH)
    # Write a checkpoint every this many steps, so a killed job resumes (0: never). Not part of the
    # job's id: it never changes the numbers (``harness.job.NOT_IN_ID``).
    checkpoint_every: Int = Field(default=CHECKPOINT_EVERY, ge=0, le=MAX_STEPS)
    # Measure the gap of a fixed set of training pairs at this many evenly spaced points of the run
    # (step 0 and the last included; ``harness.training.gapcurve``). Changes no trained number;
    # part of the job's id only when set.
    gap_curve: Int | None = Field(default=None, ge=2, le=1000)

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
        if self.micro_batch is not None and self.micro_batch > self.batch_size:
            raise ValueError(f"micro_batch ({self.micro_batch}) must be at most batch_size ({self.batch_size}): "
                             f"it is the chunk each batch is embedded in")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_scale(self, handler):
        """Leave ``micro_batch`` and ``gap_curve`` out while None, and ``checkpoint_every`` while it is the default,
        so the train records of suites that do not use them are exactly what they were before."""
        data = handler(self)
        if self.micro_batch is None:
            data.pop("micro_batch", None)
        if self.checkpoint_every == CHECKPOINT_EVERY:
            data.pop("checkpoint_every", None)
        if self.gap_curve is None:
            data.pop("gap_curve", None)
        return data


class Resources(Strict):
    """What one job asks of the machine (or of the Ray cluster).

    ``workers_per_job: W > 1`` runs the job as W data-parallel Ray Train workers
    (``harness.executors.ray_train``): ``cpus_per_job`` stays the job's total, split evenly over its
    workers; each worker holds ``gpus_per_worker`` GPUs (default ``gpus_per_job / W``).
    """

    gpus_per_job: Float = Field(default=0, ge=0, le=MAX_GPUS)
    cpus_per_job: Int = Field(default=1, ge=1, le=MAX_CPUS)
    workers_per_job: Int = Field(default=1, ge=1, le=MAX_WORKERS)
    gpus_per_worker: Float | None = Field(default=None, ge=0, le=MAX_GPUS)

    @model_validator(mode="after")
    def _gpus_agree(self) -> "Resources":
        if self.gpus_per_worker is None:
            return self
        if self.workers_per_job == 1:
            raise ValueError("gpus_per_worker applies to workers_per_job > 1; a one-process job uses gpus_per_job")
        total = self.workers_per_job * self.gpus_per_worker
        if self.gpus_per_job and abs(self.gpus_per_job - total) > 1e-9:
            raise ValueError(f"gpus_per_worker {self.gpus_per_worker:g} x workers_per_job {self.workers_per_job} = "
                             f"{total:g} GPU(s), but gpus_per_job is {self.gpus_per_job:g}; give only one of them")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_scale(self, handler):
        """Leave the worker fields out while unused, so jobs that do not use them record what they did before."""
        data = handler(self)
        if self.workers_per_job == 1:
            data.pop("workers_per_job", None)
        if self.gpus_per_worker is None:
            data.pop("gpus_per_worker", None)
        return data


def workers_of(resources: dict[str, Any] | None) -> int:
    """A job's number of data-parallel workers (1: a single process, as without Ray Train)."""
    return int((resources or {}).get("workers_per_job") or 1)


def worker_gpus(resources: dict[str, Any] | None) -> float:
    """The GPUs each worker of a job holds: ``gpus_per_worker``, else ``gpus_per_job`` split evenly."""
    resources = resources or {}
    given = resources.get("gpus_per_worker")
    if given is not None:
        return float(given)
    return float(resources.get("gpus_per_job") or 0) / workers_of(resources)


def worker_cpus(resources: dict[str, Any] | None) -> float:
    """The CPUs each worker of a job holds: ``cpus_per_job`` split evenly over its workers."""
    resources = resources or {}
    return float(resources.get("cpus_per_job") or 1) / workers_of(resources)


def check_scale(train: TrainConfig, resources: Resources, where: str = "train") -> None:
    """A job's train config and resources fit together; one-line ``HarnessError`` otherwise.

    With workers, each takes ``batch_size / W`` pairs of every batch, so W must divide the batch
    size; and Ray Train must be installed (``ray[train]``). ``where`` names the train config
    (``train`` or ``objectives[i].train``).
    """
    from harness.errors import HarnessError

    w = resources.workers_per_job
    if w == 1:
        return
    if train.batch_size % w:
        raise HarnessError(
            f"resources.workers_per_job: {w} workers cannot split {where}.batch_size {train.batch_size} evenly "
            f"(each worker takes batch_size / workers_per_job pairs); use a divisor of the batch size"
        )
    from harness.optional import require_ray_train

    require_ray_train()


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_PLUGIN_LISTS = ("objectives", "encoders", "datasets", "evaluations")


def format_validation_error(exc: pydantic.ValidationError, source: str, prefix: str = "",
                            known_fields: Callable[[list[str]], list[str]] | None = None) -> str:
    """One line: ``source: field.path: what is expected (got value)``.

    ``prefix`` names a train config validated on its own (``objectives[0].train``), whose unknown
    keys are listed from ``TrainConfig``; otherwise ``known_fields(path)`` lists the keys allowed
    in the mapping at ``path`` (the error's location without list indices and the unknown key).
    """
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        path = [str(part) for part in err["loc"][:-1] if not isinstance(part, int)]
        if prefix:
            known = list(TrainConfig.model_fields) if not path else []
        else:
            known = known_fields(path) if known_fields else []
        msg = "unknown field" + (f"; expected one of: {', '.join(known)}" if known else "")
    elif err["type"] == "model_type":
        loc = err["loc"]
        plugin = len(loc) == 2 and loc[0] in _PLUGIN_LISTS or len(loc) == 1 and loc[0] in _PLUGIN_LISTS
        msg = "expected a plugin name or a mapping with name, params, label" if plugin else "expected a mapping"
    got = err.get("input")
    hidden = ("missing", "extra_forbidden")
    shown = "" if err["type"] in hidden or isinstance(got, (dict, list)) else f" (got {short_repr(got)})"
    loc = _loc(err["loc"])
    loc = f"{prefix}.{loc}" if prefix and err["loc"] else (prefix or loc)
    return f"{source}: {loc}: {msg}{shown}"
