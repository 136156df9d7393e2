"""myplugin fits the harness's dataset contract."""

import numpy as np

from harness.testing import check_dataset
from harness_myplugin import MyPlugin


def test_fits_the_contract():
    assert check_dataset("myplugin") is None  # registered through the entry point, checked with real calls


def test_captions_name_the_colour():
    pairs = MyPlugin(size=32).train_pairs()
    images, captions = pairs.get_batch(np.arange(32), np.random.default_rng(0))
    names = ["red", "green", "blue", "yellow"]
    assert all(names[label] in caption for label, caption in zip(pairs.labels, captions))
