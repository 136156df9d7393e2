"""Reading a suite file safely: a bounded regular file, YAML's safe loader (plain data only), no key
given twice, and data bounded in size, depth and values before any other step sees it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError, short_repr

MAX_FILE_BYTES = 1 << 20  # a suite is a page of YAML; a bigger file is not a suite
MAX_VALUES = 100_000  # values in a suite after YAML aliases are expanded
MAX_DEPTH = 32
MAX_STRING = 4096
MAX_INT_BITS = 63


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (same safety: plain data only) that rejects a key given twice in a mapping.

    PyYAML silently keeps the last of two ``train:`` blocks; for a suite that is always a mistake.
    """


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (a key may appear once per mapping)", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML text (safe loader: plain data only) and check its size; one-line ``HarnessError``s.

    After parsing, ``check_data`` bounds what the rest of the harness will see (so no later step,
    an error message, a job id, a plugin, ever expands a billion-laughs alias tree).
    """
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        kind = "YAML syntax error" if isinstance(exc, (yaml.scanner.ScannerError, yaml.parser.ParserError)) else "invalid YAML"
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and cmark and mark and cmark.line != mark.line:
            problem += f" ({context} at line {cmark.line + 1})"
        raise HarnessError(f"{source}: {kind}{where}: {problem}") from None
    except RecursionError:
        raise HarnessError(f"{source}: YAML nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        raise HarnessError(f"{source}: invalid YAML: a value cannot be read ({short_repr(str(exc), 80)})") from None
    check_data(data, source)
    return data


def check_data(data: Any, source: str) -> None:
    """Refuse data no suite needs, in time linear in the YAML document (aliases are not expanded).

    At most ``MAX_VALUES`` values once aliases are expanded, ``MAX_DEPTH`` levels, strings of at most
    ``MAX_STRING`` characters, integers within 64 bits, finite floats, and no structure that
    contains itself. The first problem raises ``HarnessError`` naming its path.
    """
    sizes: dict[int, int] = {}  # id of a list/dict -> its expanded size (aliases share objects)
    open_: set[int] = set()

    def fail(path: str, what: str) -> None:
        raise HarnessError(f"{source}: {path or '(top level)'}: {what}")

    def measure(node: Any, path: str, depth: int) -> int:
        if depth > MAX_DEPTH:
            fail(path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, (dict, list)):
            key = id(node)
            if key in open_:
                fail(path, "a YAML alias makes this structure contain itself")
            if key in sizes:
                return sizes[key]
            open_.add(key)
            total = 1
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for k, v in items:
                sub = f"{path}.{k}" if isinstance(node, dict) and isinstance(k, str) else f"{path}[{short_repr(k, 20)}]"
                if isinstance(node, dict):
                    total += measure(k, sub, depth + 1)
                total += measure(v, sub.lstrip("."), depth + 1)
                if total > MAX_VALUES:
                    fail(path, f"the suite expands to more than {MAX_VALUES:,} values (YAML aliases?)")
            open_.discard(key)
            sizes[key] = total
            return total
        if isinstance(node, bool) or node is None:
            return 1
        if isinstance(node, int) and node.bit_length() > MAX_INT_BITS:
            fail(path, f"integer too large (more than {MAX_INT_BITS} bits): {short_repr(node)}")
        if isinstance(node, float) and not math.isfinite(node):
            fail(path, f"expected a finite number, got {node}")
        if isinstance(node, str) and len(node) > MAX_STRING:
            fail(path, f"string longer than {MAX_STRING} characters ({short_repr(node, 30)})")
        return 1

    measure(data, "", 0)


def read_suite_text(path: str | Path) -> str:
    """The text of a suite file: a regular file of at most ``MAX_FILE_BYTES``, UTF-8; one-line
    ``HarnessError`` naming the file otherwise."""
    path = Path(path)
    try:
        if not path.exists():
            raise HarnessError(f"{path}: no such suite file")
        if path.is_dir():
            raise HarnessError(f"{path}: is a directory, expected a suite YAML file")
        if not path.is_file():
            raise HarnessError(f"{path}: not a regular file, expected a suite YAML file")
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise HarnessError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; a suite is a short YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HarnessError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); save the file as UTF-8") from None
    return text
