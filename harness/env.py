"""What a result records about where it ran: package versions, device, threads, git commit."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("contrastive-harness", "torch", "torchvision", "open_clip_torch", "numpy", "scikit-learn", "clip-benchmark", "pandas")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


GIT_SAFE = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "--no-optional-locks")


def _git(args: list[str], where: Path) -> str | None:
    """``git <args>`` run in ``where`` with fsmonitor and hooks off; its stdout, or None."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    try:
        out = subprocess.run(["git", *GIT_SAFE, *args], cwd=where, capture_output=True, text=True, timeout=5, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(package: Path | None = None) -> str | None:
    """The commit of the harness's own checkout, or None for an installed (non-editable) harness.

    Only the repository whose top level holds this very package (``package``: this module's
    folder) counts: never the caller's working directory, nor a repository that merely contains a
    site-packages folder. Git runs with ``core.fsmonitor`` and hooks disabled, so no repository
    configuration runs a command.
    """
    package = Path(package or Path(__file__).parent).resolve()
    top = _git(["rev-parse", "--show-toplevel"], package.parent)
    if not top or Path(top).resolve() / package.name != package:
        return None
    commit = _git(["rev-parse", "--short=12", "HEAD"], package.parent)
    if not commit:
        return None
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], package.parent)
    return commit + ("-dirty" if dirty else "")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def env_info(device: torch.device | None = None) -> dict[str, Any]:
    device = device or torch.device("cpu")
    from harness.version import __version__

    return {
        "harness_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "torch": torch.__version__,
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
