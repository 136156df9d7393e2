"""The shapes world: determinism, pixels vs attributes, the caption grammar, the evaluation sets."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest

import harness
from harness.builtin.datasets.shapes import ShapesDataset, make_world, parse_caption, render, sample_scenes
from harness.builtin.datasets.shapes.attributes import (
    BACKGROUNDS,
    COLOURS,
    PAIRED_POSITIONS,
    PHRASES,
    POSITIONS,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
)
from harness.builtin.datasets.shapes.dataset import GALLERY
from harness.builtin.datasets.shapes.grammar import (
    BACKGROUND_TEMPLATES,
    OBJECT_TEMPLATES,
    PAIR_TEMPLATES,
    PAIRABLE_TEMPLATES,
    captions,
)
from harness.builtin.datasets.shapes.render import alpha_patches, patch_radius
from harness.builtin.datasets.shapes.world import BACKGROUND_JITTER, COLOUR_JITTER
from harness.types import ArithmeticSet, ClassificationSet, Dataset, PairSource, RetrievalSet

SMALL = dict(train_size=400, eval_size=120)


def small(**kw) -> ShapesDataset:
    return ShapesDataset(**{**SMALL, **kw})


def by_position(objects):
    return sorted(objects, key=lambda o: o["position"])


# ------------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_images_and_captions():
    a, b = small(seed=3), small(seed=3)
    idx = np.array([5, 0, 399, 17, 17])
    ia, ca = a.train_pairs().get_batch(idx, np.random.default_rng(9))
    ib, cb = b.train_pairs().get_batch(idx, np.random.default_rng(9))
    assert ia.dtype == np.uint8 and ia.shape == (5, 32, 32, 3)
    assert ia.tobytes() == ib.tobytes() and ca == cb
    for sa, sb in zip(a.eval_sets(), b.eval_sets()):
        assert sa.name == sb.name and sa.images.tobytes() == sb.images.tobytes()
        if isinstance(sa, RetrievalSet):
            assert sa.captions == sb.captions
        if isinstance(sa, ArithmeticSet):
            assert sa.triplets == sb.triplets


def test_different_seeds_differ():
    a, b = small(seed=0), small(seed=1)
    idx = np.arange(64)
    ia, ca = a.train_pairs().get_batch(idx, np.random.default_rng(0))
    ib, cb = b.train_pairs().get_batch(idx, np.random.default_rng(0))
    assert ia.tobytes() != ib.tobytes()
    assert sum(x != y for x, y in zip(ca, cb)) > 50
    assert a.eval_sets()[-2].captions != b.eval_sets()[-2].captions
    # the caption rng, not the dataset, decides the paraphrase: same image, other words
    _, cc = a.train_pairs().get_batch(idx, np.random.default_rng(1))
    assert sum(x != y for x, y in zip(ca, cc)) > 50


def test_cache_dir_holds_the_same_bytes(tmp_path):
    plain = small(seed=2).train_pairs()
    cached_ds = small(seed=2, cache_dir=str(tmp_path))
    cached = cached_ds.train_pairs()
    path = cached_ds.cache_path()
    assert path.exists() and path.parent == tmp_path
    assert np.load(path).shape == (400, 32, 32, 3)
    idx = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    a = plain.get_batch(idx, np.random.default_rng(0))
    b = cached.get_batch(idx, np.random.default_rng(0))
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1]
    # a second dataset reads the file instead of rendering: corrupting it shows it was read
    arr = np.load(path, mmap_mode="r+")
    arr[3] = 7
    arr.flush()
    del arr
    again = small(seed=2, cache_dir=str(tmp_path)).train_pairs().get_batch(np.array([3]), np.random.default_rng(0))
    assert (again[0] == 7).all()
    assert small(seed=5, cache_dir=str(tmp_path)).cache_path() != path


# ------------------------------------------------------------------------------ pixels vs truth


def test_alpha_patch_areas_match_the_shape_formulas():
    """Supersampled coverage = the analytic area (in pixels) of each shape at radius r."""
    size = 64
    for k, patches in enumerate(alpha_patches(size)):
        r = SIZE_RADIUS[SIZES[k].name] * size
        areas = {s.name: float(patches[i].sum()) for i, s in enumerate(SHAPES)}
        expected = {
            "circle": math.pi * r * r,
            "square": (1.6 * r) ** 2,
            "diamond": 2 * r * r,
            "ring": math.pi * r * r * (1 - 0.25),
            "cross": (2 * 0.6 * 1.9 - 0.6 * 0.6) * r * r,
            "triangle": 0.5 * 1.9 * 1.7 * r * r,
            "hexagon": 1.5 * math.sqrt(3) * r * r,
        }
        for name, area in expected.items():
            assert areas[name] == pytest.approx(area, rel=0.03), name
        assert patches.shape[1] == 2 * patch_radius(size, SIZES[k].name) + 1


def test_colours_backgrounds_and_positions_match_pixels():
    world = make_world(0, len(SHAPES), len(COLOURS), 0.0)
    scenes = sample_scenes(np.random.default_rng(4), 300, world.combos, 32, two_object_prob=0.4)
    images, alpha = render(scenes, 32, return_alpha=True)
    palette = np.array([c.rgb for c in COLOURS], dtype=float)
    checked = 0
    for i in range(len(scenes)):
        attrs = scenes.attributes(i)
        for k, obj in enumerate(attrs["objects"]):
            others = alpha[i, 1 - k] if k == 0 else np.zeros_like(alpha[i, 0])
            solid = (alpha[i, k] >= 1.0) & (others == 0)
            assert solid.sum() >= 3, (i, obj)
            mean = images[i][solid].mean(axis=0)
            named = np.array(COLOURS[[c.name for c in COLOURS].index(obj["colour"])].rgb, dtype=float)
            assert np.all(np.abs(mean - named) <= COLOUR_JITTER + 0.5), (obj, mean)
            assert COLOURS[int(np.argmin(((palette - mean) ** 2).sum(1)))].name == obj["colour"]
            ys, xs = np.nonzero(alpha[i, k] > 0)
            w = alpha[i, k][ys, xs]
            cx, cy = (xs + 0.5) @ w / w.sum(), (ys + 0.5) @ w / w.sum()
            pos = obj["position"]
            if pos == "left":
                assert cx < 16
            elif pos == "right":
                assert cx > 16
            elif pos == "top":
                assert cy < 16
            elif pos == "bottom":
                assert cy > 16
            else:
                assert abs(cx - 16) < 5 and abs(cy - 16) < 5
            checked += 1
        free = alpha[i].sum(0) == 0
        bg = np.array([b.rgb for b in BACKGROUNDS if b.name == attrs["background"]][0])
        assert np.all(np.abs(images[i][free].astype(int) - bg) <= BACKGROUND_JITTER)
    assert checked > 350
    # size: a large object covers more pixels than a small one of the same shape
    cover = alpha.sum(axis=(2, 3))
    for s in range(len(SHAPES)):
        one = (scenes.n_objects == 1) & (scenes.shape[:, 0] == s)
        small_ = cover[one & (scenes.size[:, 0] == 0), 0]
        large = cover[one & (scenes.size[:, 0] == 1), 0]
        if len(small_) and len(large):
            assert small_.max() < large.min()


def test_two_object_images_use_opposite_positions():
    world = make_world(0, 6, 8, 0.125)
    scenes = sample_scenes(np.random.default_rng(0), 500, world.seen, 32, two_object_prob=1.0)
    for i in range(len(scenes)):
        pos = {o["position"] for o in scenes.attributes(i)["objects"]}
        assert pos in ({"left", "right"}, {"top", "bottom"})


# ------------------------------------------------------------------------------------ grammar


def test_examples_parse():
    assert parse_caption("a small red circle on the left") == {
        "objects": [{"size": "small", "colour": "red", "shape": "circle", "position": "left"}],
        "background": None,
    }
    assert parse_caption("left: tiny crimson disc")["objects"] == [
        {"position": "left", "size": "small", "colour": "red", "shape": "circle"}
    ]
    two = parse_caption("a big cobalt box at the top and a tiny citrus x in the lower part; pale background")
    assert two == {
        "objects": [
            {"size": "large", "colour": "blue", "shape": "square", "position": "top"},
            {"size": "small", "colour": "lime", "shape": "cross", "position": "bottom"},
        ],
        "background": "white",
    }
    with pytest.raises(ValueError, match="two colours"):
        parse_caption("a red blue circle")


def test_every_caption_parses_back_to_its_attributes():
    world = make_world(1, len(SHAPES), len(COLOURS), 0.0)
    scenes = sample_scenes(np.random.default_rng(1), 3000, world.combos, 32, two_object_prob=0.3)
    texts = captions(scenes, np.random.default_rng(2))
    mentioned = 0
    for i, text in enumerate(texts):
        truth, got = scenes.attributes(i), parse_caption(text)
        assert by_position(got["objects"]) == by_position(truth["objects"]), text
        assert got["background"] in (None, truth["background"]), text
        mentioned += got["background"] is not None
    assert 0.3 < mentioned / len(texts) < 0.5  # 40% of captions name the background


def test_paraphrase_coverage():
    world = make_world(0, len(SHAPES), len(COLOURS), 0.0)
    scenes = sample_scenes(np.random.default_rng(0), 4000, world.combos, 32, two_object_prob=0.3)
    out = captions(scenes, np.random.default_rng(0), with_templates=True)
    used = Counter(t for _, templates in out for t in templates)
    for template in OBJECT_TEMPLATES + PAIR_TEMPLATES + BACKGROUND_TEMPLATES:
        assert used[template] >= 20, template
    words = Counter(w for text, _ in out for w in re.findall(r"[a-z]+", text))
    for group in (SHAPES, COLOURS, SIZES, BACKGROUNDS):
        for value in group:
            for synonym in value.words:
                assert words[synonym] >= 10, synonym
    # one fixed scene: its captions are many different strings, not a lookup table
    one = scenes.take(np.zeros(300, dtype=np.int64))
    assert len(set(captions(one, np.random.default_rng(5)))) >= 150


# ------------------------------------------------------------------------------- the dataset


def test_protocol_and_eval_set_names():
    ds = harness.create_dataset("shapes", **SMALL)
    assert isinstance(ds, Dataset)
    assert isinstance(ds.train_pairs(), PairSource) and len(ds.train_pairs()) == 400
    sets = ds.eval_sets()
    assert [s.name for s in sets] == ["shape", "colour", "size", "position", "shape_colour", "shape_colour_unseen",
                                      "composition", "retrieval", "arithmetic"]
    assert [type(s) for s in sets] == [ClassificationSet] * 7 + [RetrievalSet, ArithmeticSet]
    assert all(len(s) == 120 for s in sets[:6] + sets[7:])
    shape, colour, size, position, combo, unseen = sets[:6]
    assert [s.tags["attribute"] for s in sets[:4]] == ["shape", "colour", "size", "position"]
    assert size.classnames == ["small", "large"] and len(position.classnames) == 5
    assert shape.tags["oracle_features"] == [["colour", "size", "position"]]
    assert shape.classnames == [s.name for s in SHAPES[:6]] and colour.classnames == [c.name for c in COLOURS[:8]]
    assert len(combo.classnames) == 48 and combo.classnames[0] == "red circle"
    for s in sets[:6]:
        assert s.images.shape == (120, 32, 32, 3) and s.images.dtype == np.uint8
        assert len(s.templates) >= 3 and all("{c}" in t for t in s.templates)
        assert s.labels.min() >= 0 and s.labels.max() < len(s.classnames)
    assert unseen.tags == {"compositional": True} and not combo.tags
    held = {combo.classnames[i] for i in range(48)} & set(ds.info()["heldout_combos"])
    assert len(held) == 6 == round(0.125 * 48)
    assert {combo.classnames[i] for i in unseen.labels} == held  # only held-out pairs, all of them
    assert not {combo.classnames[i] for i in combo.labels} & held
    assert (combo.labels == shape.labels * 8 + colour.labels).all()


def test_training_never_shows_a_heldout_combination():
    ds = small(seed=7, train_size=2000, two_object_prob=0.5)
    held = ds.world.heldout
    scenes = ds.train_pairs().scenes
    pairs = {(int(s), int(c)) for s, c in zip(scenes.shape.ravel(), scenes.colour.ravel()) if s >= 0}
    assert not pairs & held and len(pairs) == 48 - len(held)
    _, texts = ds.train_pairs().get_batch(np.arange(300), np.random.default_rng(0))
    names = {ds.world.combo_name(s, c) for s, c in held}
    for text in texts:
        for obj in parse_caption(text)["objects"]:
            assert f"{obj['colour']} {obj['shape']}" not in names
    # every shape and every colour is still seen in training
    assert {s for s, _ in pairs} == set(range(6)) and {c for _, c in pairs} == set(range(8))


def test_retrieval_captions_are_distinct_paraphrases_of_one_scene():
    ds = small(captions_per_image=4)
    (retrieval,) = [s for s in ds.eval_sets() if s.name == "retrieval"]
    for caps in retrieval.captions:
        assert len(caps) == len(set(caps)) == 4
        parsed = [by_position(parse_caption(c)["objects"]) for c in caps]
        assert all(p == parsed[0] for p in parsed)
    assert sum(len(by_position(parse_caption(c[0])["objects"])) == 2 for c in retrieval.captions) > 10


def test_arithmetic_targets_are_the_source_with_one_attribute_changed():
    ds = small()
    arith = ds.eval_sets()[-1]
    gallery = ds._scenes(GALLERY, 120, ds.world.seen, 0.0)
    assert arith.images.tobytes() == render(gallery, 32).tobytes()
    attrs = [gallery.attributes(i)["objects"][0] for i in range(len(gallery))]
    kinds = Counter()
    for t in arith.triplets:
        src = attrs[t.source]
        kind = "colour" if src["colour"] == t.value_word else "shape"
        assert src[kind] == t.value_word != t.target_word
        want = {**src, kind: t.target_word}
        expected = [i for i, a in enumerate(attrs) if (a["shape"], a["colour"]) == (want["shape"], want["colour"])]
        assert t.target_ids == expected and t.source not in t.target_ids and expected
        kinds[kind] += 1
    assert kinds["colour"] > 40 and kinds["shape"] > 40


def test_no_heldout_split_and_validation():
    ds = small(heldout_combos=0.0)
    assert not {"shape_colour_unseen", "composition"} & {s.name for s in ds.eval_sets()}
    for bad, param in [
        (dict(heldout_combos=0.8), "heldout_combos"),
        (dict(num_shapes=1), "num_shapes"),
        (dict(num_colours=99), "num_colours"),
        (dict(image_size=8), "image_size"),
        (dict(two_object_prob=1.5), "two_object_prob"),
        (dict(captions_per_image=0), "captions_per_image"),
    ]:
        with pytest.raises(ValueError, match=param):
            harness.create_dataset("shapes", **{**SMALL, **bad})  # limits declared in the signature


def test_larger_world_and_image_size():
    ds = small(num_shapes=9, num_colours=10, image_size=48, heldout_combos=0.25)
    sets = ds.eval_sets()
    assert sets[0].images.shape == (120, 48, 48, 3)
    (combo,) = [s for s in sets if s.name == "shape_colour"]
    assert len(combo.classnames) == 90 and len(ds.info()["heldout_combos"]) == round(0.25 * 90)
    images, texts = ds.train_pairs().get_batch(np.arange(10), np.random.default_rng(0))
    assert images.shape == (10, 48, 48, 3) and len(texts) == 10


def test_captions_fit_a_32_token_context():
    """open_clip's BPE tokenizer (offline): every caption, with start/end tokens, fits 32 tokens.

    Words are tokenized independently, so the longest caption takes the longest word of every
    slot; the bound is computed over all templates and checked against sampled captions.
    """
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()

    def n(text: str) -> int:
        return len(tokenizer.encode(text))

    def longest(values) -> str:
        return max((w for v in values for w in v.words), key=n)

    s, c, h, b = longest(SIZES), longest(COLOURS), longest(SHAPES), longest(BACKGROUNDS)

    def obj(templates, pos: str) -> int:
        words = [p.words for p in POSITIONS if p.name == pos][0]
        return max(n(t.format(a="an", s=s, c=c, h=h, p=p, w=w)) for t in templates for p in PHRASES[pos] for w in words)

    one = max(obj(OBJECT_TEMPLATES, p.name) for p in POSITIONS)
    two = max(obj(PAIRABLE_TEMPLATES, first) + obj(PAIRABLE_TEMPLATES, second) for first, second in PAIRED_POSITIONS)
    glue = max(n(bt.format(x=pt.replace("{1}", "").replace("{2}", ""), a="a", b=b))
               for pt in PAIR_TEMPLATES for bt in BACKGROUND_TEMPLATES)
    assert max(one, two) + glue + 2 <= 32

    ds = small(train_size=3000, two_object_prob=0.5)
    _, texts = ds.train_pairs().get_batch(np.arange(3000), np.random.default_rng(0))
    lengths = [n(t) + 2 for t in texts]
    assert max(lengths) <= max(one, two) + glue + 2
    assert sum(k > 16 for k in lengths) > 300  # a 16-token context would cut many two-object captions


# ----------------------------------------------------------------- composition probe and validation split


def test_composition_probe_defeats_shape_only_and_colour_only_oracles():
    """Issue 14: held-out combinations whose shapes and colours are all seen in training with other
    partners; each image chooses between the two bindings of its block, balanced, so an oracle that
    knows only the shapes or only the colours scores exactly chance."""
    from collections import Counter

    from harness.builtin.evaluations.references import oracle_accuracy

    ds = small(eval_size=600)
    (comp,) = [s for s in ds.eval_sets() if s.name == "composition"]
    world = ds.world
    held = world.heldout
    seen_shapes = {s for s, _ in world.seen}
    seen_colours = {c for _, c in world.seen}
    assert {s for s, _ in held} <= seen_shapes and {c for _, c in held} <= seen_colours
    for label, cand in zip(comp.labels, comp.tags["candidates"]):
        assert label in cand and cand[1] == cand[0] + 1
    names = comp.classnames
    for k in range(0, len(names), 2):  # class k: the held-out binding; k + 1: its swap
        a, b = names[k].split(" and "), names[k + 1].split(" and ")
        assert {w.split()[1] for w in a} == {w.split()[1] for w in b}  # same shapes
        assert {w.split()[0] for w in a} == {w.split()[0] for w in b}  # same colours
        assert all(w in {world.combo_name(s, c) for s, c in held} for w in a)
    counts = Counter(comp.labels.tolist())
    assert len(set(counts.values())) == 1  # every binding equally often
    attrs = comp.tags["attributes"]
    for known in (["shapes"], ["colours"]):  # in-sample majority per block: exactly half right
        groups = {}
        for key, label in zip(attrs[known[0]], comp.labels):
            groups.setdefault(int(key), Counter())[int(label)] += 1
        assert sum(max(c.values()) for c in groups.values()) / len(comp.labels) == 0.5
        assert abs(oracle_accuracy(comp.labels, attrs, known) - 0.5) < 0.1
    assert comp.tags["oracle_accuracy"] == 0.5


def test_validation_split_is_drawn_apart_from_every_reported_set_and_training():
    ds = small(train_size=2000)
    test, val = ds.eval_sets(), ds.eval_sets(split="validation")
    assert [s.name for s in test] == [s.name for s in val]
    seen = {im.tobytes() for s in test for im in s.images}
    train_images, _ = ds.train_pairs().get_batch(np.arange(2000), np.random.default_rng(0))
    seen |= {im.tobytes() for im in train_images}
    val_images = {im.tobytes() for s in val for im in s.images}
    assert not val_images & seen
    with pytest.raises(ValueError, match="split must be one of test, validation"):
        ds.eval_sets(split="train")


def test_a_declared_headline_tags_exactly_its_attribute_sets_and_the_main_score_averages_them():
    from harness.builtin.evaluations.zeroshot import main_score_sets

    world = ShapesDataset(train_size=50, eval_size=200, headline=["shape", "size", "position"])
    sets = [s for s in world.eval_sets() if isinstance(s, ClassificationSet)]
    assert {s.name for s in sets if s.tags.get("headline")} == {"shape", "size", "position"}
    assert [s.name for s in main_score_sets(sets)] == ["shape", "size", "position"]
    default = [s for s in ShapesDataset(train_size=50, eval_size=200).eval_sets() if isinstance(s, ClassificationSet)]
    assert not any(s.tags.get("headline") for s in default)  # no headline: every attribute task, as before
    assert [s.name for s in main_score_sets(default)] == ["shape", "colour", "size", "position", "composition"]


@pytest.mark.parametrize("headline, message", [(["shape", "shape"], "must not repeat"), (["hue"], "headline"), ([], "headline")])
def test_a_bad_headline_is_refused_naming_the_field(headline, message):
    with pytest.raises(ValueError, match=message):
        harness.create_dataset("shapes", train_size=50, eval_size=50, headline=headline)
