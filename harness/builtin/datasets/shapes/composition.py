"""The composition probe of the shapes world: which object has which colour, two objects at a time.

A block is two held-out combinations (a, x) and (b, y) (different shapes and colours; each shape
and colour also occurs in training with other partners). Its two classes are the bindings
"x a and y b" (the held-out combinations) and "y a and x b" (the swap); every image shows both
objects of one binding and chooses between its block's two classes (``tags["candidates"]``).
Each block has as many images of one binding as of the other, so knowing the shapes or the
colours of an image says nothing about its class: a shape-only or colour-only oracle scores
chance (0.5).

Two designs (the dataset's ``composition`` param):

- ``legacy`` (the default, bit for bit the first design): the objects are those of ordinary
  two-object scenes (a left/right or top/bottom position pair with outward jitter, sizes drawn
  independently, order random). Shapes cover different pixel areas at one size (star 1.32,
  triangle 1.61, circle 3.14 at radius 1), so "the block's colour that covers more pixels" times
  "the block's shape that is larger on average" predicts the binding without binding anything:
  0.77 at seed 0 (990 items; alpha mass), and a linear probe on raw pixels scores 0.61.
- ``balanced``: no binding-free cue is informative. Shapes are drawn with equal-area patches
  (``render.equal_area_patches``): every shape of a size has the same multiset of alpha values,
  hence the same pixel mass, centred on its centroid. Both objects of an image share one size,
  with exactly as many images of each size in each block and binding. Each object's centre is
  uniform over the pixels that keep every shape of that size inside the image, the two redrawn
  until they are more than twice the largest shape's pixel reach apart (so they never touch);
  sizes, centres, colour jitter, background and which shape is pasted first are drawn without
  looking at the shapes or colours. So an image's multiset of pixel values is the same under
  either binding (swap the two colours, with their jitter: the sorted pixels do not change), and
  where a colour lies says nothing about which shape carries it: the rules above score exactly
  0.5 and the raw-pixel probe 0.47-0.51 at world seeds 0-3 (``benchmarks/composition_shortcuts.py``).
  The objects are smaller than in training (26 and 54 square pixels at 32 x 32: a small star's and
  a small square's area) so that two fit apart anywhere in the image.

``tags["binding_free_features"]`` ((N, F) float64, ``binding_free_features``) is what a
classifier may see without binding: per colour of the world its visible pixel mass, per shape its
visible pixel mass, per size the number of objects of that size, and which shapes and colours are
present; never which colour goes with which shape. The linear probe reports the same probe on them
as the reference row "binding-free" (about 0.7 on legacy items, at most chance on balanced ones).
"""

from __future__ import annotations

import numpy as np

from harness.api import ClassificationSet
from harness.builtin.datasets.shapes.attributes import (
    BACKGROUNDS,
    COLOURS,
    POSITION_CENTRES,
    POSITIONS,
    SHAPES,
    SIZES,
)
from harness.builtin.datasets.shapes.render import equal_area_patches, render
from harness.builtin.datasets.shapes.world import (
    BACKGROUND_JITTER,
    COLOUR_JITTER,
    POSITION_INDEX,
    Scenes,
    World,
    sample_scenes,
)

COMPOSITION_TEMPLATES = ["{c}", "a {c}", "a picture of a {c}", "an image of a {c}"]
DESIGNS = ("legacy", "balanced")
RENDER_PIXELS = 1 << 23  # pixels of the images rendered at once with their alpha (2 float32 per pixel, padded)


