"""A plugin that misbehaves outside a job (at import, in a registration hook, while being built at
validate time) is isolated like any broken plugin: one line naming its distribution, and the rest
of the harness works. ``sys.exit(0)`` at import used to make ``harness run`` exit 0 having run nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import fakes

BAD = {
    "exit0": "import sys\nsys.exit(0)\n",
    "exit3": "raise SystemExit(3)\n",
    "argparse": "import argparse\nargparse.ArgumentParser().parse_args(['--no-such-flag'])\n",
    "interrupt": "raise KeyboardInterrupt\n",
    "base": "raise BaseException('boom')\n",
    "hookexit": (
        "import sys\nfrom harness.api import hookimpl\n\n@hookimpl\ndef harness_register_losses(register):\n"
        "    print('noise on stdout'); sys.exit(0)\n"
    ),
}


def install_bad(site: Path, name: str, source: str) -> str:
    module = f"harness_bad_{name}"
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-0.0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    dist = f"harness-bad-{name}"
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\nbad = {module}\n")
    return dist


def harness(args, site: Path, dists: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HARNESS_LOAD_PLUGINS": ",".join(dists)}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_plugin_that_exits_or_interrupts_outside_a_job_is_one_load_error(tmp_path, name):
    site = fakes.install(tmp_path / "site")
    dist = install_bad(site, name, BAD[name])
    listed = harness(["plugins"], site, [fakes.DIST, dist], tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "toy_dot" in listed.stdout and "clip" in listed.stdout  # the others load
    lines = [line for line in listed.stderr.splitlines() if dist in line]
    assert len(lines) == 1 and ("failed to load" in lines[0] or "failed in" in lines[0]), listed.stderr
    assert "usage:" not in listed.stderr and "noise on stdout" not in listed.stdout
    suite = tmp_path / "toy.yaml"
    suite.write_text(yaml.safe_dump(fakes.toy_suite(steps=3)))
    run = harness(["run", str(suite), "--out", "runs"], site, [fakes.DIST, dist], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 ok, 0 failed" in run.stderr  # the suite ran


def test_a_factory_that_exits_while_built_at_validate_time_is_a_one_line_error(tmp_path):
    site = fakes.install(tmp_path / "site")
    dist = install_bad(site, "factory", (
        "import sys\nimport torch\nfrom harness.api import hookimpl\n\n"
        "class Quits(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n        sys.exit(0)\n\n"
        "@hookimpl\ndef harness_register_losses(register):\n    register('quits', Quits)\n"))
    data = fakes.toy_suite(steps=3, objectives=[{"name": "quits"}])
    suite = tmp_path / "toy.yaml"
    suite.write_text(yaml.safe_dump(data))
    checked = harness(["validate", str(suite)], site, [fakes.DIST, dist], tmp_path)
    assert checked.returncode == 2
    errors = [line for line in checked.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "objectives[0]: loss 'quits' (harness-bad-factory) failed while building" in errors[0]
    assert "SystemExit" in errors[0] and "Traceback" not in checked.stderr
