"""``parametrize_with_checks``: one pytest case per (plugin, rule), like scikit-learn's helper.

    from harness.testing import parametrize_with_checks

    @parametrize_with_checks([("loss", "my_loss"), ("loss", MyLoss, {"temperature": 0.1})])
    def test_contract(plugin, check):
        check(plugin)

pytest then shows ``test_contract[loss:my_loss-check_loss_gradients]`` and so on: a violated rule
fails its own case, with its own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from harness.testing._base import Check, run_one
from harness.testing.datasets import DATASET_CHECKS
from harness.testing.encoders import ENCODER_CHECKS
from harness.testing.evaluations import EVALUATION_CHECKS
from harness.testing.losses import LOSS_CHECKS

CHECKS: dict[str, tuple[Check, ...]] = {
    "loss": LOSS_CHECKS,
    "encoder": ENCODER_CHECKS,
    "dataset": DATASET_CHECKS,
    "evaluation": EVALUATION_CHECKS,
}


def checks_for(kind: str) -> tuple[Check, ...]:
    """The rules of a plugin kind ("loss", "encoder", "dataset" or "evaluation"), in the order they run."""
    try:
        return CHECKS[kind]
    except KeyError:
        raise ValueError(f"unknown plugin kind {kind!r}; kinds: {', '.join(CHECKS)}") from None


@dataclass(frozen=True)
class PluginCase:
    """A plugin to check: its kind, a registered name or a factory, and params to build it with."""

    kind: str
    target: str | Callable[..., Any]
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """``loss:clip`` or ``loss:MyLoss(temperature=0.1)``: the pytest id of its cases."""
        name = self.target if isinstance(self.target, str) else getattr(self.target, "__name__", repr(self.target))
        args = ",".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.kind}:{name}" + (f"({args})" if args else "")


@dataclass(frozen=True)
class NamedCheck:
    """One rule, callable on a ``PluginCase``: builds the plugin afresh and runs the rule on it.

    ``check(case, **params)`` builds with ``case.params`` updated by ``params`` (e.g. a path to
    data a test fixture wrote); ``AssertionError`` when the rule is violated.
    """

    rule: Check

    @property
    def __name__(self) -> str:  # noqa: A003 - reads like the rule it wraps
        return self.rule.__name__

    def __call__(self, case: PluginCase, **params: Any) -> None:
        run_one(self.rule, case.kind, case.target, {**case.params, **params})

    def __repr__(self) -> str:
        return self.rule.__name__


def _case(item: PluginCase | tuple) -> PluginCase:
    if isinstance(item, PluginCase):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        case = PluginCase(*item)
        checks_for(case.kind)  # an unknown kind fails at collection
        return case
    raise TypeError(f"expected a PluginCase or a (kind, name_or_factory[, params]) tuple, got {item!r}")


def plugin_checks(plugins: Iterable[PluginCase | tuple]) -> list[tuple[PluginCase, NamedCheck]]:
    """Every (plugin, check) pair: each plugin with each rule of its kind."""
    return [(case, NamedCheck(rule)) for case in map(_case, plugins) for rule in checks_for(case.kind)]


def parametrize_with_checks(plugins: Iterable[PluginCase | tuple]):
    """A ``pytest.mark.parametrize`` decorator over every (plugin, check) pair, with readable ids.

    ``plugins`` holds ``PluginCase``s or tuples ``(kind, name_or_factory)`` /
    ``(kind, name_or_factory, params)``. The decorated test takes ``plugin`` and ``check`` and
    calls ``check(plugin)``; ids read ``<kind>:<name>-<check name>``. A registered name is looked up
    when the case runs, in the registry then in place (``harness.registry.set_registry``).
    """
    import pytest

    pairs = plugin_checks(plugins)
    return pytest.mark.parametrize(
        "plugin, check", [pytest.param(case, check, id=f"{case.id}-{check.__name__}") for case, check in pairs]
    )
