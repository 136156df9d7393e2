"""``harness new-plugin NAME``: write a ready, installable plugin distribution to start from.

The distribution (``harness-NAME``, module ``harness_NAME``, one plugin of the chosen kind called
``NAME``) has a pyproject with the ``harness`` entry point, the plugin module written against the
public API only (``harness.hookimpl``, ``harness.types``, ``Annotated`` parameters), a README, and a
test that runs ``harness.testing`` on it plus a check of its formula. ``pip install -e`` it and it
appears in ``harness plugins``; its test passes as generated.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from harness.errors import HarnessError

KINDS = ("loss", "encoder", "dataset", "evaluation")
NAME = re.compile(r"[a-z][a-z0-9_-]{0,40}")

PYPROJECT = Template('''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "A $kind plugin for contrastive-harness: $name."
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["contrastive-harness", "torch", "pydantic>=2"]

[project.optional-dependencies]
test = ["pytest"]

# This is what makes it a harness plugin: the `harness` entry-point group, pointing at the module
# that holds the @hookimpl function(s).
[project.entry-points.harness]
$name = "$module"

[tool.setuptools.packages.find]
where = ["src"]
''')

README = Template('''# $dist

A $kind plugin for [contrastive-harness](https://pypi.org/project/contrastive-harness/): `$name`.

```bash
pip install -e .                 # into the environment that has contrastive-harness
harness plugins $name            # listed, with its parameters
python -m pytest tests           # harness.testing.check_$kind and a check of the formula
```

Use it in a suite like a built-in:

```yaml
$usage
```

Edit `src/$module/__init__.py`: the first line of the class docstring is the description
`harness plugins` shows, and each parameter's `Annotated[..., Field(...)]` gives its limits and
help text (checked before anything runs). Keep the test: `harness.testing.check_$kind` checks the
plugin contract with real calls.
''')

USAGE = {
    "loss": "objectives: [clip, {name: $name, params: {temperature: 0.05}}]",
    "encoder": "encoders: [{name: $name, params: {dim: 32}}]",
    "dataset": "datasets: [{name: $name, params: {size: 512}}]",
    "evaluation": "evaluations: [gap, $name]",
}

MODULE = {
    "loss": Template('''"""$name: a contrastive loss plugin for contrastive-harness (a starting point: edit the formula)."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from harness import gather_features, hookimpl


