"""The plugin contract as named checks a plugin author runs (like scikit-learn's ``check_estimator``).

    from harness.testing import check_loss, check_encoder, check_dataset, check_evaluation

    check_loss("my_loss")                   # a registered plugin, by name (params as keywords)
    check_loss(MyLoss, temperature=0.1)     # or its factory, with params validated as the registry does

Each ``check_<kind>`` runs every rule of its kind (``LOSS_CHECKS``, ``ENCODER_CHECKS``,
``DATASET_CHECKS``, ``EVALUATION_CHECKS``), each on a freshly built plugin, with real calls on
small seeded inputs: the protocols of ``harness.types``, not only ``isinstance``. It returns None
when the plugin fits the contract and otherwise raises one ``AssertionError`` (``ChecksFailed``)
listing every violated rule, one line each: ``"<kind> <name>: <reason> [check_name]"``.

Every rule is a public function ``check_<kind>_<rule>(plugin, info=None)`` taking a built plugin
(and optionally its ``harness.registry.PluginInfo``), so one rule can be run on its own;
``parametrize_with_checks`` makes one pytest case per (plugin, rule). Nothing is downloaded; the
checks run on CPU (and on CUDA too for a loss, when a GPU is present).
"""

from __future__ import annotations

from harness.testing._base import ChecksFailed
from harness.testing.datasets import (
    DATASET_CHECKS,
    check_dataset,
    check_dataset_caption_groups,
    check_dataset_eval_sets,
    check_dataset_methods,
    check_dataset_negatives,
    check_dataset_supplies,
    check_dataset_train_pairs,
    check_dataset_validation_split,
)
from harness.testing.encoders import (
    ENCODER_CHECKS,
    check_encoder,
    check_encoder_attributes,
    check_encoder_deterministic,
    check_encoder_features,
    check_encoder_gradients,
    check_encoder_trainable,
)
from harness.testing.evaluations import (
    EVALUATION_CHECKS,
    check_evaluation,
    check_evaluation_deterministic,
    check_evaluation_main_score,
    check_evaluation_metric_info,
    check_evaluation_reference_rows,
    check_evaluation_results,
    resolve_main_score,
    synthetic_context,
)
from harness.testing.losses import (
    LOSS_CHECKS,
    check_loss,
    check_loss_batch_of_one,
    check_loss_declares_known_extras,
    check_loss_deterministic,
    check_loss_float32,
    check_loss_float64,
    check_loss_gradients,
    check_loss_half_precision,
    check_loss_inputs_unchanged,
    check_loss_is_module,
    check_loss_momentum,
    check_loss_returns_terms,
    check_loss_state_round_trip,
)
from harness.testing.parametrize import CHECKS, NamedCheck, PluginCase, checks_for, parametrize_with_checks, plugin_checks

__all__ = [
    # one call per plugin: every rule, every failure reported
    "check_loss",
    "check_encoder",
    "check_dataset",
    "check_evaluation",
    "ChecksFailed",
    # pytest: one case per (plugin, rule)
    "parametrize_with_checks",
    "plugin_checks",
    "checks_for",
    "PluginCase",
    "NamedCheck",
    "CHECKS",
    # the rules
    "LOSS_CHECKS",
    "ENCODER_CHECKS",
    "DATASET_CHECKS",
    "EVALUATION_CHECKS",
    *(check.__name__ for checks in CHECKS.values() for check in checks),
    # helpers for an author's own tests
    "synthetic_context",
    "resolve_main_score",
]
