"""Test-only plugins of contract v3 (``tests/test_contract_v3.py``), written as a third party would.

Toy data (4x4 images, captions of four colour words, caption groups = the colour), linear towers,
and losses that use ``index``, ``setup``, loss state, ``caption_group`` and the momentum towers,
recording what they receive. The module is importable in-process (``Registry(extra_plugins=...)``)
and installable as the distribution ``harness-contracttest`` (``install``), so that Ray Train
workers load it through its entry point.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from harness.api import ClassificationSet, MetricInfo, RetrievalSet, hookimpl, prepare_features

DIST, MODULE = "harness-contracttest", "harness_contracttest"
WORDS = ["red", "green", "blue", "gold"]


class ColourPairs:
    """``n`` 4x4 images of four colours; captions name the colour in two phrasings; groups = the colour."""

    def __init__(self, n: int = 48, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 4, n)
        base = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]], dtype=np.float64)
        self.images = np.clip(base[self.labels][:, None, None, :] + rng.normal(0, 30, (n, 4, 4, 3)), 0, 255).astype(np.uint8)
        self.fetched: list[np.ndarray] = []  # the indices of every get_batch, in order
        self.captions: list[list[str]] = []  # the captions of every get_batch, in order

    def __len__(self):
        return len(self.labels)

    def get_batch(self, indices, rng):
        indices = np.asarray(indices)
        caps = [f"a {WORDS[c]} thing" if rng.random() < 0.5 else WORDS[c] for c in self.labels[indices]]
        self.fetched.append(indices.copy())
        self.captions.append(caps)
        return self.images[indices], caps

    def caption_groups(self, indices, captions):
        return np.array([WORDS.index(c.split()[-2] if len(c.split()) > 1 else c) for c in captions], dtype=np.int64)


class ColourDataset:
    """Four colour classes of 4x4 images (test only); supplies caption_group."""

    supplies = ("caption_group",)

    def __init__(self, n: int = 48, seed: int = 0):
        self.pairs = ColourPairs(n, seed)
        self.eval_images, self.eval_labels = self.pairs.images[:16], self.pairs.labels[:16]

    def train_pairs(self):
        return self.pairs

    def eval_sets(self):
        caps = [[f"a {WORDS[c]} thing", WORDS[c]] for c in self.eval_labels]
        return [ClassificationSet("colour", self.eval_images, self.eval_labels, list(WORDS), ["a {c} thing"]),
                RetrievalSet("retrieval", self.eval_images, caps)]


class PlainDataset(ColourDataset):
    """The same data without caption groups (supplies nothing)."""

    supplies = ()


class Towers(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.image = torch.nn.Linear(48, dim)
        self.text = torch.nn.Linear(64, dim)
        self.register_buffer("seen", torch.zeros(()))  # a buffer the momentum towers copy


class LinearEncoder:
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


def clip_terms(x, y, scale: float = 10.0):
    logits = scale * x @ y.T
    labels = torch.arange(len(x), device=x.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class IndexRecorder(torch.nn.Module):
    """CLIP whose state is every ``index`` it saw (a growing int64 buffer) and a visit count per row."""

    extras = ("index",)

    def __init__(self):
        super().__init__()
        self.register_buffer("seen", torch.zeros(0, dtype=torch.long))
        self.register_buffer("visits", torch.zeros(0, dtype=torch.long))
        self.setup_calls: list[tuple[int, int]] = []  # (dataset_size, forward calls before it)
        self.calls = 0

    def setup(self, dataset_size: int) -> None:
        self.setup_calls.append((dataset_size, self.calls))
        self.visits = torch.zeros(dataset_size, dtype=torch.long, device=self.visits.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.seen = torch.empty_like(state_dict[prefix + "seen"])  # the log grows: take the saved length
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x, y, *, index):
        self.calls += 1
        x, y = prepare_features(x, y, "index_recorder")
        if len(index) != len(x):
            raise ValueError(f"index has {len(index)} rows for {len(x)} gathered pairs")
        with torch.no_grad():
            self.seen = torch.cat([self.seen, index.to(self.seen.device)])
            self.visits[index] += 1
        _same_on_every_rank(self.seen)
        return {"contrastive": clip_terms(x, y)}


def _same_on_every_rank(state: torch.Tensor) -> None:
    """``ValueError`` when, with several workers, the ranks' ``state`` differ (every rank must make
    the same update from the gathered batch)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    mine = state.double().flatten()
    code = torch.stack([mine.sum(), (mine * torch.arange(1, len(mine) + 1, dtype=torch.float64)).sum()])
    every = [torch.empty_like(code) for _ in range(dist.get_world_size())]
    dist.all_gather(every, code)
    if any(not torch.equal(other, code) for other in every):
        raise ValueError(f"the loss state differs across ranks: {[e.tolist() for e in every]}")


