"""The ``shapes`` dataset plugin: training pairs and evaluation sets of the shapes world.

Every split draws from its own random stream ``default_rng([seed, stream])``, so the evaluation
sets do not change with ``train_size`` and no split shares a draw with another. Images are
rendered on demand from the scene table (a batch of 256 at 32x32 takes milliseconds); with
``cache_dir`` the training split is rendered once into ``cache_dir/shapes-<key>.npy`` and
memory-mapped by later runs.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.builtin.datasets.shapes.attributes import COLOURS, SHAPES
from harness.builtin.datasets.shapes.grammar import (
    CAPTION_STYLES,
    caption_draws,
    caption_of,
    captions,
    distinct_captions,
    scene_objects,
)
from harness.builtin.datasets.shapes.negatives import negative_captions
from harness.builtin.datasets.shapes.render import render
from harness.builtin.datasets.shapes.world import Scenes, World, check_world, make_world, sample_scenes
from harness.registry import bind_params
from harness.types import ArithmeticSet, ArithmeticTriplet, ClassificationSet, EvalSet, RetrievalSet

SHAPE_TEMPLATES = ["a {c}", "a picture of a {c}", "{c} shape", "an image of a {c}", "there is a {c}"]
COLOUR_TEMPLATES = ["a {c} shape", "something {c}", "a {c} object", "an image of something {c}", "{c}"]
COMBO_TEMPLATES = ["{c}", "the {c}", "a picture of the {c}", "{c} shape", "one {c}"]

# random streams: default_rng([seed, stream]); stream 0 is the world's held-out combinations
TRAIN, POOL, UNSEEN, RETRIEVAL, RETRIEVAL_TEXT, GALLERY, TRIPLETS = range(1, 8)
CACHE_FORMAT = 1  # bump when rendering changes, so stale cache files are not reused


class ShapesPairs:
    """The training split: scene rows rendered on demand (or read from the cache file).

    ``caption_style``: ``"paraphrase"`` or ``"canonical"`` (``grammar.captions``).
    ``shape_groups`` g >= 2 builds each batch of N from ceil(N / g) of the given rows, each
    repeated g times with one object's shape changed to g - 1 other shapes (a (shape, colour)
    combination the split holds): within a group only that shape differs, so shape is the only
    cue that tells the group's pairs apart (in-batch hard negatives). g = 1 (default): the rows as
    given. ``negatives_per_pair`` K: how many hard-negative captions ``get_batch_with_negatives``
    writes per pair (``negatives.py``).
    """

    def __init__(self, scenes: Scenes, image_size: int, images: np.ndarray | None = None, world: World | None = None,
                 caption_style: str = "paraphrase", shape_groups: int = 1, negatives_per_pair: int = 4):
        self.scenes = scenes
        self.image_size = image_size
        self.images = images
        self.world = world
        self.caption_style = caption_style
        self.shape_groups = shape_groups
        self.negatives_per_pair = negatives_per_pair

    def __len__(self) -> int:
        return len(self.scenes)

    def _rows(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[Scenes, np.ndarray | None]:
        """The batch's scenes, and its images when they come from the cache."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.shape_groups > 1:
            return shape_groups(self.scenes.take(indices), self.shape_groups, self._world(), rng), None
        rows = self.scenes.take(indices)
        return rows, (np.asarray(self.images[indices]) if self.images is not None else None)

    def _world(self) -> World:
        if self.world is None:
            raise ValueError("shape_groups and negatives need the world: build ShapesPairs with world=")
        return self.world

    def get_batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        rows, images = self._rows(indices, rng)
        images = render(rows, self.image_size) if images is None else images
        return images, captions(rows, rng, style=self.caption_style)

    def get_batch_with_negatives(self, indices: np.ndarray, rng: np.random.Generator
                                 ) -> tuple[np.ndarray, list[str], list[list[str]]]:
        """``get_batch`` plus K hard-negative captions per pair (the same scene, one attribute
        changed or two objects' attributes exchanged, written with the positive's draws).

        Draws from ``rng`` first exactly what ``get_batch`` draws, then the edits.
        """
        world = self._world()
        rows, images = self._rows(indices, rng)
        images = render(rows, self.image_size) if images is None else images
        draws = caption_draws(rng, len(rows))
        k = self.negatives_per_pair
        edit_draws = rng.integers(0, 2**31, size=(len(rows), 2 * k))
        texts, negatives = [], []
        for i in range(len(rows)):
            objects, background = scene_objects(rows, i), int(rows.background[i])
            texts.append(caption_of(objects, background, draws[i], self.caption_style))
            negatives.append(negative_captions(objects, background, draws[i], world, k, edit_draws[i],
                                               self.caption_style))
        return images, texts, negatives