class $cls(nn.Module):
    """Symmetric InfoNCE at a fixed temperature: (CE(X Y^T / t, I) + CE(Y X^T / t, I)) / 2.

    ``forward`` receives L2-normalised (N, d) image and text embeddings (row i of each a pair) and
    returns named scalar terms whose sum is minimised. To receive more, list names in ``extras``:
    step, total_steps, image_raw, text_raw, text_negatives (see harness.types.LOSS_EXTRAS).
    """

    extras: tuple[str, ...] = ()

    def __init__(
        self,
        temperature: Annotated[float, Field(gt=0, le=1, description="temperature t of the logits cos / t")] = 0.07,
    ) -> None:
        super().__init__()
        self.register_buffer("logit_scale", torch.tensor(1.0 / temperature).log())  # the trainer reports it

    def forward(self, image_features: Tensor, text_features: Tensor, **extras) -> dict[str, Tensor]:
        x, y = gather_features(image_features, text_features)  # the global batch under several workers
        x, y = (t if t.dtype in (torch.float32, torch.float64) else t.float() for t in (x, y))
        logits = self.logit_scale.exp() * x @ y.T
        labels = torch.arange(x.shape[0], device=x.device)
        return {"contrastive": (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2}


@hookimpl
def harness_register_losses(register):
    register("$name", $cls)
'''),
    "encoder": Template('''"""$name: an encoder plugin for contrastive-harness (a starting point: replace the towers)."""

from __future__ import annotations

import zlib
from typing import Annotated, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from harness import hookimpl

SIDE = 8  # images are average-pooled to SIDE x SIDE before the linear image tower
VOCAB = 1024  # words are hashed into this many buckets


class Towers(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.image = torch.nn.Linear(SIDE * SIDE * 3, dim)
        self.text = torch.nn.EmbeddingBag(VOCAB, dim, mode="mean")


class $cls:
    """A linear image tower on pooled pixels and a bag-of-words text tower.

    The encoder owns input preparation: ``preprocess_images`` turns a uint8 (N, H, W, 3) array or a
    list of PIL images into model input, ``tokenize`` turns texts into tokens. ``encode_image`` and
    ``encode_pair`` return features, not normalised (the harness normalises).
    """

    pair_modality = "text"
    precision = None

    def __init__(self, dim: Annotated[int, Field(ge=1, le=4096, description="the joint embedding dimension")] = 64):
        self.model = Towers(dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess_images(self, images: Any, train: bool) -> torch.Tensor:
        if not isinstance(images, np.ndarray):  # a list of PIL images
            images = np.stack([np.asarray(im.convert("RGB").resize((SIDE, SIDE))) for im in images])
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255
        return F.adaptive_avg_pool2d(x, SIDE).flatten(1)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [[zlib.crc32(w.encode()) % VOCAB for w in t.lower().split()] or [0] for t in texts]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], device=self.device)

    def pair_inputs(self, images: Any, captions: Sequence[str], train: bool) -> torch.Tensor:
        return self.tokenize(captions)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.image(x)

    def encode_pair(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.text(x)


@hookimpl
def harness_register_encoders(register):
    register("$name", $cls)
'''),
    "dataset": Template('''"""$name: a dataset plugin for contrastive-harness (a starting point: replace the data)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from harness import hookimpl
from harness.types import ClassificationSet, RetrievalSet

COLOURS = {"red": (210, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}


def render(labels: np.ndarray, rng: np.random.Generator, side: int = 16) -> np.ndarray:
    """uint8 (N, side, side, 3): each image a noisy square of its label's colour."""
    rgb = np.array(list(COLOURS.values()), dtype=np.float64)[labels]
    noise = rng.normal(0, 12, (len(labels), side, side, 3))
    return np.clip(rgb[:, None, None, :] + noise, 0, 255).astype(np.uint8)


class Pairs:
    """The training split: images and one caption each, drawn with the trainer's rng."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def get_batch(self, indices: np.ndarray, rng: np.random.Generator):
        names = list(COLOURS)
        forms = ("a {} square", "{}", "something {}")
        picks = rng.integers(0, len(forms), len(indices))
        return self.images[indices], [forms[p].format(names[self.labels[i]]) for p, i in zip(picks, indices)]


class $cls:
    """Noisy coloured squares captioned with their colour (offline, seeded)."""

    supplies: tuple[str, ...] = ()  # add "text_negatives" (and get_batch_with_negatives) to supply hard negatives

    def __init__(
        self,
        size: Annotated[int, Field(ge=8, le=10**6, description="number of training pairs")] = 256,
        seed: Annotated[int, Field(ge=0, le=2**31 - 1, description="seed of the data")] = 0,
    ):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, len(COLOURS), size + 64)
        images = render(labels, rng)
        self.train = Pairs(images[:size], labels[:size])
        self.eval_images, self.eval_labels = images[size:], labels[size:]

    def train_pairs(self) -> Pairs:
        return self.train

    def eval_sets(self):
        names = list(COLOURS)
        captions = [[f"a {names[l]} square", names[l]] for l in self.eval_labels]
        return [
            ClassificationSet("colour", self.eval_images, self.eval_labels.copy(), names, ["a {c} square", "{c}"],
                              tags={"attribute": "colour"}),
            RetrievalSet("retrieval", self.eval_images, captions),
        ]


@hookimpl
def harness_register_datasets(register):
    register("$name", $cls)
'''),
    "evaluation": Template('''"""$name: an evaluation plugin for contrastive-harness (a starting point: replace the metric)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from harness import Skip, hookimpl
from harness.types import EvalContext, MetricInfo, RetrievalSet


class $cls:
    """Mean cosine of each image with its first caption, over the paired retrieval sets.

    ``evaluate`` works from the embeddings the job computed once (``ctx.sets``; L2-normalised) and
    returns a nested dict of numbers; ``metric_info`` describes each leaf key. Declare a
    ``main_score = harness.types.MainScore(key, description)`` to let it rank a leaderboard.
    """

    def __init__(self, min_pairs: Annotated[int, Field(ge=1, le=10**9, description="skip sets with fewer pairs")] = 2):
        self.min_pairs = min_pairs
        self.metric_info = {"mean_paired_cosine": MetricInfo("Mean paired cosine", "gap", None)}

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        out = {}
        for es in ctx.of_type(RetrievalSet):
            if es.pair_emb is None or len(es.record) < self.min_pairs:
                continue
            x, y = es.paired()
            out[es.record.name.replace(".", "_")] = {"mean_paired_cosine": float((x * y).sum(1).mean())}
        if not out:
            raise Skip(f"no paired retrieval set with at least {self.min_pairs} pairs")
        return out


@hookimpl
def harness_register_evaluations(register):
    register("$name", $cls)
'''),
}

TEST = {
    "loss": Template('''"""$name fits the harness's loss contract and computes its formula."""

import math

import torch
import torch.nn.functional as F

from harness.testing import check_loss
from $module import $cls


def test_fits_the_contract():
    assert check_loss("$name") is None  # registered through the entry point, checked with real calls


def test_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    y = F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)
    s, n = 1 / 0.1, 5
    sim = (x @ y.T).tolist()
    i2t = sum(-s * sim[i][i] + math.log(sum(math.exp(s * sim[i][j]) for j in range(n))) for i in range(n)) / n
    t2i = sum(-s * sim[i][i] + math.log(sum(math.exp(s * sim[j][i]) for j in range(n))) for i in range(n)) / n
    got = $cls(temperature=0.1)(x, y)["contrastive"].item()
    assert math.isclose(got, (i2t + t2i) / 2, rel_tol=1e-9)
'''),
    "encoder": Template('''"""$name fits the harness's encoder contract."""

import numpy as np

from harness.testing import check_encoder
from $module import $cls


def test_fits_the_contract():
    assert check_encoder("$name") is None  # registered through the entry point, checked with real calls


def test_features_have_the_asked_dimension():
    enc = $cls(dim=16)
    images = np.zeros((3, 20, 20, 3), np.uint8)
    assert tuple(enc.encode_image(enc.preprocess_images(images, train=False)).shape) == (3, 16)
    assert tuple(enc.encode_pair(enc.tokenize(["a", "b c", "d e f"])).shape) == (3, 16)
'''),
    "dataset": Template('''"""$name fits the harness's dataset contract."""

import numpy as np

from harness.testing import check_dataset
from $module import $cls


def test_fits_the_contract():
    assert check_dataset("$name") is None  # registered through the entry point, checked with real calls


def test_captions_name_the_colour():
    pairs = $cls(size=32).train_pairs()
    images, captions = pairs.get_batch(np.arange(32), np.random.default_rng(0))
    names = ["red", "green", "blue", "yellow"]
    assert all(names[label] in caption for label, caption in zip(pairs.labels, captions))
'''),
    "evaluation": Template('''"""$name fits the harness's evaluation contract and computes its metric."""

import torch

from harness.testing import check_evaluation, synthetic_context
from $module import $cls


def test_fits_the_contract():
    assert check_evaluation("$name") is None  # registered through the entry point, checked with real calls


def test_matches_a_hand_computation():
    ctx = synthetic_context()
    (retrieval,) = [s for s in ctx.sets if s.pair_emb is not None]
    x, y = retrieval.image_emb, retrieval.pair_emb[::2]  # each image's first caption
    got = $cls().evaluate(ctx)["toy_retrieval"]["mean_paired_cosine"]
    assert abs(got - float((x * y).sum(1).mean())) < 1e-6
'''),
}


def names_for(name: str) -> dict[str, str]:
    """dist, module, plugin name and class name for ``harness new-plugin NAME``."""
    if not NAME.fullmatch(name):
        raise HarnessError(f"new-plugin: NAME must be 1 to 41 lowercase letters, digits, '-' or '_', starting with a "
                           f"letter (got {name[:60]!r})")
    base = name.removeprefix("harness-").removeprefix("harness_") or name
    plugin = base.replace("-", "_")
    dist = f"harness-{base.replace('_', '-')}"
    return {"dist": dist, "module": dist.replace("-", "_"), "name": plugin,
            "cls": "".join(part.capitalize() for part in plugin.split("_"))}


def new_plugin(name: str, kind: str = "loss", out: str | Path = ".") -> Path:
    """Write the distribution for plugin ``name`` of ``kind`` under ``out``; returns its folder."""
    if kind not in KINDS:
        raise HarnessError(f"new-plugin: --kind must be one of {', '.join(KINDS)} (got {kind!r})")
    n = names_for(name)
    root = Path(out) / n["dist"]
    if root.exists():
        raise HarnessError(f"new-plugin: {root} already exists; choose another NAME or --out")
    fields = {**n, "kind": kind, "usage": Template(USAGE[kind]).substitute(n)}
    files = {
        "pyproject.toml": PYPROJECT.substitute(fields),
        "README.md": README.substitute(fields),
        f"src/{n['module']}/__init__.py": MODULE[kind].substitute(fields),
        f"tests/test_{n['name']}.py": TEST[kind].substitute(fields),
    }
    try:
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HarnessError(f"new-plugin: cannot write {root}: {exc.strerror or exc}") from None
    return root
