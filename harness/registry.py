"""The plugin registry: one ``pluggy.PluginManager("harness")``, built-ins and entry points alike.

Built-in plugins are modules registered through the very same four hooks a third party uses.
Third-party plugins come from the ``harness`` entry-point group; ``HARNESS_LOAD_PLUGINS``
(comma-separated distribution names, compared in PEP 503 normal form; empty = none) limits which
of them load. A plugin that fails to import, whose hook implementation does not match its spec,
or whose hook raises, is reported in ``load_errors`` (one line each) and the others still load.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import importlib.metadata as md
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from harness import hookspecs, interrupts
from harness import params as params_mod
from harness.errors import HarnessError, PluginConflict, PluginNotFound, one_line
from harness.params import REQUIRED, bind_params  # noqa: F401 - re-exported (older plugins import them here)
from harness.types import MainScore, declared_extras, names_of  # suite and testing import declared_extras from here too

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


def normalize_distribution(name: str) -> str:
    """PEP 503 normal form, so ``harness_example_loss`` and ``Harness-Example-Loss`` match."""
    return re.sub(r"[-_.]+", "-", name).lower().strip()


@dataclass(frozen=True)
class PluginInfo:
    """What the harness knows about a plugin without building it: read once, when it is registered.

    The one typed record of plugin metadata: the registry, ``harness plugins``, validation,
    tuning, the runner and ``harness.testing`` read this instead of the factory's attributes.

    - ``params``: each parameter's ``ParamSpec`` (default, type, description, limits), in
      signature order; ``defaults`` gives name -> default (``"<required>"`` when it has none);
    - ``extras`` (losses): the loss extras the factory declares (``extras`` on the class);
    - ``supplies`` (datasets): the extras the dataset can supply (its ``supplies``);
    - ``splits`` (datasets): the splits ``eval_sets`` answers (its ``splits``, default ``("test",)``);
    - ``main_score`` (evaluations): the ``MainScore`` the class declares, if any (an instance may
      still set its own; the runner reads the instance);
    - ``check_params``: the factory's ``check_params(**params)`` callable, if any (encoders and
      datasets check values with it without being built).
    """

    kind: str
    name: str
    distribution: str
    version: str
    description: str
    params: dict[str, params_mod.ParamSpec] = field(default_factory=dict)
    extras: tuple[str, ...] = ()
    supplies: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    main_score: MainScore | None = None
    check_params: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        distribution: str,
        version: str,
        description: str | None = None,
        signature: inspect.Signature | None = None,
    ) -> PluginInfo:
        """The record of ``factory`` registered as ``kind`` ``name`` (description: its docstring's first line)."""
        check = getattr(factory, "check_params", None)
        main_score = getattr(factory, "main_score", None) if kind == "evaluation" else None
        return cls(
            kind=kind,
            name=name,
            distribution=distribution,
            version=version,
            description=(description.strip().splitlines() or [""])[0] if description else _first_doc_line(factory),
            params=params_mod.param_specs(factory, signature),
            extras=declared_extras(factory) if kind == "loss" else (),
            supplies=names_of(getattr(factory, "supplies", ())) if kind == "dataset" else (),
            splits=names_of(getattr(factory, "splits", ("test",))) if kind == "dataset" else (),
            main_score=main_score if isinstance(main_score, MainScore) else None,
            check_params=check if callable(check) else None,
        )

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default (``"<required>"`` when it has none), JSON-safe."""
        return {n: params_mod.json_safe(spec.default) for n, spec in self.params.items()}

    @property
    def required(self) -> tuple[str, ...]:
        """The parameters without a default."""
        return tuple(n for n, spec in self.params.items() if spec.required)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-safe record ``harness plugins --json`` prints (and ``harness.list_plugins`` returns)."""
        out = {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
            "params": self.defaults,
            "param_info": {k: v.as_dict() for k, v in self.params.items()},
        }
        if self.kind == "loss":
            out["extras"] = list(self.extras)
        if self.kind == "dataset":
            out["supplies"] = list(self.supplies)
        return out


@dataclass
class PluginEntry:
    """One registered plugin: its factory and signature, and its ``PluginInfo``."""

    info: PluginInfo
    factory: Callable[..., Any]
    signature: inspect.Signature = field(repr=False, default=None)  # type: ignore[assignment]

    kind = property(lambda self: self.info.kind)
    name = property(lambda self: self.info.name)
    distribution = property(lambda self: self.info.distribution)
    version = property(lambda self: self.info.version)
    description = property(lambda self: self.info.description)
    extras = property(lambda self: self.info.extras, doc="The loss extras the factory declares; () for other kinds.")
    supplies = property(lambda self: self.info.supplies, doc="What a dataset factory supplies beyond pairs.")

    @property
    def params(self) -> dict[str, Any]:
        """Parameter name -> default (``"<required>"`` when it has none), JSON-safe."""
        return self.info.defaults

    def param_specs(self) -> dict[str, params_mod.ParamSpec]:
        """Each parameter's default, type, description and limits (see ``harness.params``)."""
        return dict(self.info.params)

    def resolve(self, params: dict[str, Any] | None, where: str = "params") -> dict[str, Any]:
        """The params with defaults filled in, validated and coerced (see ``harness.params.resolve``)."""
        return params_mod.resolve(self.factory, params, f"{self.kind} {self.name!r}", where, self.signature)

    def create(self, **params: Any) -> Any:
        return self.factory(**params)

    def as_dict(self) -> dict[str, Any]:
        return self.info.as_dict()


def _first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def _version_of(distribution: str) -> str:
    try:
        return md.version(distribution)
    except (md.PackageNotFoundError, ValueError):
        return "unknown"


class PluginEscaped(Exception):
    """A plugin raised ``SystemExit``, ``KeyboardInterrupt`` or another ``BaseException`` outside a job."""


def guarded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` for a plugin's import or hook, isolated like any broken plugin.

    What it prints is swallowed (a plugin that runs argparse at import must not print a usage line
    for the harness's command); a ``SystemExit`` (``sys.exit(0)`` included), ``KeyboardInterrupt``
    or other ``BaseException`` it raises becomes ``PluginEscaped``, an ordinary load error, unless
    the user really pressed Ctrl-C or sent SIGTERM meanwhile (``harness.interrupts``), which stops
    the harness as usual.
    """
    sink = io.StringIO()
    with interrupts.signals(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            return fn(*args, **kwargs)
        except Exception:
            raise
        except BaseException as exc:
            if interrupts.received() is not None:
                raise
            what = f"exit code {exc.code!r}" if isinstance(exc, SystemExit) else type(exc).__name__
            raise PluginEscaped(f"it raised {type(exc).__name__} ({what}); a plugin must not exit or "
                                f"interrupt the harness") from None


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
                obj = guarded(ep.load)
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
                    guarded(impl.function, **{arg: register for arg in impl.argnames})
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
            info = PluginInfo.of(kind, name, factory, dist, version, description, sig)
            self.plugins[kind][name] = PluginEntry(info=info, factory=factory, signature=sig)

        return register

    def get(self, kind: str, name: str) -> PluginEntry:
        if kind not in self.plugins:
            raise HarnessError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
        try:
            return self.plugins[kind][name]
        except (KeyError, TypeError):
            names = sorted(self.plugins[kind])
            hint = params_mod.suggest(str(name), names)
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
