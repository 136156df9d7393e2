"""What a plugin returns, made JSON before it is stored: numbers converted, anything else refused.

An evaluation's metrics, its ``metric_info`` and ``reference_rows``, and a dataset's ``info()`` go
into ``result.json``. Plugins compute them with numpy and torch, so they often hold values that
``json`` cannot write. ``to_json`` converts what is a number and refuses the rest with ``NotJSON``,
which fails that job only (naming the plugin and the key), never the suite:

- ``None``, ``str`` (and subclasses such as ``numpy.str_``) stay as they are;
- ``bool`` and ``numpy.bool_`` become JSON ``true``/``false``: they are stored, but the leaderboard
  does not count a boolean as a metric (it never averages ``True``);
- integers (``int``, numpy integers) become ``int``; one of more than ``MAX_INT_DIGITS`` digits is
  refused (the leaderboard would refuse the file);
- real numbers (``float``, numpy floats of any width, ``fractions.Fraction``) become ``float``;
  ``NaN`` and infinities are kept (stored as ``NaN``/``Infinity``, shown as such);
- a 0-d numpy array or 0-d torch tensor becomes its one value (then as above); an array or tensor
  of any other shape is refused (return a number, or a list of numbers);
- tuples become lists; mappings must have string keys (an ``int``, tuple or any other key is
  refused: JSON would silently turn ``1`` into ``"1"`` and cannot hold a tuple);
- everything else (sets, bytes, complex numbers, objects) is refused.

Size is bounded too: at most ``MAX_VALUES`` values, ``MAX_DEPTH`` levels (a mapping that contains
itself ends there) and strings of ``MAX_STRING`` characters. ``safe_result`` is the last check on
a whole result before it is written: a result that still cannot be written, or would be larger
than the store reads back, becomes that job's failure.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from harness.errors import printable, short_repr

MAX_VALUES = 10_000  # values (leaves) an evaluation may return
MAX_DEPTH = 32
MAX_STRING = 100_000  # characters
MAX_INT_DIGITS = 30  # as harness.safefiles reads back
ALLOWED = "JSON holds numbers, strings, booleans, null, lists and mappings with string keys"


class NotJSON(ValueError):
    """A plugin's value that cannot be stored in ``result.json``; the message names where it is."""


def _a(name: str) -> str:
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _where(path: tuple) -> str:
    if not path:
        return "the top level"
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (("." if text else "") + printable(str(part))[:60])
    return text


class _Converter:
    def __init__(self, what: str, max_values: int | None, max_depth: int = MAX_DEPTH):
        self.what, self.max_values, self.max_depth, self.count = what, max_values, max_depth, 0

    def refuse(self, path: tuple, why: str) -> NotJSON:
        return NotJSON(f"{self.what}: {_where(path)} is {why}")

    def leaf(self, path: tuple) -> None:
        self.count += 1
        if self.max_values is not None and self.count > self.max_values:
            raise NotJSON(f"{self.what}: more than {self.max_values} values (at most {self.max_values})")

    def convert(self, v: Any, path: tuple = ()) -> Any:
        if len(path) > self.max_depth:
            raise NotJSON(f"{self.what}: nested deeper than {self.max_depth} levels at {_where(path[:4])}... "
                          f"(or a mapping that contains itself)")
        if isinstance(v, Mapping):
            return self.mapping(v, path)
        if isinstance(v, (list, tuple)):
            return [self.convert(x, path + (i,)) for i, x in enumerate(v)]
        self.leaf(path)
        return self.scalar(v, path)

    def mapping(self, v: Any, path: tuple) -> dict[str, Any]:
        out = {}
        for key, x in v.items():
            if not isinstance(key, str):
                raise NotJSON(f"{self.what}: the key {short_repr(key, 40)} under {_where(path)} is "
                              f"{_a(type(key).__name__)} (keys must be strings)")
            out[str(key)] = self.convert(x, path + (str(key),))
        return out

    def scalar(self, v: Any, path: tuple) -> Any:
        if v is None or type(v) in (bool, float, str):
            if isinstance(v, str) and len(v) > MAX_STRING:
                raise self.refuse(path, f"a string of {len(v)} characters (at most {MAX_STRING})")
            return v
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, str):
            return self.scalar(str(v), path)
        if isinstance(v, numbers.Integral):
            n = int(v)
            if n.bit_length() > 99:  # more than about 30 digits
                raise self.refuse(path, f"an integer of about {int(n.bit_length() * 0.30103) + 1} digits "
                                        f"(at most {MAX_INT_DIGITS})")
            return n
        if isinstance(v, numbers.Real):
            try:
                return float(v)
            except (OverflowError, ValueError, TypeError):
                raise self.refuse(path, f"{_a(type(v).__name__)} that is no float") from None
        if isinstance(v, np.ndarray) or _is_tensor(v):
            shape = tuple(v.shape)
            if shape:
                kind = "numpy array" if isinstance(v, np.ndarray) else "tensor"
                raise self.refuse(path, f"{_a(kind)} of shape {shape} (only 0-d arrays and tensors are "
                                        f"converted: return a number, or a list of numbers)")
            try:
                item = v.item()
            except Exception as exc:  # e.g. a tensor on the meta device
                raise self.refuse(path, f"a 0-d {type(v).__name__} whose value cannot be read ({type(exc).__name__})") from None
            self.count -= 1  # the item is the same leaf
            return self.convert(item, path)
        if isinstance(v, np.generic):  # numpy complex, datetime, void...
            raise self.refuse(path, f"a numpy {v.dtype} value; {ALLOWED}")
        raise self.refuse(path, f"{_a(type(v).__name__)}; {ALLOWED}")