def blocks_of(world: World) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The pairs of held-out combinations with different shapes and different colours."""
    held = sorted(world.unseen)
    return [(p, q) for i, p in enumerate(held) for q in held[i + 1:] if p[0] != q[0] and p[1] != q[1]]


def item_scenes(world: World, rng: np.random.Generator, eval_size: int, image_size: int,
                design: str = "legacy") -> tuple[Scenes, np.ndarray]:
    """The items' scene table and labels (``2 * block + binding``), drawn from ``rng``: what
    ``composition_set`` renders (the world must have a block)."""
    if design not in DESIGNS:
        raise ValueError(f"composition must be one of {', '.join(DESIGNS)}, got {design!r}")
    blocks = blocks_of(world)
    per_class = max(1, eval_size // (2 * len(blocks)))
    if design == "legacy":
        return _legacy_scenes(world, rng, blocks, per_class, image_size)
    return _balanced_scenes(rng, blocks, per_class, image_size)


def composition_set(world: World, rng: np.random.Generator, eval_size: int, image_size: int,
                    design: str = "legacy") -> ClassificationSet | None:
    """The composition set (module docstring), or None when the world has no block."""
    blocks = blocks_of(world)
    if not blocks:
        return None
    scenes, labels = item_scenes(world, rng, eval_size, image_size, design)
    classnames = []
    for (a, x), (b, y) in blocks:
        classnames += [f"{COLOURS[x].name} {SHAPES[a].name} and {COLOURS[y].name} {SHAPES[b].name}",
                       f"{COLOURS[y].name} {SHAPES[a].name} and {COLOURS[x].name} {SHAPES[b].name}"]
    block = labels // 2
    images, features = _render_with_features(scenes, image_size, world, equal_area=design == "balanced")
    tags = {"attribute": "composition", "candidates": np.stack([2 * block, 2 * block + 1], axis=1),
            # the block fixes the pair of shapes and the pair of colours
            "attributes": {"shapes": block.copy(), "colours": block.copy()},
            "oracle_features": [["shapes"], ["colours"]], "oracle_accuracy": 0.5,  # balanced: exactly 0.5
            "binding_free_features": features}
    return ClassificationSet("composition", images, labels, classnames, list(COMPOSITION_TEMPLATES), tags=tags)


def _legacy_scenes(world, rng, blocks, per_class, image_size) -> tuple[Scenes, np.ndarray]:
    """The first design: ordinary two-object scenes whose objects are replaced by a binding's (order random)."""
    base = sample_scenes(rng, 2 * per_class * len(blocks), world.seen, image_size, 1.0)
    labels = []
    for b, ((a, x), (bb, y)) in enumerate(blocks):
        for binding in (0, 1):
            objects = [(a, x), (bb, y)] if binding == 0 else [(a, y), (bb, x)]
            for _ in range(per_class):
                i = len(labels)
                order = (0, 1) if rng.random() < 0.5 else (1, 0)
                for slot, k in enumerate(order):
                    base.shape[i, slot], base.colour[i, slot] = objects[k]
                labels.append(2 * b + binding)
    return base, np.array(labels)


def reach(image_size: int) -> tuple[list[int], list[float]]:
    """Per size of the equal-area patches: the half-width R that holds every shape's pixels, and
    the largest distance from the patch centre to a pixel any shape covers."""
    half, far = [], []
    for patches in equal_area_patches(image_size):
        R = patches.shape[-1] // 2
        rows, cols = np.nonzero(patches.any(axis=0))
        half.append(R)
        far.append(float(np.sqrt((rows - R) ** 2 + (cols - R) ** 2).max()))
    return half, far


def _balanced_scenes(rng, blocks, per_class, image_size) -> tuple[Scenes, np.ndarray]:
    """The balanced design (module docstring): ``per_class`` images of each binding of each block."""
    n = 2 * per_class * len(blocks)
    labels = np.repeat(np.arange(2 * len(blocks)), per_class)
    # sizes: the same list (half small, half large, the odd one drawn) for every class, each shuffled
    sizes = np.resize(np.arange(len(SIZES)), per_class)
    if per_class % len(SIZES):
        sizes[-1] = rng.integers(len(SIZES))
    size = np.concatenate([rng.permutation(sizes) for _ in range(2 * len(blocks))])
    centres = _centres(rng, size, image_size)
    first = rng.random(n) < 0.5  # which shape of the block goes into slot 0 (slot 1 is pasted over it)
    shape = np.empty((n, 2), dtype=np.int64)
    colour = np.empty((n, 2), dtype=np.int64)
    for b, ((a, x), (bb, y)) in enumerate(blocks):
        for binding in (0, 1):
            rows = labels == 2 * b + binding
            objects = np.array([[a, x], [bb, y]] if binding == 0 else [[a, y], [bb, x]])
            slot0 = np.where(first[rows, None], objects[0], objects[1])
            slot1 = np.where(first[rows, None], objects[1], objects[0])
            shape[rows, 0], colour[rows, 0] = slot0[:, 0], slot0[:, 1]
            shape[rows, 1], colour[rows, 1] = slot1[:, 0], slot1[:, 1]
    centre = POSITION_INDEX["centre"]
    base = np.floor(np.array(POSITION_CENTRES[POSITIONS[centre].name]) * image_size).astype(np.int64)
    scenes = Scenes(
        n_objects=np.full(n, 2), shape=shape, colour=colour, size=np.repeat(size[:, None], 2, axis=1),
        position=np.full((n, 2), centre), offset=centres - base,
        colour_jitter=rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=(n, 2, 3)),
        background=rng.integers(0, len(BACKGROUNDS), size=n),
        background_jitter=rng.integers(-BACKGROUND_JITTER, BACKGROUND_JITTER + 1, size=(n, 3)))
    return scenes, labels


