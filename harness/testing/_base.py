"""What every rule of ``harness.testing`` shares: building the plugin, failing, collecting failures."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from harness.errors import HarnessError, one_line
from harness.registry import PluginInfo

Check = Callable[..., None]  # check_*(plugin, info=None): None, or AssertionError naming the violation


def fail(what: str, reason: str) -> None:
    """Raise the ``AssertionError`` of a violated rule: ``"<kind> <name>: <reason>"``, one line."""
    raise AssertionError(f"{what}: {reason}")


def guard(what: str, call: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, its exception (other than an ``AssertionError``) reported as a violation of ``call``."""
    try:
        return fn()
    except AssertionError:
        raise
    except Exception as exc:
        fail(what, f"{call} raised {one_line(exc)}")


def unregistered_info(kind: str, factory: Callable[..., Any], name: str | None = None) -> PluginInfo:
    """The ``PluginInfo`` of a factory that is not registered (distribution ``""``), as the registry reads it."""
    name = name or getattr(factory, "__name__", type(factory).__name__)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = inspect.Signature()
    return PluginInfo.of(kind, name, factory, distribution="", version="", signature=sig)


def subject(kind: str, plugin: Any, info: PluginInfo | None) -> tuple[PluginInfo, str]:
    """(info, what): a check called on a bare instance reads its class as the factory.

    ``what`` names the plugin in messages: ``loss 'clip'`` when registered, ``loss MyLoss`` for a
    factory or an instance checked directly.
    """
    if info is None:
        info = unregistered_info(kind, type(plugin))
    return info, (f"{kind} {info.name!r}" if info.distribution else f"{kind} {info.name}")


def build(kind: str, name_or_factory: str | Callable[..., Any], params: dict[str, Any]) -> tuple[Any, PluginInfo]:
    """(plugin, info): a fresh plugin, its params resolved and validated as the registry does."""
    from harness import params as params_mod
    from harness.registry import get_registry

    if isinstance(name_or_factory, str):
        entry = get_registry().get(kind, name_or_factory)
        info = entry.info
        make = lambda: entry.create(**entry.resolve(params))  # noqa: E731
    else:
        factory = name_or_factory
        info = unregistered_info(kind, factory)
        make = lambda: factory(**params_mod.resolve(factory, params, subject(kind, None, info)[1]))  # noqa: E731
    what = subject(kind, None, info)[1]
    try:
        return make(), info
    except HarnessError as exc:
        fail(what, f"its params are refused: {' '.join(str(exc).split())}")
    except Exception as exc:
        fail(what, f"building it raised {one_line(exc)}")


class ChecksFailed(AssertionError):
    """Every rule a plugin violates: ``failures`` holds (check name, message) pairs, in rule order.

    ``str()`` is one line per distinct message, ``"<kind> <name>: <reason> [check_a, check_b]"``
    naming the rules that failed with it (a loss that returns no dict fails every rule that calls it).
    """

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        rules: dict[str, list[str]] = {}
        for name, message in failures:
            rules.setdefault(message, []).append(name)
        super().__init__("\n".join(f"{message} [{', '.join(names)}]" for message, names in rules.items()))


def run_one(check: Check, kind: str, name_or_factory: str | Callable[..., Any], params: dict[str, Any]) -> None:
    """Build a fresh plugin and run one rule on it (``AssertionError`` when it is violated)."""
    plugin, info = build(kind, name_or_factory, params)
    try:
        check(plugin, info)
    except AssertionError:
        raise
    except Exception as exc:  # the rule could not run to its end: a violation too, said as such
        fail(subject(kind, plugin, info)[1], f"the check raised {one_line(exc)}")


def run_checks(
    checks: Sequence[Check], kind: str, name_or_factory: str | Callable[..., Any], params: dict[str, Any]
) -> None:
    """Run every rule, each on a freshly built plugin; one ``ChecksFailed`` listing every violation.

    A plugin that cannot be built fails at once (no rule can run): the ``AssertionError`` of the build.
    """
    build(kind, name_or_factory, params)  # refused params: one message, as the registry would refuse them
    failures = []
    for check in checks:
        try:
            run_one(check, kind, name_or_factory, params)
        except AssertionError as exc:
            failures.append((check.__name__, str(exc)))
    if failures:
        raise ChecksFailed(failures)
