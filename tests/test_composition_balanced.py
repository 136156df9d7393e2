"""The shapes world's composition probe, legacy against balanced items (``shapes/composition.py``):
the legacy default is bit-identical to the first design, the balanced items leave every
binding-free cue uninformative (equal-area shapes with one multiset of alpha values, one size per
image, objects that never touch or leave the image), and nothing but the composition set changes."""

from __future__ import annotations

import hashlib
import importlib
import math

import numpy as np
import pytest

from harness.builtin.datasets.shapes import ShapesDataset
from harness.builtin.datasets.shapes.attributes import SHAPES, SIZES
from harness.builtin.datasets.shapes.dataset import COMPOSITION
from harness.builtin.datasets.shapes.render import EQUAL_AREA_SIDE, alpha_patches, equal_area_patches, inside, render
from harness.types import ClassificationSet

composition = importlib.import_module("harness.builtin.datasets.shapes.composition")

# The composition set of ShapesDataset(seed=0, eval_size=200) (and 1000) as the code before the
# composition param rendered it (commit eacc3a1): SHA-256 of images, labels and candidates.
LEGACY_SHA256 = {
    (0, 200): "691ddf894ecb6111c30912718dc8418784062d8bda7ee6271c133f1388a24f76",
    (0, 1000): "ae60079acbf4542aa79d10ddcfd641cd7fe8d033e36c090d7f1d9e840b4208b0",
    (1, 200): "ad05dcb1b06ebb7722f9b1dbf101ec77a4d8046c3bfef93cc5d3ba15f4a710aa",
}


def comp_set(**params) -> ClassificationSet:
    (comp,) = [s for s in ShapesDataset(train_size=10, **params).eval_sets() if s.name == "composition"]
    return comp


def digest(comp: ClassificationSet) -> str:
    h = hashlib.sha256()
    for arr in (comp.images, np.asarray(comp.labels, np.int64), np.asarray(comp.tags["candidates"], np.int64)):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def scenes_of(ds: ShapesDataset):
    """The composition set's scene table, drawn again from its random stream."""
    return composition.item_scenes(ds.world, ds._rng(COMPOSITION), ds.eval_size, ds.image_size, ds.composition)[0]


