"""Scenes of the shapes world: which objects an image holds, sampled from a seed.

A ``World`` fixes the vocabulary in use (the first ``num_shapes`` shapes and ``num_colours``
colours) and the (shape, colour) combinations held out of training (the compositional split).
A ``Scenes`` table holds one row per image: up to two objects, each with shape, colour, size,
position, a pixel offset and a colour jitter, plus a background. Rendering (``render.py``) and
captions (``grammar.py``) are pure functions of a table, so an image is fixed by its row.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from harness.builtin.datasets.shapes.attributes import (
    BACKGROUNDS,
    COLOURS,
    PAIRED_POSITIONS,
    POSITIONS,
    SHAPES,
    SIZES,
)

COLOUR_JITTER = 14  # +- per RGB channel of an object's colour
BACKGROUND_JITTER = 8  # +- per RGB channel of the background
OFFSET_JITTER = 0.06  # +- fraction of the image side added to an object's position centre

POSITION_INDEX = {p.name: i for i, p in enumerate(POSITIONS)}


@dataclass(frozen=True)
class World:
    """The vocabulary in use and the held-out (shape, colour) combinations."""

    num_shapes: int
    num_colours: int
    heldout: frozenset[tuple[int, int]]

    @property
    def shapes(self) -> list[str]:
        return [v.name for v in SHAPES[: self.num_shapes]]

    @property
    def colours(self) -> list[str]:
        return [v.name for v in COLOURS[: self.num_colours]]

    @property
    def combos(self) -> list[tuple[int, int]]:
        """Every (shape, colour) pair, shape-major; ``shape * num_colours + colour`` is its label."""
        return [(s, c) for s in range(self.num_shapes) for c in range(self.num_colours)]

    @property
    def seen(self) -> list[tuple[int, int]]:
        return [sc for sc in self.combos if sc not in self.heldout]

    @property
    def unseen(self) -> list[tuple[int, int]]:
        return [sc for sc in self.combos if sc in self.heldout]

    def combo_name(self, shape: int, colour: int) -> str:
        return f"{COLOURS[colour].name} {SHAPES[shape].name}"


def check_world(num_shapes: int, num_colours: int, heldout_combos: float) -> None:
    """Raise ``ValueError`` naming the first of the world's params that is out of range."""
    if not 2 <= num_shapes <= len(SHAPES):
        raise ValueError(f"num_shapes must be in [2, {len(SHAPES)}], got {num_shapes}")
    if not 2 <= num_colours <= len(COLOURS):
        raise ValueError(f"num_colours must be in [2, {len(COLOURS)}], got {num_colours}")
    if not 0.0 <= heldout_combos <= 0.5:
        raise ValueError(f"heldout_combos must be in [0, 0.5], got {heldout_combos}")


def make_world(seed: int, num_shapes: int, num_colours: int, heldout_combos: float) -> World:
    """Pick ``round(heldout_combos * S * C)`` held-out combinations (at least one when > 0).

    They are taken along the diagonals of a seeded permutation of the shape x colour grid, so
    held-out combinations spread over shapes and colours and, with ``heldout_combos <= 0.5``,
    every shape and every colour still occurs in training.
    """
    check_world(num_shapes, num_colours, heldout_combos)
    total = num_shapes * num_colours
    n_held = 0 if heldout_combos == 0 else max(1, round(heldout_combos * total))
    rng = np.random.default_rng([seed, 0])
    shape_perm = rng.permutation(num_shapes)
    colour_perm = rng.permutation(num_colours)
    if num_shapes <= num_colours:
        order = [(i, (i + d) % num_colours) for d in range(num_colours) for i in range(num_shapes)]
    else:
        order = [((j + d) % num_shapes, j) for d in range(num_shapes) for j in range(num_colours)]
    held = {(int(shape_perm[s]), int(colour_perm[c])) for s, c in order[:n_held]}
    return World(num_shapes, num_colours, frozenset(held))


