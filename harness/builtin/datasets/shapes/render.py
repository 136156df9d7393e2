"""Vectorised rendering of scene tables into uint8 images.

Each (shape, size) has an anti-aliased alpha patch, computed once per image size by 4x4
supersampling the shape's inside test in coordinates where the object's radius is 1. An image is
its background colour with each object's patch alpha-blended on top:
``pixel = (1 - alpha) * pixel + alpha * colour``. Objects are pasted group by group (same shape
and size) through a strided window view of a canvas padded by the patch radius, so a batch costs
a few numpy operations per group, not per image.

``render(..., equal_area=True)`` uses other patches (``equal_area_patches``, for the balanced
composition probe): every shape of a size has the same multiset of alpha values (so the same pixel
mass), each centred on its centroid.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided

from harness.builtin.datasets.shapes.attributes import (
    BACKGROUNDS,
    COLOURS,
    POSITION_CENTRES,
    POSITIONS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
)
from harness.builtin.datasets.shapes.world import Scenes

SUPERSAMPLE = 4
# Equal-area patches: per size, the side of a square of the target area, as a fraction of the image
# side (at 32 pixels: 26 and 54 square pixels, the areas of
# a small star and a small square of the training images). Small enough that two objects of a size fit side by
# side, diagonally or one above the other, at random, without touching each other or the border.
EQUAL_AREA_SIDE: dict[str, float] = {"small": 0.16, "large": 0.23}


def _polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd rule: is each point (u, v) inside the closed polygon ``verts`` (K, 2)?"""
    inside = np.zeros(u.shape, dtype=bool)
    x0, y0 = verts[-1]
    for x1, y1 in verts:
        crosses = (y1 > v) != (y0 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (v - y1) * (x0 - x1) / (y0 - y1)
        inside ^= crosses & (u < x_at)
        x0, y0 = x1, y1
    return inside


def _regular(k: int, radius: float, phase: float = -math.pi / 2) -> np.ndarray:
    angles = phase + 2 * math.pi * np.arange(k) / k
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _regular(5, 1.0), _regular(5, 0.45, -math.pi / 2 + math.pi / 5)
    return np.stack([outer, inner], axis=1).reshape(10, 2)


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The inside test of ``shape`` at points (u, v); radius 1, v grows downwards (image rows)."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        return _polygon(u, v, np.array([[0.0, -1.0], [0.95, 0.7], [-0.95, 0.7]]))
    if shape == "star":
        return _polygon(u, v, _star())
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.5**2)
    if shape == "hexagon":
        return _polygon(u, v, _regular(6, 1.0, 0.0))
    if shape == "heart":
        x, y = 1.15 * u, -1.15 * v + 0.2
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    raise ValueError(f"unknown shape {shape!r}")


def patch_radius(image_size: int, size: str = "large") -> int:
    """Half-width (pixels) of the alpha patch of objects of ``size``: their radius plus a 1-pixel margin."""
    return int(math.ceil(SIZE_RADIUS[size] * image_size)) + 1


@lru_cache(maxsize=32)
def alpha_patches(image_size: int) -> tuple[np.ndarray, ...]:
    """Per size, a (num_shapes, P, P) float32 alpha in [0, 1] with P = 2 * patch_radius + 1.

    The patch centre is the centre of pixel (R, R); an object's position is a pixel, so its
    centre lies at that pixel's centre.
    """
    sub = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    out = []
    for size in SIZES:
        R = patch_radius(image_size, size.name)
        P = 2 * R + 1
        coords = (np.arange(P)[:, None] - R + sub[None, :]).reshape(-1) / (SIZE_RADIUS[size.name] * image_size)
        v, u = np.meshgrid(coords, coords, indexing="ij")
        patches = np.stack([inside(shape.name, u, v) for shape in SHAPES]).astype(np.float32)
        patches = patches.reshape(len(SHAPES), P, SUPERSAMPLE, P, SUPERSAMPLE).mean(axis=(2, 4))
        patches.setflags(write=False)
        out.append(patches)
    return tuple(out)


def _coverage(shape: str, centre: tuple[float, float], scale: float, R: int) -> np.ndarray:
    """(P, P) fraction of each pixel ``shape`` covers, drawn ``scale`` pixels per unit radius with its
    (unit-radius) point ``centre`` at the centre of pixel (R, R), ss x ss supersampled (ss = 16, or
    less for large patches)."""
    P = 2 * R + 1
    ss = next(k for k in (16, 8, 4, 2, 1) if k * P <= 1024 or k == 1)
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    coords = (np.arange(P)[:, None] - R + sub[None, :]).reshape(-1) / scale
    v, u = np.meshgrid(coords + centre[1], coords + centre[0], indexing="ij")
    return inside(shape, u, v).reshape(P, ss, P, ss).mean(axis=(1, 3))


