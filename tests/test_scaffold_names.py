"""``harness new-plugin NAME``: a NAME that would make a broken plugin is refused, any other makes a working one.

Refused, with one line on stderr and exit 2: an invalid distribution name, a Python keyword or
constant, a YAML constant, a class or package that would shadow a name the template uses, a plugin
of that kind already installed, a distribution or module of that name already installed. Accepted
names at the edges of the rules are rendered and checked in-process: the package imports, its
plugin registers under the name, and the generated test passes (the pip-installed round trip is in
``test_scaffold.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import pytest

from harness import scaffold
from harness.registry import Registry

pytestmark = pytest.mark.usefixtures("one_thread")

FORMAT = "NAME must be 1 to 41 lowercase ASCII letters and digits"
KEYWORD = "is a Python keyword or constant"
YAML = "would read {} as a YAML boolean or null"
SHADOWS = "would shadow a name the {} template uses"


@pytest.fixture
def builtins_only(use_registry):
    """The process-wide registry holds the built-ins only (whatever else this environment has installed)."""
    use_registry(Registry(load_entrypoints=False))


def refused(cli, tmp_path, name: str, kind: str = "loss") -> str:
    code, out, err = cli("new-plugin", "--kind", kind, "--out", str(tmp_path), "--", name)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: new-plugin: "), (code, out, err)
    assert not any(tmp_path.iterdir())  # nothing written
    return err


@pytest.mark.parametrize("name", [
    "", "-a", "a-", "a_", "_a", "a--b", "a-_b", "1a", "My-Plugin", "None", "a.b", "a b", "a/b", "a\n",
    "héllo", "ı", "plugin\u200b", "a" * 42, "harness-", "harness_", "harness-1", "harness_2x", "harness--a",
], ids=repr)
def test_invalid_distribution_names_are_refused(name, cli, tmp_path, builtins_only):
    assert FORMAT in refused(cli, tmp_path, name)


@pytest.mark.parametrize("name, word", [
    ("none", "None"), ("true", "True"), ("false", "False"), ("class", "class"), ("import", "import"),
    ("lambda", "lambda"), ("harness-def", "def"), ("harness_return", "return"), ("async", "async"),
])
def test_python_keywords_and_constants_are_refused(name, word, cli, tmp_path, builtins_only):
    assert f"{word!r} {KEYWORD}" in refused(cli, tmp_path, name)


@pytest.mark.parametrize("name", ["yes", "no", "on", "off", "null"])
def test_yaml_constants_are_refused(name, cli, tmp_path, builtins_only):
    assert YAML.format(name) in refused(cli, tmp_path, name)


@pytest.mark.parametrize("kind, name, shadowed", [
    ("loss", "tensor", "class Tensor"), ("loss", "f", "class F"), ("loss", "field", "class Field"),
    ("loss", "annotated", "class Annotated"), ("loss", "register-losses", "package harness_register_losses"),
    ("encoder", "towers", "class Towers"), ("encoder", "sequence", "class Sequence"),
    ("dataset", "pairs", "class Pairs"), ("dataset", "retrieval-set", "class RetrievalSet"),
    ("evaluation", "skip", "class Skip"), ("evaluation", "metric_info", "class MetricInfo"),
])
def test_names_shadowing_the_templates_identifiers_are_refused(kind, name, shadowed, cli, tmp_path, builtins_only):
    assert shadowed.split()[1] in scaffold.template_identifiers(kind)
    assert f"its {shadowed} {SHADOWS.format(kind)}" in refused(cli, tmp_path, name, kind)


@pytest.mark.parametrize("kind, name", [("loss", "clip"), ("loss", "siglip"), ("encoder", "open-clip"),
                                        ("dataset", "shapes"), ("evaluation", "gap")])
def test_builtin_plugin_names_of_that_kind_are_refused(kind, name, cli, tmp_path, builtins_only):
    err = refused(cli, tmp_path, name, kind)
    assert f"a {kind} plugin {name.replace('-', '_')!r} is already installed (from contrastive-harness)" in err


def test_third_party_plugin_names_and_distributions_are_refused(cli, tmp_path, tmp_path_factory, fake_registry,
                                                               monkeypatch):
    assert "a loss plugin 'fake_clip' is already installed (from harness-fake)" in refused(cli, tmp_path, "fake-clip")
    assert "a dataset plugin 'fake_shapes' is already installed" in refused(cli, tmp_path, "fake_shapes", "dataset")
    assert "the distribution harness-fake 1.2.3 is already installed" in refused(cli, tmp_path, "fake", "dataset")
    lonely = tmp_path_factory.mktemp("lonely-site")  # a module of that name, no distribution
    (lonely / "harness_lonely.py").write_text("")
    monkeypatch.syspath_prepend(str(lonely))
    importlib.invalidate_caches()
    assert "a module harness_lonely (" in refused(cli, tmp_path, "lonely")


def test_a_name_of_another_kind_is_not_a_conflict(cli, tmp_path, builtins_only):
    code, _, err = cli("new-plugin", "gap", "--kind", "loss", "--out", str(tmp_path))  # gap is an evaluation
    assert code == 0 and err == "", err


@pytest.fixture
def generated(tmp_path, use_registry):
    """``generated(name, kind)`` -> (names, plugin package, test module) of a freshly rendered plugin."""
    loaded: list[str] = []

    def make(name: str, kind: str):
        root = scaffold.new_plugin(name, kind=kind, out=tmp_path)
        n = scaffold.names_for(name)
        sys.path.insert(0, str(root / "src"))
        loaded.append(n["module"])
        package = importlib.import_module(n["module"])
        use_registry(Registry(load_entrypoints=False, extra_plugins=[(package, n["dist"])]))
        test_file = root / "tests" / f"test_{n['name']}.py"
        spec = importlib.util.spec_from_file_location(f"generated_test_{n['name']}", test_file)
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)
        return n, package, tests

    yield make
    for module in loaded:
        sys.modules.pop(module, None)
    sys.path[:] = [p for p in sys.path if not p.startswith(str(tmp_path))]
    importlib.invalidate_caches()


@pytest.mark.parametrize("name, expected", [
    ("a", ("harness-a", "harness_a", "A", "a")),
    ("x1", ("harness-x1", "harness_x1", "X1", "x1")),
    ("harness-my-loss_2", ("harness-my-loss-2", "harness_my_loss_2", "MyLoss2", "my_loss_2")),
    ("harness", ("harness-harness", "harness_harness", "Harness", "harness")),
    ("match", ("harness-match", "harness_match", "Match", "match")),  # a soft keyword is a valid identifier
    ("type", ("harness-type", "harness_type", "Type", "type")),
    ("myplugin", ("harness-myplugin", "harness_myplugin", "Myplugin", "myplugin")),  # the placeholder itself
    ("my-plugin", ("harness-my-plugin", "harness_my_plugin", "MyPlugin", "my_plugin")),
    ("a" * 41, ("harness-" + "a" * 41, "harness_" + "a" * 41, "A" + "a" * 40, "a" * 41)),
])
def test_accepted_names_make_a_plugin_that_registers_and_passes_its_test(name, expected, generated, builtins_only):
    n, package, tests = generated(name, "loss")
    assert (n["dist"], n["module"], n["cls"], n["name"]) == expected
    entry = Registry(load_entrypoints=False, extra_plugins=[(package, n["dist"])]).get("loss", n["name"])
    assert entry.factory is getattr(package, n["cls"]) and entry.distribution == n["dist"]
    cases = [getattr(tests, t) for t in dir(tests) if t.startswith("test_")]
    assert len(cases) == 2
    for case in cases:
        case()