@dataclass
class Scenes:
    """One row per image. Object slot 1 is unused (-1) in single-object images.

    ``shape``, ``colour``, ``size``, ``position``: (N, 2) int indices into the vocabulary;
    ``offset``: (N, 2, 2) pixel offsets (dx, dy) of each object from its position centre;
    ``colour_jitter``: (N, 2, 3) added to the object's RGB; ``background``: (N,) index;
    ``background_jitter``: (N, 3) added to the background RGB.
    """

    n_objects: np.ndarray
    shape: np.ndarray
    colour: np.ndarray
    size: np.ndarray
    position: np.ndarray
    offset: np.ndarray
    colour_jitter: np.ndarray
    background: np.ndarray
    background_jitter: np.ndarray

    def __len__(self) -> int:
        return len(self.n_objects)

    def take(self, indices: np.ndarray) -> "Scenes":
        return Scenes(**{f.name: getattr(self, f.name)[indices] for f in fields(self)})

    def attributes(self, i: int) -> dict[str, Any]:
        """Image ``i`` as words: ``{"objects": [{shape, colour, size, position}, ...], "background": ...}``."""
        objects = [
            {
                "shape": SHAPES[self.shape[i, k]].name,
                "colour": COLOURS[self.colour[i, k]].name,
                "size": SIZES[self.size[i, k]].name,
                "position": POSITIONS[self.position[i, k]].name,
            }
            for k in range(int(self.n_objects[i]))
        ]
        return {"objects": objects, "background": BACKGROUNDS[self.background[i]].name}


def sample_scenes(
    rng: np.random.Generator,
    n: int,
    combos: list[tuple[int, int]],
    image_size: int,
    two_object_prob: float,
) -> Scenes:
    """``n`` scenes whose objects' (shape, colour) are drawn uniformly from ``combos``.

    One-object images put their object at any of the five positions; two-object images use a
    position pair (left/right or top/bottom) and jitter each object away from the other only,
    so the two barely overlap.
    """
    if not combos:
        raise ValueError("no (shape, colour) combinations to sample from")
    combo_arr = np.asarray(combos, dtype=np.int64)
    two = rng.random(n) < two_object_prob
    n_objects = np.where(two, 2, 1)
    pick = combo_arr[rng.integers(0, len(combo_arr), size=(n, 2))]  # (n, 2, 2)
    shape, colour = pick[..., 0], pick[..., 1]
    size = rng.integers(0, len(SIZES), size=(n, 2))
    position = np.empty((n, 2), dtype=np.int64)
    position[:, 0] = rng.integers(0, len(POSITIONS), size=n)
    pairs = np.array([[POSITION_INDEX[a], POSITION_INDEX[b]] for a, b in PAIRED_POSITIONS])
    pair = pairs[rng.integers(0, len(pairs), size=n)]
    swap = rng.random(n) < 0.5
    pair = np.where(swap[:, None], pair[:, ::-1], pair)
    position[two] = pair[two]
    position[~two, 1] = -1

    j = max(1, int(round(OFFSET_JITTER * image_size)))
    offset = rng.integers(-j, j + 1, size=(n, 2, 2))
    # two objects: along the axis that separates them, jitter only outward (left further left, ...)
    outward = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}
    for name, (axis, sign) in outward.items():
        mask = two[:, None] & (position == POSITION_INDEX[name])
        offset[..., axis] = np.where(mask, sign * np.abs(offset[..., axis]), offset[..., axis])

    for arr in (shape, colour, size):
        arr[~two, 1] = -1
    offset[~two, 1] = 0
    colour_jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=(n, 2, 3))
    background = rng.integers(0, len(BACKGROUNDS), size=n)
    background_jitter = rng.integers(-BACKGROUND_JITTER, BACKGROUND_JITTER + 1, size=(n, 3))
    return Scenes(n_objects, shape, colour, size, position, offset, colour_jitter, background, background_jitter)
