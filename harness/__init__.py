"""contrastive-harness: a plugin-based benchmark harness for contrastive objectives.

Public API::

    harness.create_loss("clip", temperature=0.07)      # -> torch.nn.Module
    harness.create_encoder(...), harness.create_dataset(...), harness.create_evaluation(...)
    harness.list_plugins()                             # -> list[dict]
    harness.gap_metrics(image_emb, text_emb, seed=0)   # -> dict[str, float]

Plugin authors import from ``harness.api`` (``hookimpl``, the contract types, the loss building
blocks; see docs/writing-a-plugin.md) and check their plugins with ``harness.testing``;
``harness.hookimpl``, ``harness.Skip`` and ``harness.gather_features`` stay here for older plugins.
Importing ``harness`` loads no plugin: the registry loads the built-ins and the installed
distributions on first use (``create_*``, ``list_plugins``).
"""

from __future__ import annotations

from typing import Any

from harness.hookspecs import hookimpl
from harness.version import __version__  # noqa: F401 - harness.__version__


def __getattr__(name: str) -> Any:
    """``harness.Skip`` on first use: importing ``harness`` (as every submodule does) must not load
    torch, so the leaderboard and the CLI's light commands start without it."""
    if name == "Skip":
        from harness.types import Skip

        return Skip
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


__all__ = [
    "hookimpl",
    "Skip",
    "create_loss",
    "create_encoder",
    "create_dataset",
    "create_evaluation",
    "list_plugins",
    "gap_metrics",
    "gather_features",
]


def _create(kind: str, name: str, params: dict[str, Any]) -> Any:
    from harness.registry import get_registry

    return get_registry().create(kind, name, **params)


def create_loss(name: str, **params: Any):
    """Build the loss plugin ``name`` (a ``torch.nn.Module``) from keyword params."""
    return _create("loss", name, params)


def create_encoder(name: str, **params: Any):
    """Build the encoder plugin ``name`` (a ``harness.types.Encoder``)."""
    return _create("encoder", name, params)


def create_dataset(name: str, **params: Any):
    """Build the dataset plugin ``name`` (a ``harness.types.Dataset``)."""
    return _create("dataset", name, params)


def create_evaluation(name: str, **params: Any):
    """Build the evaluation plugin ``name`` (a ``harness.types.Evaluation``)."""
    return _create("evaluation", name, params)


def list_plugins() -> list[dict[str, Any]]:
    """Every plugin: dicts with keys kind, name, distribution, version, description, params."""
    from harness.registry import get_registry

    return get_registry().list()


def gap_metrics(image_emb, text_emb, seed: int = 0, **kwargs: Any) -> dict[str, float]:
    """Modality/contrastive gap metrics of paired embeddings; see ``harness.metrics.gap``."""
    from harness.metrics.gap import gap_metrics as _gap_metrics

    return _gap_metrics(image_emb, text_emb, seed=seed, **kwargs)


def gather_features(image_features, text_features):
    """All ranks' features (the local shard keeps its gradients); a no-op outside torch.distributed."""
    from harness.distributed import gather_features as _gather

    return _gather(image_features, text_features)
