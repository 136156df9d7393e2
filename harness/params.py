"""Plugin parameters, described once: in the factory's signature.

A factory (a class, whose ``__init__`` is read, or a function) declares each parameter as a keyword
argument with a type annotation and a default; limits and help text ride on the annotation::

    temperature: Annotated[float, Field(gt=0, le=1, description="initial temperature")] = 0.07

Everything else reads that one description: ``resolve`` (unknown and missing names, types and
limits, through pydantic in lax mode), ``param_specs`` (``harness plugins``, ``--json``),
``harness validate`` and ``harness.testing``. A factory still checks combinations of values
itself (raising ``ValueError`` naming the parameter).
"""

from __future__ import annotations

import difflib
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.errors import ParamError, short_repr

REQUIRED = "<required>"
_LIMITS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length")


def signature(factory: Callable[..., Any]) -> inspect.Signature:
    """The factory's signature (a class: its ``__init__`` without ``self``)."""
    return inspect.signature(factory)


def _named(sig: inspect.Signature) -> list[inspect.Parameter]:
    return [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def accepts_any(sig: inspect.Signature) -> bool:
    """Whether the factory takes ``**kwargs`` (then unknown names are its business)."""
    return any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    """The factory's parameter annotations with their ``Annotated`` metadata ({} if unresolvable)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable annotations: no type check, the factory still validates
        return {}


def json_safe(value: Any) -> Any:
    """JSON-native data (tuples become lists; anything else its short repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return short_repr(value)


def is_plain(value: Any) -> bool:
    """JSON-native data (tuples allowed), i.e. what a job record can hold and hash stably."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def _type_name(annotation: Any) -> str:
    """A readable type: ``float``, ``int | None``, ``'none' | 'text' | 'image'``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "None"
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _metadata(annotation: Any) -> tuple[str | None, dict[str, Any], list[Any] | None]:
    """(description, limits, choices) read from an ``Annotated[..., Field(...)]`` annotation."""
    description, limits, choices = None, {}, None
    stack = [annotation]
    while stack:
        ann = stack.pop()
        origin, args = typing.get_origin(ann), typing.get_args(ann)
        if origin is typing.Annotated:
            stack.append(args[0])
            for meta in args[1:]:
                description = getattr(meta, "description", None) or description
                for item in [meta, *getattr(meta, "metadata", [])]:
                    for name in _LIMITS:
                        value = getattr(item, name, None)
                        if value is not None and not callable(value):
                            limits[name] = value
        elif origin is typing.Literal:
            choices = list(args)
        elif args:
            stack.extend(args)
    return description, limits, choices


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a plugin factory, as ``harness plugins`` shows it."""

    name: str
    default: Any  # REQUIRED when there is none
    type: str
    description: str = ""
    limits: dict[str, Any] = field(default_factory=dict)
    choices: list[Any] | None = None

    @property
    def required(self) -> bool:
        return self.default == REQUIRED

    def limits_text(self) -> str:
        """``> 0, <= 1`` or ``one of 'a', 'b'``; empty without limits."""
        signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "multiple_of": "multiple of",
                 "min_length": "length >=", "max_length": "length <="}
        parts = [f"{signs[k]} {v}" for k, v in self.limits.items()]
        if self.choices:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "default": json_safe(self.default),
            "required": self.required,
            "description": self.description,
            "limits": json_safe(self.limits),
            "choices": json_safe(self.choices),
        }


def param_specs(factory: Callable[..., Any], sig: inspect.Signature | None = None) -> dict[str, ParamSpec]:
    """Every named parameter of ``factory`` with its default, type, description and limits."""
    sig = sig or signature(factory)
    hints = type_hints(factory)
    out = {}
    for p in _named(sig):
        ann = hints.get(p.name, p.annotation)
        description, limits, choices = _metadata(ann) if ann is not inspect.Parameter.empty else (None, {}, None)
        out[p.name] = ParamSpec(
            name=p.name,
            default=REQUIRED if p.default is p.empty else p.default,
            type="any" if ann is inspect.Parameter.empty else _type_name(ann),
            description=description or "",
            limits=limits,
            choices=choices,
        )
    return out


def defaults(factory: Callable[..., Any], sig: inspect.Signature | None = None) -> dict[str, Any]:
    """Parameter name -> default (``"<required>"`` when it has none), JSON-safe."""
    sig = sig or signature(factory)
    return {p.name: REQUIRED if p.default is p.empty else json_safe(p.default) for p in _named(sig)}


def suggest(name: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve(
    factory: Callable[..., Any],
    params: dict[str, Any] | None,
    what: str,
    where: str = "params",
    sig: inspect.Signature | None = None,
) -> dict[str, Any]:
    """The params with defaults filled in and values validated and coerced to their annotations.

    Unknown or missing names, values of the wrong type and values outside an annotation's limits
    raise ``ParamError`` (a ``HarnessError``) naming ``where.<param>`` (``what`` names the plugin, e.g.
    ``loss 'clip'``). A value pydantic coerces (``1`` for a ``float``, ``"1e-3"`` as PyYAML reads
    it) is stored coerced, so equal settings spelled differently resolve identically.
    """
    sig = sig or signature(factory)
    params = dict(params or {})
    named = {p.name: p for p in _named(sig)}
    if not accepts_any(sig):
        unknown = sorted(set(params) - set(named), key=str)
        if unknown:
            bad = short_repr(unknown[0], 40).strip("'")
            listing = ", ".join(named) or "none"
            raise ParamError(
                f"{where}.{bad}: {what} has no parameter {bad!r}{suggest(str(unknown[0]), list(named))}; "
                f"its parameters: {listing}"
            )
    missing = [n for n, p in named.items() if p.default is p.empty and n not in params]
    if missing:
        raise ParamError(f"{where}.{missing[0]}: required by {what}")
    resolved = {n: p.default for n, p in named.items() if p.default is not p.empty}
    resolved.update(params)
    hints = type_hints(factory)
    for key in params:  # in the suite's order: the first bad value is the one reported
        if key in hints:
            resolved[key] = check_value(hints[key], params[key], f"{where}.{key}")
    return resolved


def check_value(annotation: Any, value: Any, where: str) -> Any:
    """``value`` validated against ``annotation`` (pydantic, lax mode); the coerced value when plain.

    Booleans are accepted only where the annotation admits a bool (pydantic would turn ``true``
    into ``1`` for an ``int``). ``None`` is accepted as "use the plugin's own handling" only where
    the annotation allows it.
    """
    import pydantic

    try:  # Python's re for Field(pattern=...): an author's pattern means what it means in Python
        adapter = pydantic.TypeAdapter(annotation, config=pydantic.ConfigDict(regex_engine="python-re"))
    except pydantic.PydanticSchemaGenerationError:  # a type pydantic cannot handle: the factory validates
        return value
    try:
        coerced = adapter.validate_python(value, strict=True if isinstance(value, bool) else None)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        sub = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        raise ParamError(f"{where}{sub}: {err['msg']} (got {short_repr(value)})") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ParamError(f"{where}: invalid value {short_repr(value)} ({type(exc).__name__})") from None
    if not _finite(coerced):
        raise ParamError(f"{where}: expected a finite number (got {short_repr(value)})")
    return coerced if is_plain(coerced) else value


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in ``value`` (e.g. "1.0e400" that pydantic read as a float)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def bind_params(factory: Callable[..., Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the factory's signature defaults filled in (for a ``check_params``).

    A ``check_params`` classmethod written as ``p = bind_params(cls, params)`` reads every value,
    given or default, without repeating the factory's signature.
    """
    bound = inspect.signature(factory).bind(**params)
    bound.apply_defaults()
    return dict(bound.arguments)
