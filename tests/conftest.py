"""Shared fixtures: a registry with the fake third-party plugin, suite files, and the CLI."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import harness.registry as registry_mod

FIXTURES = Path(__file__).parent / "fixtures"
FAKE_PLUGINS = FIXTURES / "fakeplugins"  # dist-infos of harness-fake 1.2.3 and harness-broken 0.1

GOOD_SUITE = """\
name: mini
description: two objectives on the fake plugins
objectives:
  - fake_clip
  - name: fake_cua
    params: {uniformity_weight: 2}
encoders: fake_tower
datasets: {name: fake_shapes, params: {n: 8}}
train: {steps: 3, batch_size: 4}
seeds: [0, 1]
evaluations: [fake_gap]
"""


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread is faster and immune to a busy machine (use per module)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The test-only plugin distribution of ``fakes`` installed on sys.path, as the process-wide registry."""
    import fakes

    site = fakes.install(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("HARNESS_LOAD_PLUGINS", fakes.DIST)
    registry_mod.set_registry(registry_mod.Registry())
    yield site
    registry_mod.set_registry(None)
    sys.modules.pop(fakes.MODULE, None)


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    """A tar file holding ``members`` (name -> bytes), as a webdataset shard."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def use_registry():
    """``use_registry(reg)`` makes ``reg`` the process-wide registry until the test ends."""
    old = registry_mod._REGISTRY
    yield registry_mod.set_registry
    registry_mod.set_registry(old)


@pytest.fixture
def fake_on_path(monkeypatch):
    """The fake distributions' directory on sys.path (so their metadata and modules are found)."""
    monkeypatch.syspath_prepend(str(FAKE_PLUGINS))
    importlib.invalidate_caches()
    return FAKE_PLUGINS


@pytest.fixture
def fake_registry(fake_on_path, use_registry):
    """Built-ins plus the fake plugin (distribution ``harness-fake``), no entry points; installed globally."""
    fake = importlib.import_module("harness_fake")
    reg = registry_mod.Registry(load_entrypoints=False, extra_plugins=[(fake, "harness-fake")])
    use_registry(reg)
    return reg


@pytest.fixture
def write_suite(tmp_path):
    """``write_suite(text, name="suite.yaml")`` -> path of a suite file with that (dedented) text."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` -> (exit code, stdout, stderr) of ``harness.cli.main`` run in-process."""
    from harness.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: --help, usage errors
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def harness_subprocess(*argv: str, plugins: str | None = "harness-fake", cwd: Path | None = None,
                       module: bool = False) -> subprocess.CompletedProcess:
    """Run the installed ``harness`` console script (or ``python -m harness.cli``) in a fresh process.

    ``plugins`` is ``HARNESS_LOAD_PLUGINS``; the fake distributions are on its ``PYTHONPATH``.
    """
    script = Path(sys.executable).with_name("harness")  # the venv's console script
    if not module and not script.exists():
        script = Path(shutil.which("harness") or "harness")
    cmd = [sys.executable, "-m", "harness.cli", *argv] if module else [str(script), *argv]
    env = {k: v for k, v in os.environ.items() if k not in ("HARNESS_LOAD_PLUGINS", "HARNESS_DEBUG")}
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE_PLUGINS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if plugins is not None:
        env["HARNESS_LOAD_PLUGINS"] = plugins
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def run_harness():
    """The ``harness_subprocess`` helper, as a fixture."""
    return harness_subprocess


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config):
    """End the process with pytest's status once it has reported: the interpreter's own teardown
    (threads left by Ray and torch) crashed once with a segmentation fault after a full run's summary,
    which turned its result into exit 139."""
    if _EXIT_STATUS and os.environ.get("HARNESS_TESTS_NO_HARD_EXIT") is None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