def shape_groups(rows: Scenes, g: int, world: World, rng: np.random.Generator) -> Scenes:
    """Groups of ``g`` scenes that differ only in one object's shape, ``len(rows)`` scenes in all.

    The first ceil(N / g) rows are the groups' first members; each is repeated g times, and in
    members 2..g one object (drawn uniformly) takes other shapes, drawn without replacement among
    the shapes whose (shape, colour) is in ``world.seen`` (cycling when fewer than g - 1 exist).
    """
    n = len(rows)
    m = -(-n // g)
    anchors = rows.take(np.arange(m))
    u = rng.random((m, 1 + world.num_shapes))
    slot = np.minimum((u[:, 0] * anchors.n_objects).astype(np.int64), anchors.n_objects - 1)
    seen = np.zeros((world.num_shapes, world.num_colours), dtype=bool)
    for s_, c_ in world.seen:
        seen[s_, c_] = True
    out = anchors.take(np.repeat(np.arange(m), g)[:n])
    for j in range(m):
        k = int(slot[j])
        own, colour = int(anchors.shape[j, k]), int(anchors.colour[j, k])
        others = [int(s_) for s_ in np.argsort(u[j, 1:], kind="stable") if s_ != own and seen[s_, colour]]
        for r in range(1, g):
            i = j * g + r
            if i < n and others:
                out.shape[i, k] = others[(r - 1) % len(others)]
    return out


class ShapesDataset:
    """Synthetic shapes world (offline, seeded): shape/colour/size/position captions with paraphrases.

    ``captions``: ``"paraphrase"`` (default: templates, synonyms, sometimes the background) or
    ``"canonical"`` (one caption per scene, "small red circle left and large blue square right").
    ``shape_groups``: 1 (default) for batches of the sampled rows; g >= 2 for batches of groups of
    g scenes that differ only in one object's shape (``ShapesPairs``). ``negatives_per_pair``: K
    hard-negative captions per pair for losses that ask for ``text_negatives``.
    """

    supplies = ("text_negatives",)  # loss extras this dataset can feed (``get_batch_with_negatives``)

    def __init__(
        self,
        seed: int = 0,
        image_size: int = 32,
        train_size: int = 20000,
        eval_size: int = 1000,
        num_shapes: int = 6,
        num_colours: int = 8,
        two_object_prob: float = 0.25,
        heldout_combos: float = 0.125,
        captions_per_image: int = 5,
        cache_dir: str | None = None,
        captions: Literal["paraphrase", "canonical"] = "paraphrase",
        shape_groups: int = 1,
        negatives_per_pair: int = 4,
    ):
        self.check_params(image_size=image_size, train_size=train_size, eval_size=eval_size, num_shapes=num_shapes,
                          num_colours=num_colours, two_object_prob=two_object_prob,
                          heldout_combos=heldout_combos, captions_per_image=captions_per_image, captions=captions,
                          shape_groups=shape_groups, negatives_per_pair=negatives_per_pair)
        self.caption_style = captions
        self.shape_groups = shape_groups
        self.negatives_per_pair = negatives_per_pair
        self.seed = seed
        self.image_size = image_size
        self.train_size = train_size
        self.eval_size = eval_size
        self.two_object_prob = two_object_prob
        self.captions_per_image = captions_per_image
        self.cache_dir = cache_dir
        self.world: World = make_world(seed, num_shapes, num_colours, heldout_combos)
        self._pairs: ShapesPairs | None = None
        self._eval: list[EvalSet] | None = None

    @classmethod
    def check_params(cls, **params: Any) -> None:
        """Raise ``ValueError`` naming the first out-of-range param (``harness validate`` calls this)."""
        p = bind_params(cls, params)
        image_size, train_size, eval_size = p["image_size"], p["train_size"], p["eval_size"]
        two_object_prob, captions_per_image = p["two_object_prob"], p["captions_per_image"]
        if not 16 <= image_size <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {image_size}")
        if train_size < 1:
            raise ValueError(f"train_size must be >= 1, got {train_size}")
        if eval_size < 1:
            raise ValueError(f"eval_size must be >= 1, got {eval_size}")
        if not 0.0 <= two_object_prob <= 1.0:
            raise ValueError(f"two_object_prob must be in [0, 1], got {two_object_prob}")
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, got {captions_per_image}")
        if p["captions"] not in CAPTION_STYLES:
            raise ValueError(f"captions must be one of {', '.join(CAPTION_STYLES)}, got {p['captions']!r}")
        if not 1 <= p["shape_groups"] <= p["num_shapes"]:
            raise ValueError(f"shape_groups must be in [1, num_shapes={p['num_shapes']}], got {p['shape_groups']}")
        if not 1 <= p["negatives_per_pair"] <= 64:
            raise ValueError(f"negatives_per_pair must be in [1, 64], got {p['negatives_per_pair']}")
        check_world(p["num_shapes"], p["num_colours"], p["heldout_combos"])

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream])

    def _scenes(self, stream: int, n: int, combos: list[tuple[int, int]], two_object_prob: float) -> Scenes:
        return sample_scenes(self._rng(stream), n, combos, self.image_size, two_object_prob)

    # ---------------------------------------------------------------------------------- training
    def train_pairs(self) -> ShapesPairs:
        if self._pairs is None:
            scenes = self._scenes(TRAIN, self.train_size, self.world.seen, self.two_object_prob)
            images = self._cached_images(scenes) if self.cache_dir and self.shape_groups == 1 else None
            self._pairs = ShapesPairs(scenes, self.image_size, images, self.world, self.caption_style,
                                      self.shape_groups, self.negatives_per_pair)
        return self._pairs

    def cache_path(self) -> Path | None:
        """Where the rendered training split is cached (None without ``cache_dir``)."""
        if not self.cache_dir:
            return None
        key = {
            "format": CACHE_FORMAT,
            "seed": self.seed,
            "image_size": self.image_size,
            "train_size": self.train_size,
            "num_shapes": self.world.num_shapes,
            "num_colours": self.world.num_colours,
            "two_object_prob": self.two_object_prob,
            "heldout": sorted(self.world.heldout),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(self.cache_dir) / f"shapes-{digest}.npy"

    def _cached_images(self, scenes: Scenes, chunk: int = 2048) -> np.ndarray:
        path = self.cache_path()
        shape = (len(scenes), self.image_size, self.image_size, 3)
        if path.exists():
            images = np.load(path, mmap_mode="r")
            if images.shape == shape and images.dtype == np.uint8:
                return images
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for start in range(0, len(scenes), chunk):
            rows = np.arange(start, min(start + chunk, len(scenes)))
            out[rows] = render(scenes.take(rows), self.image_size)
        out.flush()
        del out
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache file
        return np.load(path, mmap_mode="r")

    # -------------------------------------------------------------------------------- evaluation
    def eval_sets(self) -> list[EvalSet]:
        if self._eval is None:
            self._eval = self._classification() + [self._retrieval(), self._arithmetic()]
        return list(self._eval)

    def _classification(self) -> list[ClassificationSet]:
        """One pool of one-object images (seen combinations) labelled three ways, plus the unseen set.

        ``shape_colour`` and ``shape_colour_unseen`` share all S x C class names, so the unseen
        set asks for a held-out pair among every pair, including the seen ones it resembles.
        """
        world = self.world
        pool = self._scenes(POOL, self.eval_size, world.seen, 0.0)
        images = render(pool, self.image_size)
        shape, colour = pool.shape[:, 0], pool.colour[:, 0]
        combo_names = [world.combo_name(s, c) for s, c in world.combos]
        sets = [
            ClassificationSet("shape", images, shape.copy(), world.shapes, list(SHAPE_TEMPLATES)),
            ClassificationSet("colour", images, colour.copy(), world.colours, list(COLOUR_TEMPLATES)),
            ClassificationSet("shape_colour", images, shape * world.num_colours + colour, combo_names,
                              list(COMBO_TEMPLATES)),
        ]
        if world.unseen:
            unseen = self._scenes(UNSEEN, self.eval_size, world.unseen, 0.0)
            labels = unseen.shape[:, 0] * world.num_colours + unseen.colour[:, 0]
            sets.append(ClassificationSet("shape_colour_unseen", render(unseen, self.image_size), labels,
                                          combo_names, list(COMBO_TEMPLATES), tags={"compositional": True}))
        return sets

    def _retrieval(self) -> RetrievalSet:
        scenes = self._scenes(RETRIEVAL, self.eval_size, self.world.seen, self.two_object_prob)
        texts = distinct_captions(scenes, self._rng(RETRIEVAL_TEXT), self.captions_per_image, style=self.caption_style)
        return RetrievalSet("retrieval", render(scenes, self.image_size), texts)

    def _arithmetic(self) -> ArithmeticSet:
        """Gallery of one-object images; each one is the source of one triplet.

        Even sources change the colour, odd ones the shape: value word = the source's value,
        target word = another value whose (shape, colour) with the kept attribute is in the
        gallery; target_ids = the gallery images of that combination.
        """
        world = self.world
        gallery = self._scenes(GALLERY, self.eval_size, world.seen, 0.0)
        shape, colour = gallery.shape[:, 0], gallery.colour[:, 0]
        members: dict[tuple[int, int], list[int]] = {}
        for i, sc in enumerate(zip(shape.tolist(), colour.tolist())):
            members.setdefault(sc, []).append(i)
        rng = self._rng(TRIPLETS)
        triplets = []
        for i in range(len(gallery)):
            s, c = int(shape[i]), int(colour[i])
            if i % 2 == 0:
                options = [c2 for c2 in range(world.num_colours) if c2 != c and (s, c2) in members]
                if options:
                    c2 = options[rng.integers(len(options))]
                    triplets.append(ArithmeticTriplet(i, COLOURS[c].name, COLOURS[c2].name, members[(s, c2)]))
            else:
                options = [s2 for s2 in range(world.num_shapes) if s2 != s and (s2, c) in members]
                if options:
                    s2 = options[rng.integers(len(options))]
                    triplets.append(ArithmeticTriplet(i, SHAPES[s].name, SHAPES[s2].name, members[(s2, c)]))
        return ArithmeticSet("arithmetic", render(gallery, self.image_size), triplets)

    def info(self) -> dict[str, Any]:
        world = self.world
        return {
            "train_size": self.train_size,
            "eval_size": self.eval_size,
            "seen_combos": len(world.seen),
            "heldout_combos": [world.combo_name(s, c) for s, c in sorted(world.heldout)],
        }
