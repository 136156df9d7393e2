"""The example third-party plugin, installed with pip as an outside user would, and plugin loading.

``plugins/harness-example-loss`` is pip-installed (no deps, offline) into a temporary ``--target``
directory put on PYTHONPATH of ``python -m harness.cli`` subprocesses, so the test sees exactly what
entry-point discovery sees. A second distribution, whose module raises ImportError, is written by hand
as installed metadata (a module plus its .dist-info).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from harness import hookimpl
from harness.errors import PluginConflict
from harness.registry import Registry
from harness.testing import check_loss

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "harness-example-loss"

SUITE = """
name: example-plugin
objectives:
  - clip
  - name: example_margin
    params: {margin: 0.3}
encoders:
  - name: open_clip
    params: {model: harness-tiny-vit}
datasets:
  - name: shapes
    params: {train_size: 64, eval_size: 32}
evaluations: [gap, retrieval]
seeds: [0, 1]
train: {steps: 2, batch_size: 4}
"""


def write_distribution(site: Path, dist: str, module: str, source: str) -> None:
    """An installed distribution as pip leaves it: the module plus its .dist-info with an entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\n{module} = {module}\n")


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugins")
    source = root / "harness-example-loss"  # build from a copy: pip writes build/ and *.egg-info in-tree
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    example = root / "example-site"
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--quiet", "--target", str(example), str(source),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = root / "broken-site"
    broken.mkdir()
    write_distribution(broken, "harness-broken-plugin", "harness_broken_plugin", 'raise ImportError("broken on purpose")\n')
    return {"example": example, "broken": broken}


def harness_cli(*args: str, paths: list[Path], load: str | None = None, cwd: Path | None = None):
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_LOAD_PLUGINS", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    env["OMP_NUM_THREADS"] = "1"
    if load is not None:
        env["HARNESS_LOAD_PLUGINS"] = load
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.mark.slow
def test_installed_plugin_is_listed_and_a_broken_one_does_not_take_it_down(sites):
    done = harness_cli("plugins", "--json", paths=[sites["example"], sites["broken"]])
    assert done.returncode == 0, done.stderr
    plugins = {(p["kind"], p["name"]): p for p in json.loads(done.stdout)}
    example = plugins[("loss", "example_margin")]
    assert example["distribution"] == "harness-example-loss"
    assert example["version"] == "0.1.0"
    assert example["params"] == {"margin": 0.2, "smoothing": 0.05}
    assert all(info["description"] for info in example["param_info"].values())
    assert example["description"].startswith("Bidirectional margin")
    assert plugins[("loss", "clip")]["distribution"] == "contrastive-harness"
    # the broken distribution is named on stderr, with the error
    lines = [line for line in done.stderr.splitlines() if "harness-broken-plugin" in line]
    assert lines and "broken on purpose" in lines[0]


@pytest.mark.slow
def test_harness_load_plugins_empty_loads_no_third_party_plugin(sites):
    done = harness_cli("plugins", "--json", paths=[sites["example"], sites["broken"]], load="")
    assert done.returncode == 0, done.stderr
    names = {p["name"] for p in json.loads(done.stdout)}
    assert "example_margin" not in names and "clip" in names
    assert "harness-broken-plugin" not in done.stderr  # not even imported