def _is_tensor(v: Any) -> bool:
    torch = sys.modules.get("torch")  # never imported here: a tensor exists only where torch is
    return torch is not None and isinstance(v, torch.Tensor)


def to_json(value: Any, what: str, max_values: int | None = MAX_VALUES, max_depth: int = MAX_DEPTH) -> Any:
    """``value`` with every number made a plain ``int``/``float``/``bool`` and tuples made lists;
    ``NotJSON`` ("<what>: <where> is <why>") for anything JSON cannot hold (see the module's rules)."""
    return _Converter(what, max_values, max_depth).convert(value)


def reference_rows(value: Any, evaluation: str) -> dict[str, dict[str, float]]:
    """An evaluation's ``reference_rows(ctx)``: {row label: {key: number}}, every value a ``float``
    (``None`` is NaN, a boolean counts as 0 or 1, as ``float()`` took it before)."""
    what = f"evaluation {evaluation!r} returned reference_rows"
    rows = to_json(value, what)
    if not isinstance(rows, dict):
        raise NotJSON(f"{what}: {_kind(rows)}, not a mapping of row label -> {{key: number}}")
    out: dict[str, dict[str, float]] = {}
    for label, values in rows.items():
        if not isinstance(values, dict):
            raise NotJSON(f"{what}: row {short_repr(label, 40)} is {_kind(values)}, not a mapping of key -> number")
        row = {}
        for key, v in values.items():
            if v is not None and not isinstance(v, (int, float)):
                raise NotJSON(f"{what}: {_where((label, key))} is {_kind(v)}; reference values must be numbers")
            row[key] = math.nan if v is None else float(v)
        out[label] = row
    return out


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(v), _a(type(v).__name__))


def safe_result(result: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``result`` ready for ``json.dumps``, or, when a part of it is not, a failed result that says
    which part (that part emptied): a job's bad value never stops the suite. A result whose JSON
    would exceed ``max_bytes`` (what the store and the leaderboard read back) fails the same way."""
    try:
        clean = to_json(result, "the job's result", max_values=None, max_depth=MAX_DEPTH + 8)
        size = len(json.dumps(clean, indent=2, allow_nan=True).encode("utf-8"))  # as harness.store writes it
        if size <= max_bytes:
            return clean
        raise NotJSON(f"the job's result would be {size // 2**20} MiB of JSON (at most {max_bytes // 2**20} MiB)")
    except NotJSON as exc:
        error = " ".join(str(exc).split())[:500]
    out: dict[str, Any] = {}
    for key, part in result.items():
        try:
            out[key] = to_json(part, key, max_values=None, max_depth=MAX_DEPTH + 8)
            if len(json.dumps(out[key], indent=2, allow_nan=True).encode("utf-8")) > max_bytes // 4:
                raise NotJSON(key)
        except NotJSON:
            out[key] = {} if isinstance(part, dict) else None
    if out.get("status") == "ok" or not out.get("error"):
        out["error"] = f"NotJSON: {error}"
    out["status"] = "failed"
    return out
