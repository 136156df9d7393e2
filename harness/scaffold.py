"""``harness new-plugin NAME``: write a ready, installable plugin distribution to start from.

The distribution (``harness-NAME``, package ``harness_NAME``, one plugin of the chosen kind called
``NAME``) is rendered from the template folders shipped in ``harness/templates`` (package data):
``common/`` (the pyproject with the ``harness`` entry point) and then ``<kind>/`` (a README, the
plugin package written against the public API only, and a test that runs ``harness.testing`` on it
plus a check of its formula). The templates are real Python: their placeholder names
(``harness-myplugin``, ``harness_myplugin``, ``MyPlugin``, ``myplugin``) are valid identifiers, and
rendering replaces them, in file contents and paths, wherever no letter or digit adjoins them.
``pip install -e`` the result and it appears in ``harness plugins``; its test passes as generated.

A NAME that would make a broken plugin is refused with one line (exit 2): not a valid distribution
name, a Python keyword or constant, a YAML constant, a class name that shadows a name the
template's files use, a plugin of that kind already installed, or a distribution or module of that
name already installed.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import importlib.util
import keyword
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from harness.errors import HarnessError

KINDS = ("loss", "encoder", "dataset", "evaluation")
MAX_LENGTH = 41
# lowercase ASCII words joined by single separators: a valid distribution name and, with '_' for
# '-', a valid Python identifier (so no leading, trailing or doubled separator)
NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
# words PyYAML (YAML 1.1) reads as a boolean or null: a suite naming the plugin would not get a string
YAML_CONSTANTS = frozenset({"true", "false", "yes", "no", "on", "off", "null"})

TEMPLATES = "templates"
PLACEHOLDERS = {"harness-myplugin": "dist", "harness_myplugin": "module", "MyPlugin": "cls", "myplugin": "name"}
# a placeholder is replaced where no letter or digit adjoins it: test_myplugin.py -> test_my_loss.py
_PLACEHOLDER = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, PLACEHOLDERS)) + r")(?![A-Za-z0-9])")


def _refuse(reason: str) -> HarnessError:
    return HarnessError(f"new-plugin: {reason}")


def names_for(name: str) -> dict[str, str]:
    """dist, module, plugin name and class name for ``harness new-plugin NAME`` (its spelling checked)."""
    base = name.removeprefix("harness-").removeprefix("harness_") or name  # the prefix is implied
    if not (len(name) <= MAX_LENGTH and name.isascii() and NAME.fullmatch(name) and NAME.fullmatch(base)):
        raise _refuse(f"NAME must be 1 to {MAX_LENGTH} lowercase ASCII letters and digits in words joined by single "
                      f"'-' or '_', starting with a letter (after any 'harness-' prefix; got {name[:60]!r})")
    plugin = base.replace("-", "_")
    dist = f"harness-{base.replace('_', '-')}"
    return {"dist": dist, "module": dist.replace("-", "_"), "name": plugin,
            "cls": "".join(part.capitalize() for part in plugin.split("_"))}


def template_root() -> Traversable:
    """The folder of the templates (inside the installed package)."""
    return files("harness") / TEMPLATES


def template_files(kind: str) -> dict[str, Traversable]:
    """Relative path (with placeholders) -> template file, ``common/`` first and ``<kind>/`` over it."""
    out: dict[str, Traversable] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for item in sorted(folder.iterdir(), key=lambda i: i.name):
            if item.is_dir():
                if item.name != "__pycache__":
                    walk(item, f"{prefix}{item.name}/")
            elif not item.name.endswith((".pyc", ".pyo")):
                out[prefix + item.name] = item

    for part in ("common", kind):
        walk(template_root() / part, "")
    return out


@functools.cache
def template_identifiers(kind: str) -> frozenset[str]:
    """Every identifier the kind's Python templates bind or use (imports, classes, functions, names)."""
    found: set[str] = set()
    for rel, item in template_files(kind).items():
        if not rel.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(item.read_text(encoding="utf-8"), rel)):
            if isinstance(node, ast.Name):
                found.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                found.add(node.name)
            elif isinstance(node, ast.alias):
                found.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.arg):
                found.add(node.arg)
    return frozenset(found - set(PLACEHOLDERS))


def _installed_plugin(kind: str, name: str) -> str | None:
    """The distribution of the installed ``kind`` plugin called ``name``, or None."""
    from harness.registry import get_registry

    entry = get_registry().plugins[kind].get(name)
    return entry.distribution if entry is not None else None


def _installed_distribution(dist: str, module: str) -> str | None:
    """What of ``dist`` is installed already (its distribution, or a module ``module``), or None."""
    try:
        return f"the distribution {md.distribution(dist).metadata['Name']} {md.version(dist)}"
    except md.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    return f"a module {module} ({spec.origin or 'a namespace package'})" if spec is not None else None


def check_name(name: str, kind: str) -> dict[str, str]:
    """``names_for(name)``, or ``HarnessError`` (one line) where that name would make a broken plugin."""
    if kind not in KINDS:
        raise _refuse(f"--kind must be one of {', '.join(KINDS)} (got {kind!r})")
    n = names_for(name)
    for word in (n["name"], n["cls"]):
        if keyword.iskeyword(word):
            raise _refuse(f"NAME {name!r} is refused: {word!r} is a Python keyword or constant")
    if n["name"] in YAML_CONSTANTS:
        raise _refuse(f"NAME {name!r} is refused: a suite file would read {n['name']} as a YAML boolean or null, "
                      f"not as a plugin name")
    used = template_identifiers(kind)
    for what in ("cls", "module"):
        if n[what] in used:
            raise _refuse(f"NAME {name!r} is refused: its {'class' if what == 'cls' else 'package'} {n[what]} would "
                          f"shadow a name the {kind} template uses; choose another NAME")
    owner = _installed_plugin(kind, n["name"])
    if owner is not None:
        raise _refuse(f"a {kind} plugin {n['name']!r} is already installed (from {owner}); a second one would make "
                      f"every harness command fail with a conflict; choose another NAME")
    installed = _installed_distribution(n["dist"], n["module"])
    if installed is not None:
        raise _refuse(f"NAME {name!r} is refused: {installed} is already installed; choose another NAME")
    return n


def render(text: str, names: dict[str, str]) -> str:
    """``text`` with each placeholder word replaced by its name (one pass: no name is replaced twice)."""
    return _PLACEHOLDER.sub(lambda m: names[PLACEHOLDERS[m.group(0)]], text)


def new_plugin(name: str, kind: str = "loss", out: str | Path = ".") -> Path:
    """Write the distribution for plugin ``name`` of ``kind`` under ``out``; returns its folder."""
    n = check_name(name, kind)
    root = Path(out) / n["dist"]
    if root.exists():
        raise _refuse(f"{root} already exists; choose another NAME or --out")
    rendered = {render(rel, n): render(item.read_text(encoding="utf-8"), n)
                for rel, item in template_files(kind).items()}
    try:
        for rel, text in rendered.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _refuse(f"cannot write {root}: {exc.strerror or exc}") from None
    return root