@pytest.mark.slow
def test_validate_accepts_a_suite_using_the_plugin(sites, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    paths = [sites["example"]]
    done = harness_cli("validate", str(suite), paths=paths, load="harness-example-loss")
    assert done.returncode == 0, done.stderr
    assert "4 job(s)" in done.stdout
    jobs = [line for line in done.stdout.splitlines() if "example_margin(margin=0.3) | open_clip | shapes" in line]
    assert len(jobs) == 2 and jobs[1].endswith("seed 1")

    # a param the plugin's factory rejects fails validation with exit 2 and names it
    suite.write_text(SUITE.replace("margin: 0.3", "margin: -1.0"))
    done = harness_cli("validate", str(suite), paths=paths)
    assert done.returncode == 2
    assert "objectives[1].params.margin" in done.stderr and "greater than or equal to 0" in done.stderr


def load_example_module() -> types.ModuleType:
    """The plugin's module straight from its source file (no install, sys.path untouched)."""
    spec = importlib.util.spec_from_file_location("harness_example_loss", PLUGIN / "src" / "harness_example_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_registry() -> Registry:
    return Registry(load_entrypoints=False, extra_plugins=[(load_example_module(), "harness-example-loss")])


def test_example_margin_matches_its_formula():
    registry = example_registry()
    entry = registry.get("loss", "example_margin")
    assert entry.distribution == "harness-example-loss" and entry.params == {"margin": 0.2, "smoothing": 0.05}
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(7, 5, generator=g), dim=1)
    y = torch.nn.functional.normalize(x + 0.8 * torch.randn(7, 5, generator=g), dim=1)
    X, Y = x.double().tolist(), y.double().tolist()
    s = [[sum(a * b for a, b in zip(X[i], Y[j])) for j in range(7)] for i in range(7)]
    m, tau = 0.3, 0.1
    h = lambda z: tau * math.log1p(math.exp(z / tau))  # noqa: E731
    expected = sum(
        h(m - s[i][i] + s[i][j]) + h(m - s[i][i] + s[j][i]) for i in range(7) for j in range(7) if i != j
    ) / (2 * 7 * 6)
    terms = registry.create("loss", "example_margin", margin=m, smoothing=tau)(x, y)
    assert list(terms) == ["margin"]
    assert terms["margin"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["margin"].item() > 0
    with pytest.raises(ValueError, match="at least 2"):
        registry.create("loss", "example_margin")(x[:1], y[:1])
    with pytest.raises(ValueError, match="margin must be a finite number >= 0"):  # built directly, not by the registry
        entry.factory(margin=-1.0)


def _boundary_params(entry) -> list[dict]:
    """The defaults, each parameter alone at each of its declared limits, then all low and all high."""
    out = [{}]
    for name, spec in entry.param_specs().items():
        out += [{name: spec.limits[k]} for k in ("ge", "le") if k in spec.limits]
    lows = {n: s.limits["ge"] for n, s in entry.param_specs().items() if "ge" in s.limits}
    highs = {n: s.limits["le"] for n, s in entry.param_specs().items() if "le" in s.limits}
    return out + [lows, highs]


def test_every_shipped_loss_passes_check_loss_at_defaults_and_limits(use_registry):
    registry = example_registry()
    use_registry(registry)
    shipped = [e for e in registry.plugins["loss"].values() if e.distribution == "harness-example-loss"]
    assert [e.name for e in shipped] == ["example_margin"]
    for entry in shipped:
        cases = _boundary_params(entry)
        assert len(cases) == 7  # defaults, margin 0 and 2, smoothing 0.01 and 1, all low, all high
        for params in cases:
            assert check_loss(entry.name, **params) is None, params


def plugin_module(name: str, loss_name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    class Loss(torch.nn.Module):
        """A loss registered by a test plugin."""

    @hookimpl
    def harness_register_losses(register):
        register(loss_name, Loss)

    module.harness_register_losses = harness_register_losses
    return module


def test_one_name_registered_twice_is_a_conflict_naming_both_distributions():
    plugins = [(plugin_module("plugin_a", "twice"), "dist-a"), (plugin_module("plugin_b", "twice"), "dist-b")]
    with pytest.raises(PluginConflict, match="'twice'.*dist-a.*dist-b"):
        Registry(load_entrypoints=False, extra_plugins=plugins)
    with pytest.raises(PluginConflict, match="'clip'.*contrastive-harness.*dist-c"):
        Registry(load_entrypoints=False, extra_plugins=[(plugin_module("plugin_c", "clip"), "dist-c")])
    registry = Registry(load_entrypoints=False, extra_plugins=[(plugin_module("plugin_d", "once"), "dist-d")])
    assert registry.get("loss", "once").distribution == "dist-d"
