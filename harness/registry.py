"""The plugin registry: one ``pluggy.PluginManager("harness")``, built-ins and entry points alike.

Built-in plugins are modules registered through the very same four hooks a third party uses.
Third-party plugins come from the ``harness`` entry-point group; ``HARNESS_LOAD_PLUGINS``
(comma-separated distribution names, compared in PEP 503 normal form; empty = none) limits which
of them load. A plugin that fails to import, whose hook implementation does not match its spec,
or whose hook raises, is reported in ``load_errors`` (one line each) and the others still load.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import inspect
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from harness import hookspecs
from harness.errors import HarnessError, PluginConflict, PluginNotFound

KINDS = ("loss", "encoder", "dataset", "evaluation")
HOOKS = {
    "loss": "harness_register_losses",
    "encoder": "harness_register_encoders",
    "dataset": "harness_register_datasets",
    "evaluation": "harness_register_evaluations",
}
BUILTIN_MODULES = (
    "harness.builtin.losses",
    "harness.builtin.encoders",
    "harness.builtin.datasets",
    "harness.builtin.evaluations",
)
DISTRIBUTION = "contrastive-harness"
REQUIRED = "<required>"


def normalize_distribution(name: str) -> str:
    """PEP 503 normal form, so ``harness_example_loss`` and ``Harness-Example-Loss`` match."""
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for reports that must stay on one line."""
    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _is_plain(value: Any) -> bool:
    """JSON-native data (tuples allowed), i.e. what a job record can hold and hash stably."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return repr(value)


@dataclass
class PluginEntry:
    """One registered plugin: its factory, where it came from, and its params read from the signature."""

    kind: str
    name: str
    factory: Callable[..., Any]
    description: str
    distribution: str
    version: str
    signature: inspect.Signature = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def accepts_any(self) -> bool:
        return any(p.kind is p.VAR_KEYWORD for p in self.signature.parameters.values())

    @property
    def params(self) -> dict[str, Any]:
        """Parameter name -> default (``"<required>"`` when it has none), JSON-safe."""
        out = {}
        for p in self.signature.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[p.name] = REQUIRED if p.default is p.empty else _json_safe(p.default)
        return out

    def _defaults(self) -> dict[str, Any]:
        """The raw defaults (not made JSON-safe) of the params that have one."""
        return {
            p.name: p.default
            for p in self.signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is not p.empty
        }

    def resolve(self, params: dict[str, Any] | None, where: str = "params") -> dict[str, Any]:
        """The params with defaults filled in and values coerced to their annotations.

        Unknown or missing names and values of the wrong type raise ``HarnessError`` naming
        ``where.<param>``. A value pydantic coerces (``1`` for a ``float``, ``"1e-3"`` as PyYAML
        reads it) is stored coerced, so equal settings spelled differently resolve identically.
        """
        params = dict(params or {})
        known = self.params
        if not self.accepts_any:
            unknown = sorted(set(params) - set(known), key=str)
            if unknown:
                hint = _suggest(str(unknown[0]), list(known))
                listing = ", ".join(known) or "none"
                raise HarnessError(
                    f"{where}.{unknown[0]}: {self.kind} {self.name!r} has no parameter {unknown[0]!r}"
                    f"{hint}; its parameters: {listing}"
                )
        missing = [k for k, v in known.items() if v == REQUIRED and k not in params]
        if missing:
            raise HarnessError(f"{where}.{missing[0]}: required by {self.kind} {self.name!r}")
        resolved = self._defaults()
        resolved.update(params)
        return self._check_types(resolved, list(params), where)

    def _hints(self) -> dict[str, Any]:
        target = self.factory.__init__ if inspect.isclass(self.factory) else self.factory
        try:
            return typing.get_type_hints(target)
        except Exception:  # unresolvable annotations: no type check, the factory still validates
            return {}

    def _check_types(self, params: dict[str, Any], given: list[str], where: str) -> dict[str, Any]:
        """Validate the given values against the factory's annotations (pydantic, lax mode).

        Booleans are only accepted where the annotation admits a bool (pydantic would turn
        ``true`` into ``1`` for an ``int``). Defaults are trusted as written.
        """
        import pydantic

        hints = self._hints()
        out = dict(params)
        for key in given:  # in the suite's order: the first bad value is the one reported
            ann, value = hints.get(key), params[key]
            if ann is None or value is None:
                continue
            try:
                adapter = pydantic.TypeAdapter(ann)
            except Exception:  # an annotation pydantic cannot handle: skip the check
                continue
            try:
                coerced = adapter.validate_python(value, strict=True if isinstance(value, bool) else None)
            except pydantic.ValidationError as exc:
                err = exc.errors()[0]
                sub = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
                raise HarnessError(f"{where}.{key}{sub}: {err['msg']} (got {_short(value)})") from None
            except Exception:
                continue
            if _is_plain(coerced):
                out[key] = coerced
        return out

    def create(self, **params: Any) -> Any:
        return self.factory(**params)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
            "params": self.params,
        }


def bind_params(factory: Callable[..., Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the factory's signature defaults filled in (for a ``check_params``).

    A ``check_params`` classmethod written as ``p = bind_params(cls, params)`` reads every value,
    given or default, without repeating the factory's signature.
    """
    bound = inspect.signature(factory).bind(**params)
    bound.apply_defaults()
    return dict(bound.arguments)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def _version_of(distribution: str) -> str:
    try:
        return md.version(distribution)
    except (md.PackageNotFoundError, ValueError):
        return "unknown"