@lru_cache(maxsize=1)
def _unit_geometry() -> tuple[tuple[float, tuple[float, float]], ...]:
    """Per shape, (area, centroid (u, v)) at radius 1, on a 1200 x 1200 grid over [-1.5, 1.5]^2."""
    g = (np.arange(1200) + 0.5) / 400 - 1.5
    v, u = np.meshgrid(g, g, indexing="ij")
    out = []
    for shape in SHAPES:
        m = inside(shape.name, u, v)
        out.append((float(m.sum()) / 400**2, (float(u[m].mean()), float(v[m].mean()))))
    return tuple(out)


def _blur(a: np.ndarray, passes: int = 3) -> np.ndarray:
    """``a`` averaged over 3 x 3 neighbourhoods ``passes`` times (zero outside): a pixel's depth
    inside (or nearness to) a shape, to order pixels of equal coverage."""
    for _ in range(passes):
        p = np.pad(a, 1)
        a = sum(p[i:i + a.shape[0], j:j + a.shape[1]] for i in range(3) for j in range(3)) / 9.0
    return a


def _shared_weights(coverages: np.ndarray, target: int) -> np.ndarray:
    """(K,) int weights in 0..256, descending, summing to exactly ``target``: the mean over shapes
    of their coverages sorted in descending order, scaled to the target and rounded by largest
    remainders."""
    ref = -np.sort(-coverages.reshape(len(coverages), -1), axis=1).mean(axis=0) * 256
    lo, hi = 0.0, 2.0 * target / ref.sum()
    for _ in range(100):  # the scale that brings the sum to the target, no weight above 256
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.minimum(256.0, mid * ref).sum() <= target else (lo, mid)
    x = np.minimum(256.0, lo * ref)
    w = np.floor(x).astype(np.int64)
    order = np.argsort(-(x - w), kind="stable")
    w[order[:target - int(w.sum())]] += 1
    if int(w.sum()) != target or w.max() > 256:
        raise AssertionError(f"shared weights sum to {int(w.sum())}, not {target}")
    return -np.sort(-w)


SUBPIXEL = (0.0, 0.25, 0.5)  # the offsets (pixels, per axis) a shape's centroid may take from the patch centre


def _natural_coverages(side: float, big: int) -> np.ndarray:
    """(num_shapes, P, P) coverage of every shape at the area ``side ** 2``, each at the sub-pixel
    offset of its centroid (``SUBPIXEL`` per axis) whose sorted coverages are nearest (L2) to the
    shapes' mean sorted coverages (chosen twice over), so dealing shared values moves little mass."""
    geometry = _unit_geometry()
    scales = [side / math.sqrt(area) for area, _ in geometry]

    def cover(k: int, d: tuple[float, float]) -> np.ndarray:
        (cu, cv), s = geometry[k][1], scales[k]
        return _coverage(SHAPES[k].name, (cu - d[0] / s, cv - d[1] / s), s, big)

    def ranked(c: np.ndarray) -> np.ndarray:
        return -np.sort(-c.reshape(-1))

    offsets = [(x, y) for x in SUBPIXEL for y in SUBPIXEL]
    choice = [(0.0, 0.0)] * len(SHAPES)
    for _ in range(2):
        ref = np.mean([ranked(cover(k, choice[k])) for k in range(len(SHAPES))], axis=0)
        choice = [min(offsets, key=lambda d: float(np.sum((ranked(cover(k, d)) - ref) ** 2)))
                  for k in range(len(SHAPES))]
    return np.stack([cover(k, choice[k]) for k in range(len(SHAPES))])


@lru_cache(maxsize=32)
def equal_area_patches(image_size: int) -> tuple[np.ndarray, ...]:
    """Per size, a (num_shapes, P, P) float32 alpha in multiples of 1/256 (so ``render``'s integer
    weights are exactly these) in which every shape has the same multiset of alpha values, so the
    same pixel mass ``round(256 * T) / 256`` with T = ``(EQUAL_AREA_SIDE[size] * image_size) ** 2``
    square pixels, and the same number of pixels at each level of coverage.

    Each shape is drawn at the radius that gives it the area T (its area at radius 1 measured on a
    fine grid), its centroid within half a pixel of the patch centre (``_natural_coverages``; a
    triangle's mass is not shifted down a third of its radius), 16 x 16 supersampled. The shared
    values (``_shared_weights``: the shapes' sorted coverages averaged) are then dealt to each
    shape's pixels in the order of its own coverage (ties: the deeper inside, or the nearer, first),
    which moves 2-6% of a shape's mass at 32 pixels. So an image's histogram of pixel colours does
    not depend on which shape carries which colour; only where the values lie tells shapes apart.
    P = 2 R + 1 with R the smallest half-width that holds every shape's pixels: a centre at least R
    from each border keeps every shape inside the image.
    """
    out = []
    for size in SIZES:
        side = EQUAL_AREA_SIDE[size.name] * image_size
        target = int(round(256 * side * side))
        big = int(math.ceil(1.2 * side)) + 3  # a star of area T reaches 0.87 sqrt(T) from its centre
        cover = _natural_coverages(side, big)
        shared = _shared_weights(cover, target)
        stack = np.zeros(cover.shape, dtype=np.int64)
        for k, c in enumerate(cover):
            order = np.lexsort((-_blur(c).reshape(-1), -c.reshape(-1)))  # coverage first, then depth
            stack[k].reshape(-1)[order[:len(shared)]] = shared
        rows, cols = np.nonzero(stack.any(axis=0))
        R = int(max(np.abs(rows - big).max(), np.abs(cols - big).max()))
        stack = (stack[:, big - R:big + R + 1, big - R:big + R + 1] / 256.0).astype(np.float32)
        stack.setflags(write=False)
        out.append(stack)
    return tuple(out)


