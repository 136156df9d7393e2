"""myplugin fits the harness's encoder contract."""

import numpy as np

from harness.testing import check_encoder
from harness_myplugin import MyPlugin


def test_fits_the_contract():
    assert check_encoder("myplugin") is None  # registered through the entry point, checked with real calls


def test_features_have_the_asked_dimension():
    enc = MyPlugin(dim=16)
    images = np.zeros((3, 20, 20, 3), np.uint8)
    assert tuple(enc.encode_image(enc.preprocess_images(images, train=False)).shape) == (3, 16)
    assert tuple(enc.encode_pair(enc.tokenize(["a", "b c", "d e f"])).shape) == (3, 16)
