"""Optional dependencies: cheap probes that say, in one line, what to install.

The schema layer (``harness.config``) and the executors both ask whether Ray Train is there; the
probe lives here, below both, so neither imports the other for it. A suite's ``log: [tensorboard]``
asks for TensorBoard (the ``tensorboard`` extra), checked when the suite is expanded.
"""

from __future__ import annotations

import importlib.util

from harness.errors import HarnessError

RAY_TRAIN_MISSING = (
    "resources.workers_per_job > 1 runs a job's workers on Ray Train, which is not installed: "
    "pip install 'contrastive-harness[ray]' (it includes ray[train])"
)
# What ``import ray.train`` needs beyond ray itself (its __init__ refuses to load without pyarrow).
RAY_TRAIN_MODULES = ("ray", "ray.train", "pyarrow", "pandas", "fsspec")


def require_ray_train(full: bool = False) -> None:
    """One-line ``HarnessError`` (exit 2) saying what to install when Ray Train is missing.

    Cheap by default (the modules are found, nothing is imported: ``harness validate`` stays fast);
    ``full`` imports ``ray.train.torch`` itself.
    """
    try:
        if full:
            import ray.train.torch  # noqa: F401
        else:
            for name in RAY_TRAIN_MODULES:
                if importlib.util.find_spec(name) is None:
                    raise ImportError(name)
    except ImportError:
        raise HarnessError(RAY_TRAIN_MISSING) from None


TENSORBOARD_MISSING = "log: tensorboard needs the tensorboard package: pip install 'contrastive-harness[tensorboard]'"


def require_tensorboard() -> None:
    """One-line ``HarnessError`` (exit 2) when ``torch.utils.tensorboard`` cannot write event files."""
    if importlib.util.find_spec("tensorboard") is None:
        raise HarnessError(TENSORBOARD_MISSING)
