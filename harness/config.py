"""The parts of a suite that configure one job: its training budget and its resources.

Both are pydantic models with every number bounded: a value outside what real use needs is bad
input (exit 2 at validate time), never a crash halfway through a suite. ``TrainConfig`` is the one
description of a job's ``train`` dict: the trainer reads the model, never the dict with defaults
written again.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from harness.precision import Precision

# Upper bounds generous enough for real use (a 32k CLIP batch, a long pre-training run, a large cluster).
MAX_BATCH = 65_536
MAX_STEPS = 10**8
MAX_SEED = 2**31 - 1
MAX_CPUS = 4096
MAX_GPUS = 1024
MAX_WORKERS = 1024


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


class Resources(Strict):
    """What one job asks of the machine (or of the Ray cluster)."""

    gpus_per_job: Float = Field(default=0, ge=0, le=MAX_GPUS)
    cpus_per_job: Int = Field(default=1, ge=1, le=MAX_CPUS)