def object_centres(scenes: Scenes, image_size: int) -> np.ndarray:
    """(N, 2, 2) integer pixel (x, y) of each object's centre (slot 1 of one-object images: 0)."""
    table = np.array([POSITION_CENTRES[p.name] for p in POSITIONS])
    base = np.floor(table * image_size).astype(np.int64)  # (num_positions, 2)
    centres = base[np.maximum(scenes.position, 0)] + scenes.offset
    return np.clip(centres, 0, image_size - 1)


def _windows(canvas: np.ndarray, P: int) -> np.ndarray:
    """A writeable (N, Y, X, P, P, 3) view: ``[i, y, x]`` is the P x P window at row y, column x of image i."""
    n, side, _, _ = canvas.shape
    s0, s1, s2, s3 = canvas.strides
    return as_strided(canvas, (n, side - P + 1, side - P + 1, P, P, 3), (s0, s1, s2, s1, s2, s3))


def render(scenes: Scenes, image_size: int, return_alpha: bool = False, equal_area: bool = False):
    """Render ``scenes`` as a uint8 array (N, image_size, image_size, 3).

    Blending is integer arithmetic with alpha quantised to 1/256, so results are exact and
    platform-independent. With ``return_alpha`` also returns (N, 2, H, W) float32: each
    object's alpha as pasted (slot 1 of one-object images is all zero); ``alpha == 1`` marks
    pixels the object covers fully. Object 1 is pasted over object 0. ``equal_area``: the patches of
    ``equal_area_patches`` (each shape of a size covers the same pixel mass), not ``alpha_patches``.
    """
    n = len(scenes)
    all_patches = equal_area_patches(image_size) if equal_area else alpha_patches(image_size)
    pad = max(patch_radius(image_size), *(p.shape[-1] // 2 for p in all_patches))
    side = image_size + 2 * pad
    bg = np.array([b.rgb for b in BACKGROUNDS], dtype=np.int64)[scenes.background] + scenes.background_jitter
    canvas = np.empty((n, side, side, 3), dtype=np.uint8)
    row = np.tile(np.clip(bg, 0, 255).astype(np.uint8), (1, side))  # (N, side * 3): one canvas row
    canvas.reshape(n, side, side * 3)[:] = row[:, None, :]  # (fast: broadcasting rows, not pixels)
    palette = np.array([c.rgb for c in COLOURS], dtype=np.int64)
    colours = np.clip(palette[np.maximum(scenes.colour, 0)] + scenes.colour_jitter, 0, 255).astype(np.uint16)
    centres = object_centres(scenes, image_size)
    alphas = np.zeros((n, 2, side, side), dtype=np.float32) if return_alpha else None
    for k, patches in enumerate(all_patches):
        P = patches.shape[-1]
        R = P // 2
        windows = _windows(canvas, P)
        weights = np.rint(patches * 256).astype(np.uint16)[..., None]  # (num_shapes, P, P, 1)
        for slot in range(2):
            chosen = (scenes.n_objects > slot) & (scenes.size[:, slot] == k)
            for shape in np.unique(scenes.shape[chosen, slot]):
                idx = np.flatnonzero(chosen & (scenes.shape[:, slot] == shape))
                y = centres[idx, slot, 1] + pad - R  # window top-left on the padded canvas
                x = centres[idx, slot, 0] + pad - R
                w = weights[shape]
                under = windows[idx, y, x].astype(np.uint16)
                windows[idx, y, x] = ((under * (256 - w) + w * colours[idx, slot][:, None, None, :] + 128) >> 8)
                if alphas is not None:
                    rows = (y[:, None] + np.arange(P))[:, :, None]
                    cols = (x[:, None] + np.arange(P))[:, None, :]
                    alphas[idx[:, None, None], slot, rows, cols] = w[..., 0] / 256.0
    images = np.ascontiguousarray(canvas[:, pad:pad + image_size, pad:pad + image_size])
    if not return_alpha:
        return images
    return images, np.ascontiguousarray(alphas[:, :, pad:pad + image_size, pad:pad + image_size])