def _centres(rng: np.random.Generator, size: np.ndarray, image_size: int) -> np.ndarray:
    """(N, 2, 2) pixel (x, y) of two objects of ``size`` per image: each uniform over the pixels at
    least R from every border, redrawn together until they are more than twice the patches' reach
    apart (so their pixels never meet; ``reach``). Nothing here depends on the shapes."""
    half, far = reach(image_size)
    lo = np.array(half)[size]
    span = image_size - 2 * lo  # centres in [R, image_size - 1 - R]
    min_d2 = (2 * np.array(far)) ** 2
    out = np.zeros((len(size), 2, 2), dtype=np.int64)
    todo = np.arange(len(size))
    while len(todo):
        draw = lo[todo, None, None] + np.floor(rng.random((len(todo), 2, 2)) * span[todo, None, None]).astype(np.int64)
        d2 = ((draw[:, 0] - draw[:, 1]) ** 2).sum(axis=1)
        ok = d2 > min_d2[size[todo]]
        out[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return out


def _render_with_features(scenes: Scenes, image_size: int, world: World, equal_area: bool
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The images and their binding-free features, rendered a chunk at a time."""
    images = np.empty((len(scenes), image_size, image_size, 3), dtype=np.uint8)
    features = np.empty((len(scenes), feature_count(world)), dtype=np.float64)
    step = max(1, RENDER_PIXELS // (image_size * image_size))
    for start in range(0, len(scenes), step):
        rows = np.arange(start, min(start + step, len(scenes)))
        part = scenes.take(rows)
        images[rows], alpha = render(part, image_size, return_alpha=True, equal_area=equal_area)
        features[rows] = binding_free_features(part, visible_mass(alpha), world)
    return images, features


def visible_mass(alpha: np.ndarray) -> np.ndarray:
    """(N, 2) visible pixel mass of each object from ``render``'s (N, 2, H, W) alpha: object 1 is
    pasted over object 0, so object 0 shows ``alpha0 * (1 - alpha1)``."""
    a = alpha.astype(np.float64)
    return np.stack([(a[:, 0] * (1.0 - a[:, 1])).sum(axis=(1, 2)), a[:, 1].sum(axis=(1, 2))], axis=1)


def feature_count(world: World) -> int:
    return 2 * world.num_colours + 2 * world.num_shapes + len(SIZES)


def binding_free_features(scenes: Scenes, mass: np.ndarray, world: World) -> np.ndarray:
    """(N, F) per image: the visible pixel mass of each colour of the world (C), of each shape (S),
    the number of objects of each size, and whether each shape (S) and each colour (C) is present.
    Each column sums over objects, so nothing says which colour goes with which shape."""
    n, C, S = len(scenes), world.num_colours, world.num_shapes
    out = np.zeros((n, feature_count(world)))
    rows = np.arange(n)
    for k in range(2):
        here = scenes.n_objects > k
        r, m = rows[here], mass[here, k]
        np.add.at(out, (r, scenes.colour[here, k]), m)
        np.add.at(out, (r, C + scenes.shape[here, k]), m)
        np.add.at(out, (r, C + S + scenes.size[here, k]), 1.0)
        out[r, C + S + len(SIZES) + scenes.shape[here, k]] = 1.0
        out[r, C + S + len(SIZES) + S + scenes.colour[here, k]] = 1.0
    return out
