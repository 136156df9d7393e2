"""``harness new-plugin``: the generated distribution installs, is listed, and its own test passes as generated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


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
@pytest.mark.parametrize("kind", ["loss", "encoder", "dataset", "evaluation"])
def test_a_generated_plugin_installs_lists_and_passes_its_test(kind, tmp_path, cli):
    code, out, err = cli("new-plugin", f"my-{kind}", "--kind", kind, "--out", str(tmp_path))
    assert code == 0 and err == "", err
    root = tmp_path / f"harness-my-{kind}"
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == sorted(
        ["README.md", "pyproject.toml", f"src/harness_my_{kind}/__init__.py", f"tests/test_my_{kind}.py"])
    site = tmp_path / "site"
    _pip_install(root, site)
    listed = _run(["-m", "harness.cli", "plugins", "--json"], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    (mine,) = [p for p in json.loads(listed.stdout) if p["name"] == f"my_{kind}"]
    assert mine["kind"] == kind and mine["distribution"] == f"harness-my-{kind}" and mine["version"] == "0.1.0"
    assert all(info["description"] for info in mine["param_info"].values())  # parameters described once
    tests = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")], site, tmp_path)
    assert tests.returncode == 0 and "2 passed" in tests.stdout, tests.stdout + tests.stderr


def test_new_plugin_refuses_bad_names_kinds_and_existing_folders(cli, tmp_path):
    code, _, err = cli("new-plugin", "My Plugin!", "--out", str(tmp_path))
    assert code == 2 and err.startswith("error: new-plugin: NAME must be") and err.count("\n") == 1
    code, _, err = cli("new-plugin", "x", "--kind", "metric")
    assert code == 2 and "invalid choice: 'metric'" in err
    assert cli("new-plugin", "dup", "--out", str(tmp_path))[0] == 0
    code, _, err = cli("new-plugin", "dup", "--out", str(tmp_path))
    assert code == 2 and "already exists" in err
