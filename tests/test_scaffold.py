"""``harness new-plugin``: the generated distribution installs, is listed, and its own test passes as generated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pip_install(source: Path, site: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(site), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def _run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_LOAD_PLUGINS", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("kind, name", [("loss", "my-loss"), ("encoder", "my-encoder"), ("dataset", "my-dataset"),
                                        ("evaluation", "my-evaluation"), ("loss", "harness-a1_b2-c")])
def test_a_generated_plugin_installs_lists_and_passes_its_test(kind, name, tmp_path, cli):
    code, out, err = cli("new-plugin", name, "--kind", kind, "--out", str(tmp_path))
    assert code == 0 and err == "", err
    base = name.removeprefix("harness-")
    dist, plugin = f"harness-{base.replace('_', '-')}", base.replace("-", "_")
    root = tmp_path / dist
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(
        ["README.md", "pyproject.toml", f"src/harness_{plugin}/__init__.py", f"tests/test_{plugin}.py"])
    site = tmp_path / "site"
    _pip_install(root, site)
    listed = _run(["-m", "harness.cli", "plugins", "--json"], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    (mine,) = [p for p in json.loads(listed.stdout) if p["name"] == plugin]
    assert mine["kind"] == kind and mine["distribution"] == dist and mine["version"] == "0.1.0"
    assert all(info["description"] for info in mine["param_info"].values())  # parameters described once
    tests = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")], site, tmp_path)
    assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout + tests.stderr


@pytest.mark.slow
def test_a_non_editable_install_ships_the_templates(tmp_path):
    source = tmp_path / "contrastive-harness"  # build from a copy: pip writes build/ and *.egg-info in-tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "harness", source / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path / "site"
    _pip_install(source, site)
    work = tmp_path / "work"
    work.mkdir()
    where = _run(["-c", "import harness; print(harness.__file__)"], site, work)
    assert where.stdout.strip() == str(site / "harness" / "__init__.py"), where.stdout + where.stderr
    done = _run(["-m", "harness.cli", "new-plugin", "shipped", "--kind", "dataset"], site, work)
    assert done.returncode == 0, done.stderr
    root = work / "harness-shipped"
    got = {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}
    assert sorted(got) == ["README.md", "pyproject.toml", "src/harness_shipped/__init__.py", "tests/test_shipped.py"]
    template = ROOT / "harness" / "templates" / "dataset" / "src" / "harness_myplugin" / "__init__.py"
    assert got["src/harness_shipped/__init__.py"] == template.read_text().replace("MyPlugin", "Shipped").replace(
        "myplugin", "shipped")


def test_new_plugin_refuses_bad_names_kinds_and_existing_folders(cli, tmp_path):
    code, _, err = cli("new-plugin", "My Plugin!", "--out", str(tmp_path))
    assert code == 2 and err.startswith("error: new-plugin: NAME must be") and err.count("\n") == 1
    # each class of refused NAME is in test_scaffold_names.py
    code, _, err = cli("new-plugin", "x", "--kind", "metric")
    assert code == 2 and "invalid choice: 'metric'" in err
    assert cli("new-plugin", "dup", "--out", str(tmp_path))[0] == 0
    code, _, err = cli("new-plugin", "dup", "--out", str(tmp_path))
    assert code == 2 and "already exists" in err
