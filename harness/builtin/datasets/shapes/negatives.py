"""Hard-negative captions of the shapes world: the same scene with one attribute changed.

For a scene and the draws of its positive caption, a negative is the caption of an *edited* scene,
written with the same draws (same template, object order and synonym slots), so it differs from the
positive only in the edited words (a minimal edit). The edits of a scene:

- ``shape``, ``colour``, ``size``, ``position``: one object's value replaced by another value of
  the world (colours and shapes among the world's ``num_colours`` / ``num_shapes``; a two-object
  scene's position never becomes the other object's);
- ``exchange`` (two-object scenes): the two objects swap their shapes, colours or sizes, where they
  differ (NegCLIP's attribute swap, Yuksekgonul et al. 2023).

Each negative first picks a kind uniformly among the kinds the scene has edits of, then an edit of
that kind uniformly; the K negatives of a scene are distinct edits while the scene has K or more
(the default world has at least 17). Every edited scene differs from the scene, and so does its
caption (the attribute vocabularies are disjoint): a negative never equals the positive.
"""

from __future__ import annotations

import numpy as np

from harness.builtin.datasets.shapes.attributes import POSITIONS, SIZES
from harness.builtin.datasets.shapes.grammar import Obj, caption_of, canonical_order
from harness.builtin.datasets.shapes.world import World

KINDS = ("shape", "colour", "size", "position", "exchange")
_FIELD = {"shape": 0, "colour": 1, "size": 2, "position": 3}


def edits(objects: list[Obj], world: World) -> dict[str, list[list[Obj]]]:
    """Every minimal edit of a scene, by kind: each edit is the edited scene's objects (slot order)."""
    counts = {"shape": world.num_shapes, "colour": world.num_colours, "size": len(SIZES), "position": len(POSITIONS)}
    out: dict[str, list[list[Obj]]] = {}
    for kind, field in _FIELD.items():
        options = []
        for k, obj in enumerate(objects):
            taken = {obj[field]}
            if kind == "position":
                taken |= {o[field] for o in objects}
            for value in range(counts[kind]):
                if value not in taken:
                    edited = list(objects)
                    edited[k] = obj[:field] + (value,) + obj[field + 1:]
                    options.append(edited)
        if options:
            out[kind] = options
    if len(objects) == 2:
        a, b = objects
        swaps = []
        for field in (0, 1, 2):
            if a[field] != b[field]:
                swaps.append([a[:field] + (b[field],) + a[field + 1:], b[:field] + (a[field],) + b[field + 1:]])
        if swaps:
            out["exchange"] = swaps
    return out


def choose_edits(objects: list[Obj], world: World, k: int, draws: np.ndarray) -> list[list[Obj]]:
    """``k`` edits of a scene chosen with ``draws`` (2k integers): a kind, then an edit of it.

    Edits are not repeated until every edit has been used once.
    """
    remaining = edits(objects, world)
    everything = {kind: list(v) for kind, v in remaining.items()}
    chosen = []
    for j in range(k):
        if not remaining:
            remaining = {kind: list(v) for kind, v in everything.items()}
        kinds = [kind for kind in KINDS if kind in remaining]
        kind = kinds[int(draws[2 * j]) % len(kinds)]
        options = remaining[kind]
        chosen.append(options.pop(int(draws[2 * j + 1]) % len(options)))
        if not options:
            del remaining[kind]
    return chosen


def negative_captions(objects: list[Obj], background: int, caption_draws: np.ndarray, world: World, k: int,
                      edit_draws: np.ndarray, style: str) -> list[str]:
    """``k`` hard-negative captions of one scene, written with its positive caption's draws."""
    order = canonical_order(objects)  # canonical style: keep the positive's object order
    out = []
    for edited in choose_edits(objects, world, k, edit_draws):
        text = caption_of(edited, background, caption_draws, style, order)
        out.append(text)
    return out