def block_colours_and_shapes(ds: ShapesDataset, labels: np.ndarray):
    """Per item, (a, x), (b, y) of its block: "x a and y b" is binding 0."""
    blocks = np.array(composition.blocks_of(ds.world))  # (B, 2, 2)
    (a, x), (b, y) = blocks[labels // 2, 0].T, blocks[labels // 2, 1].T
    return a, x, b, y


def reviewer_rule(ds: ShapesDataset, comp: ClassificationSet) -> float:
    """The outside review's binding-free rule: binding 0 iff [colour x covers more pixels than
    colour y] equals [shape a is larger than shape b on average over the set]; a tie counts half."""
    feats, labels = comp.tags["binding_free_features"], np.asarray(comp.labels)
    C, S = ds.world.num_colours, ds.world.num_shapes
    a, x, b, y = block_colours_and_shapes(ds, labels)
    rows = np.arange(len(labels))
    mx, my = feats[rows, x], feats[rows, y]
    present = feats[:, C + S + len(SIZES): C + S + len(SIZES) + S]
    mean_mass = feats[:, C:C + S].sum(axis=0) / present.sum(axis=0)
    right = ((mx > my) == (mean_mass[a] > mean_mass[b])) == (labels % 2 == 0)
    return float(np.mean(np.where(mx == my, 0.5, right)))


# ------------------------------------------------------------------------------- legacy default


@pytest.mark.parametrize("seed, eval_size", sorted(LEGACY_SHA256))
def test_the_legacy_default_is_bit_identical_to_the_first_design(seed, eval_size):
    assert ShapesDataset(train_size=1).composition == "legacy"
    assert digest(comp_set(seed=seed, eval_size=eval_size)) == LEGACY_SHA256[(seed, eval_size)]
    assert digest(comp_set(seed=seed, eval_size=eval_size, composition="legacy")) == LEGACY_SHA256[(seed, eval_size)]


def test_balanced_changes_the_composition_set_and_nothing_else():
    legacy, balanced = (ShapesDataset(train_size=60, eval_size=200, composition=c) for c in ("legacy", "balanced"))
    for split in ("test", "validation"):
        old, new = legacy.eval_sets(split), balanced.eval_sets(split)
        assert [s.name for s in old] == [s.name for s in new]
        for a, b in zip(old, new):
            if a.name == "composition":
                assert not np.array_equal(a.images, b.images)
                continue
            assert np.array_equal(np.asarray(a.images), np.asarray(b.images)), a.name
            if isinstance(a, ClassificationSet):
                assert np.array_equal(a.labels, b.labels) and a.classnames == b.classnames and a.tags.keys() == b.tags.keys()
            else:
                assert repr(getattr(a, "texts", None)) == repr(getattr(b, "texts", None))
                assert repr(getattr(a, "triplets", None)) == repr(getattr(b, "triplets", None))
    rng = lambda: np.random.default_rng(7)  # noqa: E731
    old_images, old_texts = legacy.train_pairs().get_batch(np.arange(60), rng())
    new_images, new_texts = balanced.train_pairs().get_batch(np.arange(60), rng())
    assert np.array_equal(old_images, new_images) and old_texts == new_texts


# ------------------------------------------------------------------------------- equal-area patches


@pytest.mark.parametrize("image_size", [32, 64])
def test_equal_area_patches_give_every_shape_one_multiset_of_alpha_values(image_size):
    """Per size: integer weights (so render blends exactly these), the same sorted values for every
    shape, their sum round(256 T) / 256 with T = (EQUAL_AREA_SIDE * side)^2: within 1/512 px of T."""
    for size, patches in zip(SIZES, equal_area_patches(image_size)):
        target = (EQUAL_AREA_SIDE[size.name] * image_size) ** 2
        w = patches.astype(np.float64) * 256
        assert np.array_equal(w, np.rint(w))
        values = np.sort(w.reshape(len(SHAPES), -1), axis=1)
        assert (values == values[0]).all()
        for mass in patches.astype(np.float64).sum(axis=(1, 2)):
            assert abs(mass - target) <= 1 / 512
        assert patches[:, [0, -1], :].any() or patches[:, :, [0, -1]].any()  # cropped to the shapes' pixels


def test_legacy_patches_are_not_equal_area():
    for patches in alpha_patches(32):
        areas = {s.name: float(p.sum()) for s, p in zip(SHAPES, patches)}
        assert areas["circle"] / areas["star"] > 2.0  # pi against 1.32 at radius 1


@pytest.mark.parametrize("image_size", [32, 64])
def test_equal_area_shapes_stay_their_shapes(image_size):
    """Dealing the shared values moves little: each patch thresholded at 1/2 overlaps the shape's own
    inside test at the equal-area radius (its centroid within half a pixel per axis of the patch
    centre) with IoU >= 0.9 (0.91-1.0 measured), and its mass centroid is within 0.75 pixel of the
    patch centre (at most 0.70 measured)."""
    geometry = importlib.import_module("harness.builtin.datasets.shapes.render")._unit_geometry()
    for size, patches in zip(SIZES, equal_area_patches(image_size)):
        side = EQUAL_AREA_SIDE[size.name] * image_size
        R = patches.shape[-1] // 2
        ys, xs = np.mgrid[-R:R + 1, -R:R + 1].astype(np.float64)
        for k, shape in enumerate(SHAPES):
            p = patches[k].astype(np.float64)
            cx, cy = (p * xs).sum() / p.sum(), (p * ys).sum() / p.sum()
            assert math.hypot(cx, cy) <= 0.75, shape.name
            area, (cu, cv) = geometry[k]
            scale = side / math.sqrt(area)
            best = 0.0
            for dx in (0.0, 0.25, 0.5):
                for dy in (0.0, 0.25, 0.5):
                    truth = inside(shape.name, xs / scale + cu - dx / scale, ys / scale + cv - dy / scale)
                    solid = p >= 0.5
                    best = max(best, (truth & solid).sum() / (truth | solid).sum())
            assert best >= 0.9, (size.name, shape.name, best)


# ------------------------------------------------------------------------------- balanced items


@pytest.fixture(scope="module")
def balanced():
    ds = ShapesDataset(seed=0, train_size=1, eval_size=1000, composition="balanced")
    return ds, ds._composition()


@pytest.fixture(scope="module")
def legacy():
    ds = ShapesDataset(seed=0, train_size=1, eval_size=1000)
    return ds, ds._composition()


def test_balanced_objects_cover_the_same_mass_and_never_touch_each_other_or_the_border(balanced):
    ds, comp = balanced
    scenes = scenes_of(ds)
    images, alpha = render(scenes, ds.image_size, return_alpha=True, equal_area=True)
    assert np.array_equal(images, comp.images)
    assert not (alpha[:, 0] * alpha[:, 1]).any()  # no pixel of one object under the other
    target = np.array([round(256 * (EQUAL_AREA_SIDE[s.name] * ds.image_size) ** 2) / 256 for s in SIZES])
    mass = composition.visible_mass(alpha)
    assert np.allclose(mass, target[scenes.size], atol=1e-6)  # nothing cut off by the border
    assert (scenes.size[:, 0] == scenes.size[:, 1]).all()


def test_legacy_objects_cover_a_mass_that_depends_on_their_shape(legacy):
    ds, comp = legacy
    scenes = scenes_of(ds)
    _, alpha = render(scenes, ds.image_size, return_alpha=True)
    mass = composition.visible_mass(alpha)
    large = scenes.size == 1
    by_shape = {s: mass[large & (scenes.shape == k)].mean() for k, s in enumerate(ds.world.shapes)}
    assert by_shape["circle"] / by_shape["star"] > 1.8


def test_balanced_blocks_are_balanced_in_every_binding_free_statistic(balanced):
    """Every block has as many images of each binding; within a block the binding-free features of
    the two bindings are the same multiset of rows (so no function of them tells the bindings apart
    over the block); and swapping the two objects' colours (with their jitter) flips an image's
    binding and leaves its multiset of pixel values exactly as it was (no bag-of-pixels cue)."""
    ds, comp = balanced
    labels, feats = np.asarray(comp.labels), comp.tags["binding_free_features"]
    counts = np.bincount(labels)
    assert (counts == counts[0]).all()
    for block in range(len(counts) // 2):
        rows0 = sorted(map(tuple, feats[labels == 2 * block].round(9)))
        rows1 = sorted(map(tuple, feats[labels == 2 * block + 1].round(9)))
        assert rows0 == rows1
    scenes = scenes_of(ds)
    swapped = scenes.take(np.arange(len(scenes)))
    swapped.colour = swapped.colour[:, ::-1].copy()
    swapped.colour_jitter = swapped.colour_jitter[:, ::-1].copy()
    other = render(swapped, ds.image_size, equal_area=True)
    n = len(scenes)
    assert not np.array_equal(other, comp.images)
    assert np.array_equal(np.sort(other.reshape(n, -1, 3).view("u1,u1,u1"), axis=1),
                          np.sort(comp.images.reshape(n, -1, 3).view("u1,u1,u1"), axis=1))


def test_balanced_layouts_do_not_depend_on_the_shapes_or_colours():
    """Everything but the objects' shapes and colours is drawn from the stream alone: blocks of other
    shapes and colours get the very same sizes, centres, jitter and backgrounds."""
    blocks = [((0, 1), (2, 3)), ((1, 4), (5, 0))]
    other = [((3, 7), (4, 2)), ((2, 0), (0, 5))]
    a, labels_a = composition._balanced_scenes(np.random.default_rng(5), blocks, 40, 32)
    b, labels_b = composition._balanced_scenes(np.random.default_rng(5), other, 40, 32)
    assert np.array_equal(labels_a, labels_b)
    for field in ("size", "position", "offset", "colour_jitter", "background", "background_jitter"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.shape, b.shape)


def test_the_reviewers_rule_is_chance_on_balanced_items_and_not_on_legacy_ones(balanced, legacy):
    """At seed 0 (990 items) colour mass times mean shape area scores 0.77 on legacy items; on
    balanced ones every colour covers the same mass, so every item is a tie: exactly 0.5."""
    assert reviewer_rule(*legacy) >= 0.7
    assert reviewer_rule(*balanced) <= 0.52


def test_binding_free_features_never_pair_a_colour_with_a_shape():
    """Two images with the same objects bound the other way round have the same features."""
    ds = ShapesDataset(seed=0, train_size=1, eval_size=100, composition="balanced")
    scenes = scenes_of(ds).take(np.arange(4))
    swapped = scenes.take(np.arange(4))
    swapped.colour = swapped.colour[:, ::-1].copy()
    mass = np.full((4, 2), 10.0)
    a = composition.binding_free_features(scenes, mass, ds.world)
    b = composition.binding_free_features(swapped, mass, ds.world)
    assert np.array_equal(a, b) and a.shape == (4, composition.feature_count(ds.world))
    C, S = ds.world.num_colours, ds.world.num_shapes
    assert (a[:, :C].sum(axis=1) == 20).all() and (a[:, C:C + S].sum(axis=1) == 20).all()


def test_an_unknown_design_is_refused():
    import harness

    with pytest.raises(ValueError, match="composition"):
        harness.create_dataset("shapes", train_size=1, eval_size=10, composition="shuffled")
    with pytest.raises(ValueError, match="composition must be one of legacy, balanced"):
        composition.composition_set(ShapesDataset(train_size=1).world, np.random.default_rng(0), 10, 32, "shuffled")
