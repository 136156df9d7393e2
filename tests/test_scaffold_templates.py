"""The templates of ``harness new-plugin`` are real files: each imports, is lint-clean, and passes its own test.

Their placeholder names are valid identifiers, so every template ``.py`` file is imported as it is
(the plugin package as ``harness_myplugin``, its test next to it), linted (pyflakes when installed,
else ``compile`` plus a check for unused imports), and each kind's test is run against the template
itself, registered as a plugin. The plugin code imports from the harness only its public API.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import harness.api
from harness import scaffold
from harness.registry import Registry, get_registry

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "harness" / "templates"
PY_FILES = sorted(TEMPLATES.rglob("*.py"))
# what a plugin may import from the harness today (switch to harness.api once it exists)
PUBLIC_MODULES = {"harness.api": set(harness.api.__all__)}
TEST_MODULES = {"harness.testing": None}


def test_the_templates_are_the_shipped_package_data():
    assert str(scaffold.template_root()) == str(TEMPLATES)  # rendered from the files tested here
    assert len(PY_FILES) == 2 * len(scaffold.KINDS)
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["harness"]
    shipped = {p for g in globs for p in (ROOT / "harness").glob(g)}  # what a non-editable install ships
    for path in TEMPLATES.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert path in shipped, f"{path.relative_to(ROOT)} is not in [tool.setuptools.package-data]"


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: p.relative_to(TEMPLATES).as_posix())
def test_every_template_compiles_and_is_lint_clean(path):
    source = path.read_text(encoding="utf-8")
    compile(source, str(path), "exec")
    if importlib.util.find_spec("pyflakes") is not None:
        done = subprocess.run([sys.executable, "-m", "pyflakes", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        return
    tree = ast.parse(source)
    imported = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and getattr(node, "module", None) != "__future__":
            for alias in node.names:
                imported[alias.asname or alias.name.split(".")[0]] = node.lineno
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    unused = sorted(set(imported) - used)
    assert not unused, f"unused imports in {path.name}: {unused}"


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: p.relative_to(TEMPLATES).as_posix())
def test_templates_import_only_the_public_harness_api(path):
    allowed = {**PUBLIC_MODULES, **(TEST_MODULES if path.parent.name == "tests" else {})}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            mods = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods = [(node.module, a.name) for a in node.names]
        else:
            continue
        for mod, name in mods:
            if mod.split(".")[0] != "harness":
                continue
            assert mod in allowed, f"{path.name} imports {mod}: not the public plugin API"
            assert allowed[mod] is None or name in allowed[mod], f"{path.name} imports {mod}.{name}: not public"


@pytest.fixture
def template_plugin(use_registry):
    """``template_plugin(kind)`` -> (plugin package, its test module), imported from the template as it is."""
    loaded: list[str] = []

    def load(kind: str):
        src = TEMPLATES / kind / "src" / "harness_myplugin" / "__init__.py"
        spec = importlib.util.spec_from_file_location("harness_myplugin", src)
        package = importlib.util.module_from_spec(spec)
        sys.modules["harness_myplugin"] = package  # the test imports it by this name
        loaded.append("harness_myplugin")
        spec.loader.exec_module(package)
        use_registry(Registry(load_entrypoints=False, extra_plugins=[(package, "harness-myplugin")]))
        test_name = f"template_{kind}_test_myplugin"
        spec = importlib.util.spec_from_file_location(test_name, TEMPLATES / kind / "tests" / "test_myplugin.py")
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)
        return package, tests

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("kind", scaffold.KINDS)
def test_each_template_registers_one_plugin_and_passes_its_own_test(kind, template_plugin):
    package, tests = template_plugin(kind)
    registry = get_registry()
    (entry,) = [e for e in registry.plugins[kind].values() if e.distribution == "harness-myplugin"]
    assert entry.name == "myplugin" and entry.factory is package.MyPlugin and entry.description
    assert all(spec.description for spec in entry.param_specs().values())  # every parameter described
    cases = [getattr(tests, n) for n in dir(tests) if n.startswith("test_") and callable(getattr(tests, n))]
    assert len(cases) == 2
    for case in cases:
        case()


def test_the_loss_template_is_an_example_with_its_formula_documented(template_plugin):
    package, _ = template_plugin("loss")
    doc = package.MyPlugin.__doc__
    assert "example" in doc.splitlines()[0].lower()
    assert "mean_i (1 - s_ii)^2" in doc and "w * mean_{i != j} s_ij^2" in doc
    source = (TEMPLATES / "loss" / "src" / "harness_myplugin" / "__init__.py").read_text()
    assert "cross_entropy" not in source and "logit_scale" not in source  # not another copy of the CLIP loss


def test_the_pyproject_template_declares_the_entry_point():
    project = tomllib.loads((TEMPLATES / "common" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "harness-myplugin"
    assert project["entry-points"]["harness"] == {"myplugin": "harness_myplugin"}


def test_scaffold_has_no_long_string_literal():
    tree = ast.parse((ROOT / "harness" / "scaffold.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.end_lineno - node.lineno < 40, f"a {node.end_lineno - node.lineno + 1}-line string"


@pytest.mark.parametrize("names", [
    {"dist": "harness-my-loss", "module": "harness_my_loss", "cls": "MyLoss", "name": "my_loss"},
    {"dist": "harness-myplugin", "module": "harness_myplugin", "cls": "MyPlugin", "name": "myplugin"},
    {"dist": "harness-x", "module": "harness_x", "cls": "X", "name": "x"},
])
def test_render_replaces_each_placeholder_once_and_only_where_no_letter_or_digit_adjoins(names):
    text = ("harness-myplugin harness_myplugin MyPlugin myplugin test_myplugin.py myplugins MyPlugins "
            "amyplugin '{myplugin}'")
    assert scaffold.render(text, names) == (
        f"{names['dist']} {names['module']} {names['cls']} {names['name']} test_{names['name']}.py myplugins "
        f"MyPlugins amyplugin '{{{names['name']}}}'")
