"""A tiny test-only plugin distribution, installable on a temporary PYTHONPATH.

It is written exactly as a third party would write one (a module with ``@hookimpl`` functions and a
``*.dist-info/entry_points.txt`` in group ``harness``), so subprocesses (kill/resume tests, Ray
workers) load it the same way as any installed plugin. Everything in it is fast: linear towers on
4x4 images and a bag-of-words text tower.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

DIST = "harness-testplugins"
MODULE = "harness_testplugins"

SOURCE = textwrap.dedent(
    '''
    """Test-only plugins: toy data, linear towers, losses that fail on purpose."""
    import time
    import zlib

    import numpy as np
    import torch
    import torch.nn.functional as F

    from harness import hookimpl
    from harness.types import ClassificationSet, MetricInfo, RetrievalSet

    WORDS = ["red", "green", "blue", "gold"]


    class ToyPairs:
        def __init__(self, images, labels, sleep):
            self.images, self.labels, self.sleep = images, labels, sleep

        def __len__(self):
            return len(self.labels)

        def get_batch(self, indices, rng):
            if self.sleep:
                time.sleep(self.sleep)
            caps = [f"a {WORDS[l]} thing" if rng.random() < 0.5 else f"{WORDS[l]}" for l in self.labels[indices]]
            return self.images[indices], caps


    def _make(n, rng):
        labels = rng.integers(0, 4, n)
        base = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]], dtype=np.float64)
        images = base[labels][:, None, None, :] + rng.normal(0, 30, (n, 4, 4, 3))
        return np.clip(images, 0, 255).astype(np.uint8), labels


    class ToyDataset:
        """Four colour classes of 4x4 images with captions (test only)."""

        splits = ("test", "validation")

        def __init__(self, seed: int = 0, n: int = 256, sleep: float = 0.0, fail: bool = False):
            if fail:
                raise RuntimeError("toy dataset asked to fail")
            rng = np.random.default_rng(seed)
            self.train = ToyPairs(*_make(n, rng), sleep)
            self.eval_images, self.eval_labels = _make(64, rng)
            self.val_images, self.val_labels = _make(64, rng)

        def train_pairs(self):
            return self.train

        def eval_sets(self, split="test"):
            images, labels = (self.eval_images, self.eval_labels) if split == "test" else (self.val_images, self.val_labels)
            caps = [[f"a {WORDS[l]} thing", WORDS[l]] for l in labels]
            return [
                ClassificationSet("colour", images, labels, list(WORDS), ["a {c} thing", "{c}"]),
                RetrievalSet("retrieval", images, caps),
            ]


    class MarkedDataset(ToyDataset):
        """ToyDataset that appends a line ``pid node job_seed`` to ``marker`` when built: its process id,
        its Ray node (``-`` outside Ray) and the torch seed the runner set for its job (test only)."""

        def __init__(self, marker: str = "", seed: int = 0, n: int = 256, sleep: float = 0.0):
            import os
            import sys

            node = "-"
            if "ray" in sys.modules and sys.modules["ray"].is_initialized():
                node = sys.modules["ray"].get_runtime_context().get_node_id()
            with open(marker, "a") as f:
                f.write(f"{os.getpid()} {node} {torch.initial_seed()}\\n")
            super().__init__(seed=seed, n=n, sleep=sleep)


    class Towers(torch.nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.image = torch.nn.Linear(48, dim)
            self.text = torch.nn.Linear(64, dim)


    class ToyEncoder:
        """Linear image tower on 4x4 pixels, bag-of-words text tower (test only)."""

        pair_modality = "text"
        precision = None

        def __init__(self, dim: int = 8):
            self.model = Towers(dim)

        def preprocess_images(self, images, train):
            return torch.from_numpy(np.asarray(images)).float().div(255).reshape(len(images), -1)

        def tokenize(self, texts):
            out = torch.zeros(len(texts), 64)
            for i, t in enumerate(texts):
                for w in t.split():
                    out[i, zlib.crc32(w.encode()) % 64] += 1
            return out

        def pair_inputs(self, images, captions, train):
            return self.tokenize(captions)

        def encode_image(self, x):
            return self.model.image(x)

        def encode_pair(self, x):
            return self.model.text(x)


    class DotLoss(torch.nn.Module):
        """Symmetric InfoNCE at a fixed temperature, or NaN / an exception / an exit on purpose (test only)."""

        def __init__(self, mode: str = "ok", temperature: float = 0.1):
            super().__init__()
            self.mode = mode
            self.register_buffer("logit_scale", torch.tensor(1 / temperature).log())

        def forward(self, x, y):
            if self.mode == "raise":
                raise RuntimeError("dot loss asked to raise")
            if self.mode == "exit":
                raise SystemExit(3)  # a plugin calling sys.exit(): that job fails, the suite goes on
            if self.mode == "interrupt":
                raise KeyboardInterrupt  # raised by the plugin itself, not by a Ctrl-C
            if self.mode == "generator_exit":
                raise GeneratorExit
            logits = self.logit_scale.exp() * x @ y.T
            labels = torch.arange(len(x))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            if self.mode == "nan":
                loss = loss * float("nan")
            return {"contrastive": loss}


    class MeanCos:
        """Mean paired cosine of the first retrieval set (test only)."""

        metric_info = {"mean_cos": MetricInfo("mean paired cosine", "gap", None)}

        def __init__(self, fail: bool = False):
            self.fail = fail

        def evaluate(self, ctx):
            if self.fail:
                raise ValueError("evaluation asked to fail")
            x, y = ctx.sets[1].paired()
            return {"mean_cos": float((x * y).sum(1).mean())}


    class PreparedMeanCos(MeanCos):
        """MeanCos with a ``prepare`` hook; both append "<what> <pid> <time>" to ``<cache>/toy-prepare.log`` (test only)."""

        def prepare(self, records, cache_dir):
            assert [r.name for r in records] == ["colour", "retrieval"]
            self._note(cache_dir, "prepare")

        def evaluate(self, ctx):
            self._note(ctx.cache_dir, "evaluate")
            return super().evaluate(ctx)

        @staticmethod
        def _note(cache_dir, what):
            import os

            if cache_dir is not None:
                os.makedirs(cache_dir, exist_ok=True)
                with open(os.path.join(cache_dir, "toy-prepare.log"), "a") as fh:
                    fh.write(f"{what} {os.getpid()} {time.time()}\\n")


    @hookimpl
    def harness_register_losses(register):
        register("toy_dot", DotLoss)


    @hookimpl
    def harness_register_encoders(register):
        register("toy_linear", ToyEncoder)


    @hookimpl
    def harness_register_datasets(register):
        register("toy", ToyDataset)
        register("toy_marked", MarkedDataset)


    @hookimpl
    def harness_register_evaluations(register):
        register("toy_meancos", MeanCos)
        register("toy_prepared", PreparedMeanCos)
    '''
)


def install(site: Path) -> Path:
    """Write the distribution into ``site`` (a directory to put on PYTHONPATH); returns ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{MODULE}.py").write_text(SOURCE)
    info = site / f"{MODULE}-0.0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\ntoy = {MODULE}\n")
    return site


