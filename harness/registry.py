"""The plugin registry: one ``pluggy.PluginManager("harness")``, built-ins and entry points alike.

Built-in plugins are modules registered through the very same four hooks a third party uses.
Third-party plugins come from the ``harness`` entry-point group; ``HARNESS_LOAD_PLUGINS``
(comma-separated distribution names, empty = none) limits which of them load. A plugin that fails
to import, or whose hook raises, is reported in ``load_errors`` and the others still load.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import inspect
import os
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
    """One registered plugin."""

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

    def resolve(self, params: dict[str, Any] | None, where: str = "params") -> dict[str, Any]:
        """The params with defaults filled in; unknown or missing names raise ``HarnessError``."""
        params = dict(params or {})
        known = self.params
        if not self.accepts_any:
            unknown = sorted(set(params) - set(known))
            if unknown:
                hint = _suggest(unknown[0], list(known))
                listing = ", ".join(known) or "none"
                raise HarnessError(
                    f"{where}.{unknown[0]}: {self.kind} {self.name!r} has no parameter {unknown[0]!r}"
                    f"{hint}; its parameters: {listing}"
                )
        missing = [k for k, v in known.items() if v == REQUIRED and k not in params]
        if missing:
            raise HarnessError(f"{where}.{missing[0]}: required by {self.kind} {self.name!r}")
        resolved = {k: v for k, v in known.items() if v != REQUIRED}
        resolved.update(params)
        self._check_types(resolved, where)
        return resolved

    def _check_types(self, params: dict[str, Any], where: str) -> None:
        """Check values against the factory's annotations (pydantic, lax mode) where it has them."""
        import pydantic

        try:
            hints = inspect.get_annotations(self.factory, eval_str=True) if inspect.isfunction(self.factory) \
                else inspect.get_annotations(self.factory.__init__, eval_str=True)
        except Exception:  # unresolvable annotations: no type check, the factory still validates
            return
        for key, value in params.items():
            ann = hints.get(key)
            if ann is None or value is None:
                continue
            try:
                pydantic.TypeAdapter(ann).validate_python(value)
            except pydantic.ValidationError as exc:
                msg = exc.errors()[0]["msg"]
                raise HarnessError(f"{where}.{key}: {msg} (got {value!r})") from None
            except Exception:  # annotation pydantic cannot handle: skip the check
                continue

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


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def _version_of(distribution: str) -> str:
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return "unknown"


class Registry:
    """Plugins by kind and name, collected once from the plugin manager."""

    def __init__(self, load_entrypoints: bool = True, extra_plugins: list[tuple[object, str]] | None = None):
        self.pm = pluggy.PluginManager("harness")
        self.pm.add_hookspecs(hookspecs)
        self.load_errors: list[str] = []
        self._distribution: dict[str, str] = {}  # pluggy plugin name -> distribution
        for modname in BUILTIN_MODULES:
            self._add(importlib.import_module(modname), modname, DISTRIBUTION)
        if load_entrypoints:
            self._load_entrypoints()
        for obj, dist in extra_plugins or []:
            self._add(obj, f"{dist}:{getattr(obj, '__name__', id(obj))}", dist)
        self.plugins: dict[str, dict[str, PluginEntry]] = {k: {} for k in KINDS}
        self._collect()

    def _add(self, obj: object, name: str, distribution: str) -> None:
        self.pm.register(obj, name=name)
        self._distribution[name] = distribution

    def _load_entrypoints(self) -> None:
        wanted = os.environ.get("HARNESS_LOAD_PLUGINS")
        allowed = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        seen = set()
        for ep in md.entry_points(group="harness"):
            dist = ep.dist.name if ep.dist is not None else ep.name
            if allowed is not None and dist not in allowed:
                continue
            if (dist, ep.name) in seen or self.pm.has_plugin(f"{dist}:{ep.name}"):
                continue
            seen.add((dist, ep.name))
            try:
                obj = ep.load()
            except Exception as exc:  # one broken plugin must not take the others down
                self.load_errors.append(f"plugin {dist} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
                continue
            self._add(obj, f"{dist}:{ep.name}", dist)

    def _collect(self) -> None:
        for kind in KINDS:
            caller = getattr(self.pm.hook, HOOKS[kind])
            for impl in reversed(caller.get_hookimpls()):  # registration order
                dist = self._distribution.get(impl.plugin_name, impl.plugin_name)
                try:
                    impl.function(register=self._register_fn(kind, dist))
                except PluginConflict:
                    raise
                except Exception as exc:
                    self.load_errors.append(
                        f"plugin {dist} failed in {HOOKS[kind]}: {type(exc).__name__}: {exc}"
                    )

    def _register_fn(self, kind: str, dist: str) -> Callable[..., None]:
        version = _version_of(dist)

        def register(name: str, factory: Callable[..., Any], description: str | None = None) -> None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"{kind} plugin names must be non-empty strings, got {name!r}")
            existing = self.plugins[kind].get(name)
            if existing is not None:
                raise PluginConflict(
                    f"{kind} plugin {name!r} is registered twice: by {existing.distribution} and by {dist}; "
                    f"uninstall one or limit HARNESS_LOAD_PLUGINS"
                )
            target = factory.__init__ if inspect.isclass(factory) else factory
            sig = inspect.signature(target)
            if inspect.isclass(factory):
                sig = sig.replace(parameters=list(sig.parameters.values())[1:])  # drop self
            self.plugins[kind][name] = PluginEntry(
                kind=kind,
                name=name,
                factory=factory,
                description=description or _first_doc_line(factory),
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
