"""The shapes world: a procedurally generated, seeded image-caption dataset (see ``dataset.py``)."""

from harness.builtin.datasets.shapes.dataset import ShapesDataset, ShapesPairs
from harness.builtin.datasets.shapes.grammar import captions, parse_caption
from harness.builtin.datasets.shapes.render import render
from harness.builtin.datasets.shapes.world import Scenes, World, make_world, sample_scenes

__all__ = [
    "ShapesDataset",
    "ShapesPairs",
    "Scenes",
    "World",
    "captions",
    "make_world",
    "parse_caption",
    "render",
    "sample_scenes",
]