def toy_suite(name: str = "toy", objectives=None, steps: int = 20, sleep: float = 0.0, seeds=(0,), save=()) -> dict:
    """A suite dict over the toy plugins."""
    return {
        "name": name,
        "objectives": objectives or [{"name": "toy_dot"}],
        "encoders": [{"name": "toy_linear"}],
        "datasets": [{"name": "toy", "params": {"sleep": sleep}}],
        "train": {"steps": steps, "batch_size": 32, "lr": 0.01, "log_every": 5},
        "seeds": list(seeds),
        "evaluations": ["toy_meancos"],
        "save": list(save),
    }


CRASH_DIST, CRASH_MODULE = "harness-raycrash", "harness_raycrash"
CRASH_SOURCE = '''
"""A dataset whose factory kills its own process, as a segfault or the OOM killer would (test only)."""
import os
import time

from harness import hookimpl


class CrashDataset:
    """Appends its pid and the time to ``marker``, then exits the process without cleanup."""

    def __init__(self, marker: str = ""):
        with open(marker, "a") as f:
            f.write(f"{os.getpid()} {time.time()}\\n")
        os._exit(3)


@hookimpl
def harness_register_datasets(register):
    register("ray_crash", CrashDataset)
'''


def install_crash(site: Path) -> None:
    (site / f"{CRASH_MODULE}.py").write_text(CRASH_SOURCE)
    info = site / f"{CRASH_MODULE}-0.0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {CRASH_DIST}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\ncrash = {CRASH_MODULE}\n")