class Memory(torch.nn.Module):
    """A stateful loss using every v3 extra: a per-row moving average of each pair's similarity
    (addressed by ``index``, sized by ``setup``) weights CLIP; positives shared within a
    ``caption_group``; pulls towards the momentum towers' features. ``momentum`` may follow a
    schedule (``schedule``: momentum = 0.5 + 0.1 step, capped at 0.9)."""

    extras = ("index", "caption_group", "image_momentum", "text_momentum", "step")

    def __init__(self, momentum: float = 0.9, schedule: bool = False, gamma: float = 0.5):
        super().__init__()
        self.momentum, self.schedule, self.gamma = momentum, schedule, gamma
        self.register_buffer("average", torch.zeros(0))
        self.received: list[dict[str, torch.Tensor]] = []

    def setup(self, dataset_size: int) -> None:
        self.average = torch.zeros(dataset_size, device=self.average.device)

    def forward(self, x, y, *, index, caption_group, image_momentum, text_momentum, step):
        if self.schedule:
            self.momentum = min(0.9, 0.5 + 0.1 * (step + 1))  # the rate of the update after this step
        self.received.append({"index": index.clone(), "caption_group": caption_group.clone(),
                              "image_momentum": image_momentum.clone(), "text_momentum": text_momentum.clone()})
        x, y = prepare_features(x, y, "memory")
        logits = 10.0 * x @ y.T
        same = (caption_group[:, None] == caption_group[None, :]).to(x.dtype)
        target = same / same.sum(1, keepdim=True)
        weight = 1.0 + self.average[index].to(x.dtype)
        grouped = -(weight * (target * F.log_softmax(logits, 1)).sum(1)).mean()
        pull = 2 - (x * text_momentum).sum(1).mean() - (y * image_momentum).sum(1).mean()
        with torch.no_grad():
            self.average[index] = (1 - self.gamma) * self.average[index] + self.gamma * (x * y).sum(1).detach().to(self.average.dtype)
        return {"grouped": grouped, "pull": 0.1 * pull}


class RandomDraws(torch.nn.Module):
    """CLIP plus a term scaled by one ``torch.rand`` draw per call; records the draws."""

    def __init__(self):
        super().__init__()
        self.draws: list[float] = []

    def forward(self, x, y):
        r = torch.rand(())
        self.draws.append(float(r))
        x, y = prepare_features(x, y, "random_draws")
        return {"contrastive": clip_terms(x, y), "noise": 1e-3 * r * (x * y).sum(1).mean()}


class BadMomentum(torch.nn.Module):
    """Declares the momentum towers' features with a ``momentum`` outside (0, 1) (test only)."""

    extras = ("image_momentum", "text_momentum")

    def __init__(self, momentum=1.5):  # not annotated: the value reaches the loss as given (an int stays one)
        super().__init__()
        self.momentum = momentum

    def forward(self, x, y, *, image_momentum, text_momentum):
        return {"l": (x * image_momentum).sum() + (y * text_momentum).sum()}


class NoMomentum(BadMomentum):
    """Declares the momentum towers' features but has no ``momentum`` (test only)."""

    def __init__(self):
        torch.nn.Module.__init__(self)


class Grouped(torch.nn.Module):
    """Asks for caption_group (test only)."""

    extras = ("caption_group",)

    def forward(self, x, y, *, caption_group):
        x, y = prepare_features(x, y, "grouped")
        return {"contrastive": clip_terms(x, y)}


class MeanCos:
    """Mean paired cosine of the retrieval set (test only)."""

    metric_info = {"mean_cos": MetricInfo("mean paired cosine", "gap", None)}

    def evaluate(self, ctx):
        x, y = ctx.sets[1].paired()
        return {"mean_cos": float((x * y).sum(1).mean())}


@hookimpl
def harness_register_losses(register):
    register("v3_index_recorder", IndexRecorder)
    register("v3_memory", Memory)
    register("v3_bad_momentum", BadMomentum)
    register("v3_no_momentum", NoMomentum)
    register("v3_grouped", Grouped)


@hookimpl
def harness_register_encoders(register):
    register("v3_linear", LinearEncoder)


@hookimpl
def harness_register_datasets(register):
    register("v3_colours", ColourDataset)
    register("v3_plain", PlainDataset)


@hookimpl
def harness_register_evaluations(register):
    register("v3_meancos", MeanCos)


def install(site: Path) -> Path:
    """This module as the installed distribution ``harness-contracttest`` in ``site`` (for PYTHONPATH)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{MODULE}.py").write_text(Path(__file__).read_text())
    info = site / f"{MODULE}-0.0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[harness]\ncontract = {MODULE}\n")
    return site
