"""myplugin: a dataset plugin for contrastive-harness (a starting point: replace the data)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from harness.api import ClassificationSet, RetrievalSet, hookimpl

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


class MyPlugin:
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
    register("myplugin", MyPlugin)