class Registry:
    """Plugins by kind and name, collected once from the plugin manager.

    ``load_errors`` holds one line per plugin that could not load (import error, invalid hook
    implementation, hook that raised); the other plugins are unaffected. Two plugins registering
    the same kind and name raise ``PluginConflict`` naming both distributions.
    """

    def __init__(self, load_entrypoints: bool = True, extra_plugins: list[tuple[object, str]] | None = None):
        self.pm = pluggy.PluginManager("harness")
        self.pm.add_hookspecs(hookspecs)
        self.load_errors: list[str] = []
        self._distribution: dict[str, str] = {}  # pluggy plugin name -> distribution
        for modname in BUILTIN_MODULES:
            try:
                module = importlib.import_module(modname)
            except Exception as exc:
                self.load_errors.append(f"plugin {DISTRIBUTION} ({modname}) failed to load: {one_line(exc)}")
                continue
            self._add(module, modname, DISTRIBUTION, modname)
        if load_entrypoints:
            self._load_entrypoints()
        for obj, dist in extra_plugins or []:
            self._add(obj, f"{dist}:{getattr(obj, '__name__', id(obj))}", dist, repr(obj))
        self.plugins: dict[str, dict[str, PluginEntry]] = {k: {} for k in KINDS}
        self._collect()

    def _add(self, obj: object, name: str, distribution: str, what: str) -> None:
        """Register ``obj`` with pluggy; an invalid hook implementation is a load error, not a crash."""
        if self.pm.is_registered(obj):  # e.g. two entry points naming the same module
            return
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:  # pluggy.PluginValidationError: a hookimpl that does not match its spec
            self.load_errors.append(f"plugin {distribution} ({what}) failed to load: {one_line(exc)}")
            return
        self._distribution[name] = distribution
        if not self.pm.get_hookcallers(obj):
            self.load_errors.append(
                f"plugin {distribution} ({what}) implements no harness hook; decorate its "
                f"harness_register_* functions with @harness.hookimpl"
            )

    def _load_entrypoints(self) -> None:
        """Third-party plugins: the ``harness`` entry-point group, limited by ``HARNESS_LOAD_PLUGINS``."""
        wanted = os.environ.get("HARNESS_LOAD_PLUGINS")
        allowed = None if wanted is None else {normalize_distribution(w) for w in wanted.split(",") if w.strip()}
        seen = set()
        for ep in md.entry_points(group="harness"):
            dist = ep.dist.name if ep.dist is not None else ep.name
            if normalize_distribution(dist) == DISTRIBUTION:  # our own built-ins are registered above
                continue
            if allowed is not None and normalize_distribution(dist) not in allowed:
                continue
            key = (normalize_distribution(dist), ep.name)
            if key in seen:  # the same distribution found twice on sys.path: the first one wins
                continue
            seen.add(key)
            try:
                obj = ep.load()
            except Exception as exc:  # one broken plugin must not take the others down
                self.load_errors.append(f"plugin {dist} ({ep.value}) failed to load: {one_line(exc)}")
                continue
            self._add(obj, f"{dist}:{ep.name}", dist, ep.value)
        for name in sorted((allowed or set()) - {d for d, _ in seen} - {DISTRIBUTION}):
            self.load_errors.append(
                f"HARNESS_LOAD_PLUGINS names {name!r}, but no installed distribution of that name has "
                f"'harness' entry points"
            )

    def _collect(self) -> None:
        """Call every plugin's hooks, in registration order (built-ins first)."""
        for kind in KINDS:
            caller = getattr(self.pm.hook, HOOKS[kind])
            for impl in caller.get_hookimpls():
                if impl.hookwrapper or getattr(impl, "wrapper", False):
                    continue
                dist = self._distribution.get(impl.plugin_name, impl.plugin_name)
                register = self._register_fn(kind, dist)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except PluginConflict:
                    raise
                except Exception as exc:
                    self.load_errors.append(f"plugin {dist} failed in {HOOKS[kind]}: {one_line(exc)}")

    def _register_fn(self, kind: str, dist: str) -> Callable[..., None]:
        version = _version_of(dist)

        def register(name: str, factory: Callable[..., Any], description: str | None = None) -> None:
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{kind} plugin names must be non-empty strings, got {name!r}")
            if not callable(factory):
                raise ValueError(f"{kind} plugin {name!r}: factory must be callable, got {factory!r}")
            if description is not None and not isinstance(description, str):
                raise ValueError(f"{kind} plugin {name!r}: description must be a string, got {description!r}")
            try:
                sig = inspect.signature(factory)  # for a class: its __init__ without self
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{kind} plugin {name!r}: cannot read the factory's signature: {exc}") from None
            existing = self.plugins[kind].get(name)
            if existing is not None:
                raise PluginConflict(
                    f"{kind} plugin {name!r} is registered twice: by {existing.distribution} and by {dist}; "
                    f"uninstall one or limit HARNESS_LOAD_PLUGINS"
                )
            self.plugins[kind][name] = PluginEntry(
                kind=kind,
                name=name,
                factory=factory,
                description=(description.strip().splitlines() or [""])[0] if description else _first_doc_line(factory),
                distribution=dist,
                version=version,
                signature=sig,
            )

        return register

    def get(self, kind: str, name: str) -> PluginEntry:
        if kind not in self.plugins:
            raise HarnessError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
        try:
            return self.plugins[kind][name]
        except (KeyError, TypeError):
            names = sorted(self.plugins[kind])
            hint = _suggest(str(name), names)
            raise PluginNotFound(
                f"unknown {kind} {name!r}{hint}; available: {', '.join(names) or 'none'}"
            ) from None

    def create(self, kind: str, name: str, **params: Any) -> Any:
        entry = self.get(kind, name)
        return entry.create(**entry.resolve(params, where=f"{kind} {name!r} params"))

    def list(self) -> list[dict[str, Any]]:
        """Every plugin as a JSON-safe dict, by kind then name."""
        return [e.as_dict() for kind in KINDS for e in sorted(self.plugins[kind].values(), key=lambda e: e.name)]


_REGISTRY: Registry | None = None  # the one piece of global state: the loaded plugin manager


def get_registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry()
    return _REGISTRY


def set_registry(registry: Registry | None) -> None:
    """Replace (or with None, reset) the process-wide registry; for tests and embedding."""
    global _REGISTRY
    _REGISTRY = registry
