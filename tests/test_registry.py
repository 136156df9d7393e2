"""The plugin registry: pluggy hooks, entry points, HARNESS_LOAD_PLUGINS, errors, the public API."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch

import harness
from harness import hookimpl, hookspecs
from harness.errors import HarnessError, PluginConflict, PluginNotFound
from harness.registry import DISTRIBUTION, HOOKS, KINDS, REQUIRED, Registry, normalize_distribution

README = Path(__file__).resolve().parents[1] / "README.md"


def _entry(kind: str, name: str) -> dict:
    (found,) = [p for p in harness.list_plugins() if p["kind"] == kind and p["name"] == name]
    return found


# --- what a plugin declares ----------------------------------------------------------------------


def test_list_plugins_reads_params_defaults_and_descriptions(fake_registry):
    assert _entry("loss", "fake_clip") == {
        "kind": "loss",
        "name": "fake_clip",
        "distribution": "harness-fake",
        "version": "1.2.3",  # read from the distribution's metadata
        "description": "Fake CLIP loss: symmetric cross-entropy over cosine logits / temperature.",
        "params": {"temperature": 0.07, "learn_temperature": False},  # a class: __init__ without self
        "param_info": {  # v1 plugins: plain annotations, no description or limits
            "temperature": {"type": "float", "default": 0.07, "required": False, "description": "", "limits": {},
                            "choices": None},
            "learn_temperature": {"type": "bool", "default": False, "required": False, "description": "",
                                  "limits": {}, "choices": None},
        },
        "extras": [],  # a v1 loss declares none
    }
    assert _entry("loss", "fake_cua")["params"] == {
        "uniformity_weight": 1.0, "alignment_weight": 1.0, "temperature": 0.07, "reduction": "sum",
    }
    assert _entry("loss", "fake_needs")["params"] == {"weight": REQUIRED, "dim": 4}
    assert _entry("dataset", "fake_shapes")["params"] == {"n": 16, "tags": [], "noise": 0.0}  # JSON-safe
    assert _entry("evaluation", "fake_probe")["description"] == "Fake linear probe (description given to register)."
    assert json.loads(json.dumps(harness.list_plugins())) == harness.list_plugins()


def test_list_is_ordered_by_kind_then_name(fake_registry):
    listed = [(p["kind"], p["name"]) for p in harness.list_plugins()]
    assert listed == sorted(listed, key=lambda kn: (KINDS.index(kn[0]), kn[1]))


def test_create_functions_build_with_defaults_and_coerced_params(fake_registry):
    loss = harness.create_loss("fake_clip", temperature=1)
    assert isinstance(loss, torch.nn.Module)
    assert loss.temperature == 1.0 and isinstance(loss.temperature, float)  # int coerced to the annotation
    x = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    assert set(loss(x, x)) == {"contrastive"}
    assert harness.create_loss("fake_clip", temperature="1e-2").temperature == 0.01  # PyYAML reads 1e-2 as a str
    assert harness.create_encoder("fake_tower", dim=3).dim == 3
    assert harness.create_dataset("fake_shapes", tags=["a", "b"]).tags == ("a", "b")
    assert harness.create_evaluation("fake_gap").k == 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: harness.create_loss("fake_clp"), "unknown loss 'fake_clp' (did you mean 'fake_clip'?); available: "),
        (lambda: harness.create_loss("fake_clip", temprature=1.0), "has no parameter 'temprature' (did you mean 'temperature'?)"),
        (lambda: harness.create_loss("fake_clip", temperature="hot"), "params.temperature: Input should be a valid number"),
        (lambda: harness.create_loss("fake_clip", temperature=True), "params.temperature: Input should be a valid number"),
        (lambda: harness.create_loss("fake_needs"), "params.weight: required by loss 'fake_needs'"),
        (lambda: harness.create_dataset("fake_shapes", tags=["a", 1]), "params.tags[1]: Input should be a valid string"),
    ],
)
def test_bad_names_and_params_are_harness_errors(fake_registry, call, message):
    with pytest.raises(HarnessError) as info:
        call()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_name_lists_every_available_name(fake_registry):
    with pytest.raises(PluginNotFound) as info:
        harness.create_evaluation("nope")
    names = sorted(fake_registry.plugins["evaluation"])
    assert str(info.value).endswith("available: " + ", ".join(names))
    assert "did you mean" not in str(info.value)  # nothing is close to "nope"
    assert isinstance(info.value, KeyError)  # PluginNotFound is also a KeyError, without KeyError's quoting
    assert not str(info.value).startswith(("'", '"'))


# --- hooks ---------------------------------------------------------------------------------------

HOOK_NAMES = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("harness_"))


def test_every_hook_is_documented_and_mapped_to_a_kind():
    assert HOOK_NAMES == sorted(HOOKS.values())
    assert set(HOOKS) == set(KINDS)
    for name in HOOK_NAMES:
        spec = getattr(hookspecs, name)
        assert inspect.getdoc(spec), f"hook {name} has no docstring"
        assert list(inspect.signature(spec).parameters) == ["register"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_hook_is_exercised(kind):
    """Each hook, implemented by a plugin, registers a plugin of its kind (datasette-style)."""
    calls = []

    def factory(size: int = 2):
        """A factory."""
        return ("built", size)

    class Plugin:
        pass

    def impl(register):
        calls.append(kind)
        register(f"probe_{kind}", factory)

    impl.__name__ = HOOKS[kind]
    setattr(Plugin, HOOKS[kind], staticmethod(hookimpl(impl)))
    reg = Registry(load_entrypoints=False, extra_plugins=[(Plugin, "probe-dist")])
    assert calls == [kind]  # called once, for its own kind only
    assert reg.get(kind, f"probe_{kind}").distribution == "probe-dist"
    assert reg.create(kind, f"probe_{kind}", size=5) == ("built", 5)
    assert all(f"probe_{kind}" not in reg.plugins[k] for k in KINDS if k != kind)


GUIDE = README.parent / "docs" / "writing-a-plugin.md"


def test_every_hook_is_in_the_plugin_guide():
    """The plugin guide (docs/writing-a-plugin.md, which the README's 'Writing a plugin' points to)
    shows every hook, the entry-point group and HARNESS_LOAD_PLUGINS."""
    guide = GUIDE.read_text(encoding="utf-8")
    for name in HOOK_NAMES:
        assert f"{name}(register)" in guide, f"docs/writing-a-plugin.md does not show {name}(register)"
    assert "[project.entry-points.harness]" in guide
    assert "HARNESS_LOAD_PLUGINS" in guide
    assert "docs/writing-a-plugin.md" in README.read_text(encoding="utf-8")


# --- broken plugins ------------------------------------------------------------------------------


class _RaisesInHook:
    @staticmethod
    @hookimpl
    def harness_register_losses(register):
        register("half_registered", lambda: None)
        raise RuntimeError("boom\nsecond line of the message")


class _BadSignature:
    @staticmethod
    @hookimpl
    def harness_register_losses(reg):  # not the hook's argument name: pluggy rejects it
        reg("never", lambda: None)


class _NoArguments:
    @staticmethod
    @hookimpl
    def harness_register_encoders():  # pluggy allows an impl to take fewer arguments
        pass


class _NotCallable:
    @staticmethod
    @hookimpl
    def harness_register_datasets(register):
        register("not_callable", 42)


class _NoHooks:
    def harness_register_losses(register):  # forgot @hookimpl
        register("forgotten", lambda: None)


class _Duplicate:
    @staticmethod
    @hookimpl
    def harness_register_losses(register):
        register("fake_clip", lambda temperature=1.0: None)


def test_a_failing_plugin_is_reported_on_one_line_and_the_others_load(fake_on_path):
    import harness_fake

    reg = Registry(
        load_entrypoints=False,
        extra_plugins=[(_RaisesInHook, "dist-raises"), (_BadSignature, "dist-badsig"), (_NoArguments, "dist-noargs"),
                       (_NotCallable, "dist-notcallable"), (_NoHooks, "dist-nohooks"), (harness_fake, "harness-fake")],
    )
    errors = reg.load_errors
    assert len(errors) == 4, errors
    assert any(e.startswith("plugin dist-nohooks (") and "implements no harness hook" in e for e in errors)
    assert "forgotten" not in reg.plugins["loss"]
    assert errors[0].startswith("plugin dist-badsig (") and "failed to load: PluginValidationError: " in errors[0]
    assert "plugin dist-raises failed in harness_register_losses: RuntimeError: boom" in errors
    assert any(e.startswith("plugin dist-notcallable failed in harness_register_datasets: ValueError: ")
               and "factory must be callable" in e for e in errors)
    assert all("\n" not in e for e in errors)
    assert "fake_clip" in reg.plugins["loss"] and "fake_tower" in reg.plugins["encoder"]  # registered after them
    assert "never" not in reg.plugins["loss"]


def test_a_name_registered_twice_is_a_conflict_naming_both_distributions(fake_on_path):
    import harness_fake

    with pytest.raises(PluginConflict) as info:
        Registry(load_entrypoints=False, extra_plugins=[(harness_fake, "harness-fake"), (_Duplicate, "dist-dup")])
    assert "loss plugin 'fake_clip' is registered twice: by harness-fake and by dist-dup" in str(info.value)
    assert isinstance(info.value, HarnessError)


def test_a_builtin_that_fails_to_import_is_reported(monkeypatch):
    import harness.registry as registry_mod

    monkeypatch.setattr(registry_mod, "BUILTIN_MODULES", ("harness.builtin.does_not_exist", *registry_mod.BUILTIN_MODULES))
    reg = Registry(load_entrypoints=False)
    assert reg.load_errors[0] == (
        "plugin contrastive-harness (harness.builtin.does_not_exist) failed to load: "
        "ModuleNotFoundError: No module named 'harness.builtin.does_not_exist'"
    )
    assert all("does_not_exist" not in e for e in reg.load_errors[1:])


# --- entry points and HARNESS_LOAD_PLUGINS --------------------------------------------------------


def _third_party(reg: Registry) -> set[str]:
    return {p["distribution"] for p in reg.list() if p["distribution"] != DISTRIBUTION}


BROKEN = ("plugin harness-broken (harness_broken) failed to load: "
          "ModuleNotFoundError: No module named 'harness_missing_dependency'")


@pytest.mark.parametrize(
    "setting, loaded, errors",
    [
        ("harness-fake,harness-broken", {"harness-fake"}, [BROKEN]),
        ("harness_fake", {"harness-fake"}, []),  # names compare in PEP 503 normal form
        (" Harness-Fake , ", {"harness-fake"}, []),
        ("", set(), []),  # empty: no third-party plugin
        ("harness-broken", set(), [BROKEN]),
        ("harness-fake,harness-nope", {"harness-fake"},
         ["HARNESS_LOAD_PLUGINS names 'harness-nope', but no installed distribution of that name has 'harness' entry points"]),
    ],
)
def test_entry_points_filtered_by_harness_load_plugins(fake_on_path, monkeypatch, setting, loaded, errors):
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", setting)
    reg = Registry()
    assert _third_party(reg) == loaded
    if loaded:
        assert reg.get("loss", "fake_clip").version == "1.2.3"
    assert reg.load_errors == errors


def test_unset_harness_load_plugins_loads_every_entry_point(fake_on_path, monkeypatch):
    monkeypatch.delenv("HARNESS_LOAD_PLUGINS", raising=False)
    reg = Registry()
    assert {"harness-fake"} <= _third_party(reg)
    assert any(e.startswith("plugin harness-broken ") for e in reg.load_errors)


def test_normalize_distribution():
    assert normalize_distribution("Harness_Example.Loss") == "harness-example-loss"


# --- the real built-ins (run once the other issues have registered them) --------------------------

@pytest.fixture(scope="module")
def builtins() -> Registry:
    return Registry(load_entrypoints=False)


@pytest.mark.parametrize("kind, name", [("loss", "clip"), ("loss", "siglip"), ("loss", "cua")]
                         + [("evaluation", n) for n in ("gap", "zeroshot_classification", "retrieval")])
def test_builtin_present(builtins, kind, name):
    if not builtins.plugins[kind]:
        pytest.skip(f"no built-in {kind} registered yet")
    assert name in builtins.plugins[kind], sorted(builtins.plugins[kind])


def test_builtins_load_cleanly_and_resolve_their_own_defaults(builtins):
    assert builtins.load_errors == []
    for entry in (e for kind in KINDS for e in builtins.plugins[kind].values()):
        assert entry.distribution == DISTRIBUTION and entry.version == harness.__version__
        assert entry.description and "\n" not in entry.description, entry.name
        assert re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", entry.name), entry.name
        if REQUIRED not in entry.params.values():
            resolved = entry.resolve({})  # defaults type-check against the factory's own annotations
            json.dumps(resolved)  # plain data: resolved params go into the job record and its id
        for name, spec in entry.param_specs().items():  # issue 12: every built-in parameter is described
            assert spec.description, f"{entry.kind} {entry.name}: parameter {name!r} has no description"
    if builtins.plugins["loss"]:
        assert isinstance(builtins.create("loss", "clip"), torch.nn.Module)


def test_default_suite_evaluations_are_registered(builtins):
    from harness.suite import DEFAULT_EVALUATIONS

    if not builtins.plugins["evaluation"]:
        pytest.skip("no built-in evaluation registered yet")
    assert set(DEFAULT_EVALUATIONS) <= set(builtins.plugins["evaluation"])


# --- PluginInfo: the one record of plugin metadata -------------------------------------------------


def test_plugin_info_is_read_once_at_registration(builtins):
    from harness.registry import PluginInfo
    from harness.types import MainScore

    shapes = builtins.get("dataset", "shapes").info
    assert isinstance(shapes, PluginInfo)
    assert shapes.supplies == ("text_negatives", "caption_group") and shapes.splits == ("test", "validation")
    assert shapes.check_params is not None and shapes.extras == () and shapes.main_score is None
    assert builtins.get("dataset", "digits").info.splits == ("test",)  # the default: reported sets only
    clip = builtins.get("loss", "clip").info
    assert (clip.kind, clip.name, clip.distribution, clip.version) == ("loss", "clip", DISTRIBUTION, harness.__version__)
    assert clip.defaults == {"temperature": 0.07, "learnable_temperature": True} and clip.required == ()
    assert clip.params["temperature"].limits == {"ge": 0.01, "le": 100.0}
    assert clip.splits == clip.supplies == () and clip.check_params is None
    assert isinstance(builtins.get("evaluation", "retrieval").info.main_score, MainScore)
    assert builtins.get("encoder", "open_clip").info.check_params is not None
    with pytest.raises(Exception):  # frozen
        clip.name = "other"


def test_plugin_info_of_a_factory_normalises_declarations():
    from harness.registry import PluginInfo

    class Data:
        """One line.

        More."""

        supplies = "text_negatives"  # a bare string is one name
        splits = ["test", "validation"]

        @staticmethod
        def check_params(n: int = 1) -> None: ...

        def __init__(self, n: int = 1, *, path: str) -> None: ...

    info = PluginInfo.of("dataset", "data", Data, "dist", "1.0")
    assert info.supplies == ("text_negatives",) and info.splits == ("test", "validation")
    assert info.description == "One line." and info.required == ("path",)
    assert info.defaults == {"n": 1, "path": REQUIRED} and info.check_params is Data.check_params
    assert info.as_dict()["supplies"] == ["text_negatives"] and "extras" not in info.as_dict()
