"""User-facing errors (one line, exit code 2 at the CLI) and the helpers that keep messages short.

``one_line`` and ``short_repr`` are the one home of "describe this exception / value in a line":
the registry, the runner, the executors and the encoders all report through them. Both are
bounded: a hostile value (a billion-laughs YAML alias tree, a 5000-digit integer, a string of a
million characters) is described in at most ``limit`` characters without being expanded first.
"""

from __future__ import annotations

import reprlib
from typing import Any


class HarnessError(Exception):
    """Bad input from the user (suite file, plugin name, params). The CLI prints it on one line, exit 2."""

    exit_code = 2


class PluginNotFound(HarnessError, KeyError):
    """No plugin of that kind has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PluginConflict(HarnessError):
    """Two distributions registered the same plugin name."""


class ParamError(HarnessError, ValueError):
    """A plugin parameter is unknown, missing, of the wrong type or out of its declared limits.

    Also a ``ValueError``, as a factory's own check would raise, so code written for either catches it.
    """


class _BoundedRepr(reprlib.Repr):
    """``reprlib`` with every container, string and integer bounded (no full expansion first)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 6
        self.maxdict = 6
        self.maxstring = self.maxother = max(12, limit)
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an int of more than 4300 digits raises ValueError (CPython's int_max_str_digits)
        if x.bit_length() > 128:
            return f"<integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return repr(x)

    def repr_str(self, x: str, level: int) -> str:
        if len(x) > self.maxstring:  # reprlib would repr() the whole string first
            head = repr(x[: self.maxstring])
            return head[:-1] + "..." + head[-1]
        return repr(x)


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, without ever building the whole repr."""
    try:
        text = _BoundedRepr(limit).repr(value)
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(exc: BaseException, limit: int | None = 300) -> str:
    """``Type: first line of the message`` (cut to ``limit`` characters), for reports that must stay on one line."""
    try:
        text = str(exc).strip()
    except Exception:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    if limit is not None and len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (ANSI escapes, newlines...) shown escaped."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))
