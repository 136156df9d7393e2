"""The ``digits`` dataset plugin: scikit-learn's 1,797 real handwritten 8x8 digits, captioned.

The images (UCI optical digits, ink 0..16) are scaled to 0..255, upscaled bilinearly to
``image_size`` and repeated over RGB: white ink on black. A seeded stratified split holds out
``eval_fraction`` of every digit. Captions come from templates ("a handwritten seven", "the
digit 7", ...); training batches draw one per image with the caller's rng.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from harness.api import ClassificationSet, EvalSet, RetrievalSet

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# {w}: the digit as a word, {d}: as a numeral
CAPTION_TEMPLATES = [
    "a handwritten {w}",
    "the digit {d}",
    "a picture of the number {w}",
    "handwritten {d}",
    "the number {w} written by hand",
    "a scanned digit: {d}",
    "{w}",
    "a {d}, drawn by hand",
]
CLASS_TEMPLATES = ["a handwritten {c}", "the digit {c}", "a picture of the number {c}", "{c}"]
RETRIEVAL_CAPTIONS = 3  # captions per held-out image


def caption(template: str, digit: int) -> str:
    return template.format(w=NAMES[digit], d=digit)


def stratified_split(labels: np.ndarray, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, eval_idx), sorted: ``round(eval_fraction * n_c)`` random images of each class c held out."""
    rng = np.random.default_rng([seed, 0])
    held = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        held.append(rng.permutation(members)[: int(round(eval_fraction * len(members)))])
    eval_idx = np.sort(np.concatenate(held))
    train_idx = np.setdiff1d(np.arange(len(labels)), eval_idx)
    return train_idx, eval_idx


def upscale(images: np.ndarray, image_size: int) -> np.ndarray:
    """(N, h, w) floats in [0, 1] -> (N, S, S, 3) uint8, bilinear (half-pixel centres, edge clamped)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    y = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    grey = (y[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return np.repeat(grey[..., None], 3, axis=-1)


class DigitPairs:
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def get_batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        indices = np.asarray(indices, dtype=np.int64)
        picks = rng.integers(0, len(CAPTION_TEMPLATES), size=len(indices))
        texts = [caption(CAPTION_TEMPLATES[t], int(d)) for t, d in zip(picks, self.labels[indices])]
        return self.images[indices], texts

    def caption_groups(self, indices: np.ndarray, captions: list[str]) -> np.ndarray:
        """The ``caption_group`` of each pair: its digit (every caption of a digit means the same)."""
        return self.labels[np.asarray(indices, dtype=np.int64)].astype(np.int64)


class DigitsDataset:
    """Real handwritten digits (scikit-learn load_digits, offline), upscaled and captioned."""

    supplies: tuple[str, ...] = ("caption_group",)  # the digit; no hard-negative captions

    def __init__(
        self,
        image_size: Annotated[int, Field(ge=8, le=512, description="side of the upscaled square images, in pixels")] = 32,
        eval_fraction: Annotated[float, Field(gt=0, lt=1, description=(
            "fraction of every digit held out for evaluation (stratified)"))] = 0.2,
        seed: Annotated[int, Field(ge=0, le=2**31 - 1, description="seed of the split and the caption draws")] = 0,
    ):
        from sklearn.datasets import load_digits

        data = load_digits()
        self.image_size = image_size
        self.seed = seed
        self.labels = data.target.astype(np.int64)
        self.images = upscale(data.images / 16.0, image_size)
        self.train_idx, self.eval_idx = stratified_split(self.labels, eval_fraction, seed)

    def train_pairs(self) -> DigitPairs:
        return DigitPairs(self.images[self.train_idx], self.labels[self.train_idx])

    def eval_sets(self) -> list[EvalSet]:
        images, labels = self.images[self.eval_idx], self.labels[self.eval_idx]
        rng = np.random.default_rng([self.seed, 1])
        texts = []
        for d in labels:
            chosen = rng.choice(len(CAPTION_TEMPLATES), size=RETRIEVAL_CAPTIONS, replace=False)
            texts.append([caption(CAPTION_TEMPLATES[t], int(d)) for t in chosen])
        return [
            ClassificationSet("digit", images, labels.copy(), list(NAMES), list(CLASS_TEMPLATES)),
            RetrievalSet("retrieval", images, texts),
        ]

    def info(self) -> dict[str, Any]:
        return {"train_size": len(self.train_idx), "eval_size": len(self.eval_idx)}
