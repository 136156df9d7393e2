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
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from harness.api import ArithmeticSet, ArithmeticTriplet, ClassificationSet, EvalSet, RetrievalSet, bind_params
from harness.builtin.datasets.shapes.attributes import COLOURS, POSITIONS, SHAPES, SIZES
from harness.builtin.datasets.shapes.composition import composition_set
from harness.builtin.datasets.shapes.grammar import (
    caption_draws,
    caption_groups,
    caption_of,
    captions,
    distinct_captions,
    scene_objects,
)
from harness.builtin.datasets.shapes.negatives import negative_captions
from harness.builtin.datasets.shapes.render import render
from harness.builtin.datasets.shapes.world import Scenes, World, make_world, sample_scenes
from harness.builtin.datasets.files import LOCAL_PATH

SHAPE_TEMPLATES = ["a {c}", "a picture of a {c}", "{c} shape", "an image of a {c}", "there is a {c}"]
COLOUR_TEMPLATES = ["a {c} shape", "something {c}", "a {c} object", "an image of something {c}", "{c}"]
COMBO_TEMPLATES = ["{c}", "the {c}", "a picture of the {c}", "{c} shape", "one {c}"]
SIZE_TEMPLATES = ["a {c} shape", "something {c}", "a {c} object", "an image of something {c}", "{c}"]
POSITION_TEMPLATES = ["a shape on the {c}", "something at the {c}", "an object in the {c}", "{c}", "the {c} one"]
ATTRIBUTES = ("shape", "colour", "size", "position")

