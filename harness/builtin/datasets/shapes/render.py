"""Vectorised rendering of scene tables into uint8 images.

Each (shape, size) has an anti-aliased alpha patch, computed once per image size by 4x4
supersampling the shape's inside test in coordinates where the object's radius is 1. An image is
its background colour with each object's patch alpha-blended on top:
``pixel = (1 - alpha) * pixel + alpha * colour``. Objects are pasted group by group (same shape
and size) through a strided window view of a canvas padded by the patch radius, so a batch costs
a few numpy operations per group, not per image.
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


def render(scenes: Scenes, image_size: int, return_alpha: bool = False):
    """Render ``scenes`` as a uint8 array (N, image_size, image_size, 3).

    Blending is integer arithmetic with alpha quantised to 1/256, so results are exact and
    platform-independent. With ``return_alpha`` also returns (N, 2, H, W) float32: each
    object's alpha as pasted (slot 1 of one-object images is all zero); ``alpha == 1`` marks
    pixels the object covers fully. Object 1 is pasted over object 0.
    """
    n = len(scenes)
    pad = patch_radius(image_size)
    side = image_size + 2 * pad
    bg = np.array([b.rgb for b in BACKGROUNDS], dtype=np.int64)[scenes.background] + scenes.background_jitter
    canvas = np.empty((n, side, side, 3), dtype=np.uint8)
    row = np.tile(np.clip(bg, 0, 255).astype(np.uint8), (1, side))  # (N, side * 3): one canvas row
    canvas.reshape(n, side, side * 3)[:] = row[:, None, :]  # (fast: broadcasting rows, not pixels)
    palette = np.array([c.rgb for c in COLOURS], dtype=np.int64)
    colours = np.clip(palette[np.maximum(scenes.colour, 0)] + scenes.colour_jitter, 0, 255).astype(np.uint16)
    centres = object_centres(scenes, image_size)
    alphas = np.zeros((n, 2, side, side), dtype=np.float32) if return_alpha else None
    for k, (size, patches) in enumerate(zip(SIZES, alpha_patches(image_size))):
        R = patch_radius(image_size, size.name)
        P = 2 * R + 1
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
