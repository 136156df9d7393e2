"""Checks of a suite's plugins before anything runs: the distributions it requires are installed,
a factory builds with the given params (``_check_factory``), and the extras a loss declares are
supplied by every dataset it meets (``check_extras``). Every problem is a one-line ``HarnessError``."""

from __future__ import annotations

import re
from typing import Any

from harness.errors import HarnessError, short_repr
from harness.job import PluginSpec


def check_requires(suite, registry) -> None:
    """Each distribution in the suite's ``requires`` is installed and loaded, else one line saying what to install."""
    import importlib.metadata as md

    from harness.registry import normalize_distribution

    loaded = {normalize_distribution(e.distribution) for kind in registry.plugins.values() for e in kind.values()}
    for i, name in enumerate(suite.requires):
        try:
            md.version(name)
        except md.PackageNotFoundError:
            raise HarnessError(
                f"requires[{i}]: this suite needs the plugin distribution {name!r}, which is not installed; "
                f"pip install {name} (from the harness repository: pip install ./plugins/{name})"
            ) from None
        if normalize_distribution(name) not in loaded:
            raise HarnessError(
                f"requires[{i}]: {name!r} is installed but none of its plugins loaded (see the warnings above, "
                f"or HARNESS_LOAD_PLUGINS)"
            )


def _check_factory(kind: str, spec: PluginSpec, field: str, registry, build: bool = True) -> Any:
    """Build the plugin once and return it (or, with ``build=False``, call its factory's
    ``check_params`` if it has one, and return None); a ``ValueError``/``TypeError`` is bad input.

    The error names ``field.params.<p>`` for the first param its message mentions. Any other
    exception is a bug in the plugin and propagates (the CLI logs its traceback).
    """
    entry = registry.get(kind, spec.name)
    check = entry.create if build else entry.info.check_params
    if not callable(check):
        return None
    from harness.registry import PluginEscaped, guarded

    try:
        made = guarded(check, **spec.params)
    except PluginEscaped as exc:
        raise HarnessError(f"{field}: {kind} {spec.name!r} ({entry.distribution}) failed while building: {exc}") from None
    except (ValueError, TypeError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        named = [p for p in sorted(spec.params, key=len, reverse=True) if re.search(rf"\b{re.escape(p)}\b", text)]
        where = f"{field}.params.{named[0]}" if named else f"{field}.params"
        text = text if len(text) <= 300 else text[:297] + "..."
        raise HarnessError(f"{where}: {kind} {spec.name!r} rejected its params: {text}") from None
    return made if build else None


def check_extras(loss: Any, spec: PluginSpec, field: str, datasets: list[PluginSpec], registry) -> tuple[str, ...]:
    """The loss's declared extras, each a known name and each one the suite's datasets can supply;
    a built loss's ``momentum`` (momentum towers) a float in (0, 1), present if it asks for their features."""
    from harness.registry import declared_extras
    from harness.types import LOSS_EXTRAS, MOMENTUM_EXTRAS, SUPPLIED_EXTRAS, loss_momentum

    extras = declared_extras(loss)
    for name in extras:
        if not isinstance(name, str) or name not in LOSS_EXTRAS:
            raise HarnessError(
                f"{field}: loss {spec.name!r} declares an unknown extra {short_repr(name, 40)}; "
                f"known extras: {', '.join(LOSS_EXTRAS)}"
            )
    for name in set(extras) & set(SUPPLIED_EXTRAS):
        for d, ds in enumerate(datasets):
            entry = registry.get("dataset", ds.name)
            if name not in entry.supplies:
                able = sorted(n for n, e in registry.plugins["dataset"].items() if name in e.supplies)
                raise HarnessError(
                    f"{field}: loss {spec.name!r} needs the extra {name!r}, which dataset {ds.name!r} "
                    f"(datasets[{d}]) cannot supply; datasets that can: {', '.join(able) or 'none'}"
                )
    if not isinstance(loss, type):  # a built loss (a factory's attributes may be properties)
        try:
            momentum = loss_momentum(loss)
        except ValueError as exc:
            raise HarnessError(f"{field}: loss {spec.name!r}: {exc}") from None
        wanted = [name for name in extras if name in MOMENTUM_EXTRAS]
        if wanted and momentum is None:
            raise HarnessError(f"{field}: loss {spec.name!r} declares {wanted[0]!r} but has no momentum attribute "
                               f"(a float in (0, 1): the EMA rate of the momentum towers whose features it asks for)")
    return extras
