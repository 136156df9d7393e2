"""The public plugin API: everything a plugin needs, built-in or third-party, in one module.

    from harness.api import hookimpl, full_precision, prepare_features, register_scalar

A plugin (``harness.builtin.*`` included) imports from ``harness`` nothing but this module. The
names below are re-exported from the core modules that implement them (``harness.types``,
``harness.params``, ``harness.lossutil``, ``harness.distributed``, ``harness.metrics.gap``,
``harness.errors``); those modules are internal and may change, these names do not.
``docs/writing-a-plugin.md`` describes each one; ``harness.testing`` checks a plugin against the
contract.

Layering: this module sits below the registry and imports nothing above it (and no built-in).
"""

from __future__ import annotations

from typing import Any, Callable

from harness.distributed import gather_features
from harness.errors import one_line
from harness.hookspecs import hookimpl
from harness.lossutil import (
    check_pair,
    clamp_logit_scale,
    compute_dtype,
    full_precision,
    need_batch,
    prepare_features,
    register_scalar,
    self_gram,
    symmetric_self_gram,
)
from harness.metrics.gap import gap_metrics
from harness.params import REQUIRED, bind_params
from harness.params import check_value as _check_value
from harness.params import type_hints as _type_hints
from harness.precision import PRECISIONS, Precision
from harness.types import (
    BATCH_EXTRAS,
    LOSS_EXTRAS,
    MAX_LOGIT_SCALE,
    MOMENTUM_EXTRAS,
    SUPPLIED_EXTRAS,
    ArithmeticSet,
    ArithmeticTriplet,
    CaptionGroupSource,
    ClassificationSet,
    Dataset,
    EmbeddedSet,
    Encoder,
    EvalContext,
    EvalSet,
    Evaluation,
    ImageBatch,
    Loss,
    MainScore,
    MetricInfo,
    NegativesSource,
    PairSource,
    RetrievalSet,
    Skip,
)

__all__ = [
    # registration
    "hookimpl",
    # the contract (harness.types)
    "Loss",
    "Encoder",
    "Dataset",
    "Evaluation",
    "PairSource",
    "NegativesSource",
    "CaptionGroupSource",
    "ImageBatch",
    "ClassificationSet",
    "RetrievalSet",
    "ArithmeticSet",
    "ArithmeticTriplet",
    "EvalSet",
    "EmbeddedSet",
    "EvalContext",
    "MetricInfo",
    "MainScore",
    "Skip",
    "Precision",
    "PRECISIONS",
    "LOSS_EXTRAS",
    "SUPPLIED_EXTRAS",
    "BATCH_EXTRAS",
    "MOMENTUM_EXTRAS",
    "MAX_LOGIT_SCALE",
    # parameters
    "REQUIRED",
    "bind_params",
    "validate_params",
    # loss building blocks
    "full_precision",
    "compute_dtype",
    "check_pair",
    "need_batch",
    "prepare_features",
    "gather_features",
    "register_scalar",
    "clamp_logit_scale",
    "self_gram",
    "symmetric_self_gram",
    # metrics and messages
    "gap_metrics",
    "one_line",
]


def validate_params(init: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked against ``init``'s ``Annotated[type, Field(...)]`` annotations; the coerced values.

    The registry validates a suite's params this way before it builds a plugin; a factory calls
    this to check the same limits when it is built directly (``MyLoss(temperature=-1)``), from the
    one description in its signature. ``init`` is the class or its ``__init__``. Raises
    ``ValueError`` (a ``harness`` ``ParamError``) naming the parameter, exactly as the registry's
    check words it; a name without an annotation passes unchecked.
    """
    hints = _type_hints(init)
    return {name: _check_value(hints[name], value, name) if name in hints else value for name, value in values.items()}