# random streams: default_rng([seed, stream]); stream 0 is the world's held-out combinations; the
# validation split draws every evaluation set from the same stream + VALIDATION
TRAIN, POOL, UNSEEN, RETRIEVAL, RETRIEVAL_TEXT, GALLERY, TRIPLETS, COMPOSITION, PROBE = range(1, 10)
VALIDATION = 100
PROBE_SIZE = 512  # scenes of the probes over training (harness.diagnostics)
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
                 caption_style: str = "paraphrase", shape_groups: int = 1, negatives_per_pair: int = 4,
                 probe: Scenes | None = None):
        self.probe = probe
        self._last: Scenes | None = None
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
            self._last = shape_groups(self.scenes.take(indices), self.shape_groups, self._world(), rng)
            return self._last, None
        self._last = rows = self.scenes.take(indices)
        return rows, (np.asarray(self.images[indices]) if self.images is not None else None)

    def batch_stats(self) -> dict[str, float]:
        """``shape_only_rows``: the fraction of the last batch's rows with an in-batch negative that
        differs from them in shape only (same objects, colours, sizes and positions): the rows whose
        pair only shape can tell apart (``harness.diagnostics``)."""
        rows = self._last
        if rows is None or len(rows) == 0:
            return {}
        rest = np.concatenate([rows.n_objects[:, None], rows.colour, rows.size, rows.position], axis=1)
        groups: dict[bytes, set[bytes]] = {}
        for key, shape in zip(rest, rows.shape):
            groups.setdefault(key.tobytes(), set()).add(shape.tobytes())
        told = [len(groups[key.tobytes()]) > 1 for key in rest]
        return {"shape_only_rows": float(np.mean(told))}

    def probe_set(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """One-object scenes of the training distribution (their own random stream) with each
        attribute's labels, for the probes over training (``harness.diagnostics``)."""
        if self.probe is None:
            raise ValueError("this ShapesPairs has no probe scenes")
        p = self.probe
        labels = {"shape": p.shape[:, 0], "colour": p.colour[:, 0], "size": p.size[:, 0], "position": p.position[:, 0]}
        return render(p, self.image_size), labels

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

    def caption_groups(self, indices: np.ndarray, captions: list[str]) -> np.ndarray:
        """The ``caption_group`` of each caption of a batch (``grammar.caption_group``: the same
        objects and the same background, or none, named; with canonical captions, equal captions)."""
        return caption_groups(captions)


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
    hard-negative captions per pair for losses that ask for ``text_negatives``. A loss that asks for
    ``caption_group`` gets each caption's meaning (``grammar.caption_group``). ``composition``:
    ``"legacy"`` (default) or ``"balanced"`` items of the composition probe (``composition.py``).
    """

    # params added after job ids of this world were published: left out of a job's params (and id) at
    # their defaults, so earlier jobs keep their ids (``harness.suite.id_stable``)
    ID_OPTIONAL_PARAMS = ("headline", "composition")
    supplies = ("text_negatives", "caption_group")  # loss extras it feeds (get_batch_with_negatives, caption_groups)
    splits = ("test", "validation")  # eval_sets(split="validation"): the same sets from other draws, for tuning

    def __init__(
        self,
        seed: Annotated[int, Field(ge=0, le=2**31 - 1, description=(
            "seed of the world: its held-out combinations, every split's scenes and captions"))] = 0,
        image_size: Annotated[int, Field(ge=16, le=512, description="side of the square images, in pixels")] = 32,
        train_size: Annotated[int, Field(ge=1, le=10**9, description="number of training scenes")] = 20000,
        eval_size: Annotated[int, Field(ge=1, le=10**6, description="images per evaluation set")] = 1000,
        num_shapes: Annotated[int, Field(ge=2, le=len(SHAPES), description="shapes in the world (the first N)")] = 6,
        num_colours: Annotated[int, Field(ge=2, le=len(COLOURS), description="colours in the world (the first N)")] = 8,
        two_object_prob: Annotated[float, Field(ge=0, le=1, description="fraction of scenes with two objects")] = 0.25,
        heldout_combos: Annotated[float, Field(ge=0, le=0.5, description=(
            "fraction of (shape, colour) combinations never trained on (the compositional split)"))] = 0.125,
        captions_per_image: Annotated[int, Field(ge=1, le=100, description="captions per image of the retrieval set")] = 5,
        cache_dir: Annotated[str | None, Field(max_length=4096, pattern=LOCAL_PATH, description=(
            "a local folder to cache the rendered training split in (null: render on demand)"))] = None,
        captions: Annotated[Literal["paraphrase", "canonical"], Field(description=(
            "paraphrase: templates and synonyms; canonical: 'SIZE COLOUR SHAPE POSITION' per object"))] = "paraphrase",
        shape_groups: Annotated[int, Field(ge=1, le=len(SHAPES), description=(
            "batches of groups of g scenes that differ only in one object's shape (1: off)"))] = 1,
        negatives_per_pair: Annotated[int, Field(ge=1, le=64, description=(
            "hard-negative captions per pair for losses that ask for text_negatives"))] = 4,
        headline: Annotated[list[Literal["shape", "colour", "size", "position", "composition"]] | None, Field(
            min_length=1, max_length=5, description=(
                "the attribute tasks the zero-shot main score averages (null: every attribute task)"))] = None,
        composition: Annotated[Literal["legacy", "balanced"], Field(description=(
            "composition probe items: legacy (the first design: a shape's pixel area lets colour mass predict "
            "the binding) or balanced (equal-area shapes, one size per image, random non-touching positions)"))
        ] = "legacy",
    ):
        self.check_params(num_shapes=num_shapes, shape_groups=shape_groups, cache_dir=cache_dir, headline=headline)
        self.headline = tuple(headline) if headline is not None else None
        self.composition = composition
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
        self._eval: dict[str, list[EvalSet]] = {}

    @classmethod
    def check_params(cls, **params: Any) -> None:
        """What the annotations cannot say (``harness validate`` calls this): shape groups fit the
        world's shapes, and the cache folder has no '..' component."""
        p = bind_params(cls, params)
        if p["shape_groups"] > p["num_shapes"]:
            raise ValueError(f"shape_groups must be at most num_shapes={p['num_shapes']}, got {p['shape_groups']}")
        if p["cache_dir"] is not None and ".." in Path(p["cache_dir"]).parts:
            raise ValueError(f"cache_dir must not contain '..', got {p['cache_dir']!r}")
        if p["headline"] is not None and len(set(p["headline"])) != len(p["headline"]):
            raise ValueError(f"headline must not repeat an attribute, got {p['headline']}")

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream])

    def _scenes(self, stream: int, n: int, combos: list[tuple[int, int]], two_object_prob: float) -> Scenes:
        return sample_scenes(self._rng(stream), n, combos, self.image_size, two_object_prob)

    # ---------------------------------------------------------------------------------- training
    def train_pairs(self) -> ShapesPairs:
        if self._pairs is None:
            scenes = self._scenes(TRAIN, self.train_size, self.world.seen, self.two_object_prob)
            images = self._cached_images(scenes) if self.cache_dir and self.shape_groups == 1 else None
            probe = self._scenes(PROBE, PROBE_SIZE, self.world.seen, 0.0)
            self._pairs = ShapesPairs(scenes, self.image_size, images, self.world, self.caption_style,
                                      self.shape_groups, self.negatives_per_pair, probe)
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
    def eval_sets(self, split: str = "test") -> list[EvalSet]:
        """The reported sets (``test``), or the same sets drawn from other random streams (``validation``).

        The validation split shares no draw with the reported sets or the training split, so
        tuning (which selects on it) never sees a reported example.
        """
        if split not in self.splits:
            raise ValueError(f"split must be one of {', '.join(self.splits)}, got {split!r}")
        if split not in self._eval:
            offset = 0 if split == "test" else VALIDATION
            self._eval[split] = self._classification(offset) + [self._retrieval(offset), self._arithmetic(offset)]
        return list(self._eval[split])

    def _classification(self, offset: int = 0) -> list[ClassificationSet]:
        """One pool of one-object images (seen combinations) labelled by each attribute and by the
        (shape, colour) combination, the held-out combinations, and the composition probe.

        Each attribute set (tagged ``attribute``: the zero-shot main score averages those, or only the
        ``headline`` ones, tagged ``headline``, when the world declares them) carries every image's
        attributes and the oracle that knows all of them but the one asked.
        ``shape_colour`` and ``shape_colour_unseen`` share all S x C class names, so the unseen set
        asks for a held-out pair among every pair, including the seen ones it resembles.
        """
        world = self.world
        pool = self._scenes(POOL + offset, self.eval_size, world.seen, 0.0)
        images = render(pool, self.image_size)
        values = {"shape": pool.shape[:, 0], "colour": pool.colour[:, 0], "size": pool.size[:, 0],
                  "position": pool.position[:, 0]}
        names = {"shape": world.shapes, "colour": world.colours, "size": [v.name for v in SIZES],
                 "position": [v.name for v in POSITIONS]}
        templates = {"shape": SHAPE_TEMPLATES, "colour": COLOUR_TEMPLATES, "size": SIZE_TEMPLATES,
                     "position": POSITION_TEMPLATES}
        sets = [
            ClassificationSet(a, images, values[a].copy(), names[a], list(templates[a]), tags={
                "attribute": a, "attributes": values, "oracle_features": [[b for b in ATTRIBUTES if b != a]],
                "oracle_accuracy": self._blind_oracle(a, values)})
            for a in ATTRIBUTES
        ]
        combo_names = [world.combo_name(s, c) for s, c in world.combos]
        sets.append(ClassificationSet("shape_colour", images, values["shape"] * world.num_colours + values["colour"],
                                      combo_names, list(COMBO_TEMPLATES)))
        if world.unseen:
            unseen = self._scenes(UNSEEN + offset, self.eval_size, world.unseen, 0.0)
            labels = unseen.shape[:, 0] * world.num_colours + unseen.colour[:, 0]
            sets.append(ClassificationSet("shape_colour_unseen", render(unseen, self.image_size), labels,
                                          combo_names, list(COMBO_TEMPLATES), tags={"compositional": True}))
        composition = self._composition(offset)
        sets += [composition] if composition is not None else []
        if self.headline is not None:  # the attribute tasks the zero-shot main score averages
            for record in sets:
                if record.tags.get("attribute") in self.headline:
                    record.tags["headline"] = True
        return sets

    def _blind_oracle(self, asked: str, values: dict[str, np.ndarray]) -> float:
        """Exact accuracy, on these images, of the Bayes rule that knows every attribute but ``asked``.

        In the world's model size and position are uniform and independent of everything else,
        and an object's (shape, colour) is uniform over the seen combinations: so knowing the
        colour leaves the seen shapes of that colour, knowing the shape the seen colours of it.
        """
        seen = np.zeros((self.world.num_shapes, self.world.num_colours), dtype=bool)
        for s_, c_ in self.world.seen:
            seen[s_, c_] = True
        if asked == "shape":
            return float(np.mean(1.0 / seen[:, values["colour"]].sum(axis=0)))
        if asked == "colour":
            return float(np.mean(1.0 / seen[values["shape"], :].sum(axis=1)))
        return 1.0 / (len(SIZES) if asked == "size" else len(POSITIONS))

    def _composition(self, offset: int = 0) -> ClassificationSet | None:
        """The composition probe (``composition.py``): per block of two held-out combinations (a, x)
        and (b, y), images of "x a and y b" and of the swap "y a and x b", as many of each, each
        choosing between its block's two bindings. ``legacy`` (default, unchanged): the first
        design, where a shape's pixel area lets colour mass predict the binding (0.77 at seed 0);
        ``balanced``: equal-area shapes with one multiset of alpha values, one size per image,
        random non-touching positions, so no binding-free cue is informative (0.5). Both carry
        ``tags["binding_free_features"]`` (the linear probe's "binding-free" reference row). The
        other sets and the training split are the same under either. None when fewer than two
        held-out combinations have different shapes and colours.
        """
        return composition_set(self.world, self._rng(COMPOSITION + offset), self.eval_size, self.image_size,
                               self.composition)

    def _retrieval(self, offset: int = 0) -> RetrievalSet:
        scenes = self._scenes(RETRIEVAL + offset, self.eval_size, self.world.seen, self.two_object_prob)
        texts = distinct_captions(scenes, self._rng(RETRIEVAL_TEXT + offset), self.captions_per_image,
                                  style=self.caption_style)
        return RetrievalSet("retrieval", render(scenes, self.image_size), texts)

    def _arithmetic(self, offset: int = 0) -> ArithmeticSet:
        """Gallery of one-object images; each one is the source of one triplet.

        Even sources change the colour, odd ones the shape: value word = the source's value,
        target word = another value whose (shape, colour) with the kept attribute is in the
        gallery; target_ids = the gallery images of that combination. The tags give each image's
        shape and colour and the attribute each triplet changes (for the reference rows).
        """
        world = self.world
        gallery = self._scenes(GALLERY + offset, self.eval_size, world.seen, 0.0)
        shape, colour = gallery.shape[:, 0], gallery.colour[:, 0]
        members: dict[tuple[int, int], list[int]] = {}
        for i, sc in enumerate(zip(shape.tolist(), colour.tolist())):
            members.setdefault(sc, []).append(i)
        rng = self._rng(TRIPLETS + offset)
        triplets, changed = [], []
        for i in range(len(gallery)):
            s, c = int(shape[i]), int(colour[i])
            if i % 2 == 0:
                options = [c2 for c2 in range(world.num_colours) if c2 != c and (s, c2) in members]
                if options:
                    c2 = options[rng.integers(len(options))]
                    triplets.append(ArithmeticTriplet(i, COLOURS[c].name, COLOURS[c2].name, members[(s, c2)]))
                    changed.append("colour")
            else:
                options = [s2 for s2 in range(world.num_shapes) if s2 != s and (s2, c) in members]
                if options:
                    s2 = options[rng.integers(len(options))]
                    triplets.append(ArithmeticTriplet(i, SHAPES[s].name, SHAPES[s2].name, members[(s2, c)]))
                    changed.append("shape")
        tags = {"attributes": {"shape": shape.copy(), "colour": colour.copy()}, "changed": changed}
        return ArithmeticSet("arithmetic", render(gallery, self.image_size), triplets, tags=tags)

    def info(self) -> dict[str, Any]:
        world = self.world
        return {
            "train_size": self.train_size,
            "eval_size": self.eval_size,
            "seen_combos": len(world.seen),
            "heldout_combos": [world.combo_name(s, c) for s, c in sorted(world.heldout)],
        }
