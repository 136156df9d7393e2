"""The shapes world's training options: canonical captions, shape groups, hard-negative captions.

Each option is off by default, and with the defaults a run sees exactly today's bytes (pinned).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import harness
from harness.builtin.datasets.shapes import ShapesDataset, make_world, parse_caption, sample_scenes
from harness.builtin.datasets.shapes.attributes import COLOURS, POSITIONS, SHAPES, SIZES
from harness.builtin.datasets.shapes.grammar import canonical_caption, captions, scene_objects
from harness.builtin.datasets.shapes.negatives import edits

SMALL = dict(train_size=400, eval_size=120)


def small(**kw) -> ShapesDataset:
    return ShapesDataset(**{**SMALL, **kw})


def objects_of(text: str) -> list[tuple]:
    """A caption's objects as sorted (shape, colour, size, position) name tuples."""
    return sorted((o["shape"], o["colour"], o["size"], o["position"]) for o in parse_caption(text)["objects"])


def scene_names(scenes, i) -> list[tuple]:
    return sorted((o["shape"], o["colour"], o["size"], o["position"]) for o in scenes.attributes(i)["objects"])


# ------------------------------------------------------------------------------- defaults


def test_default_world_is_byte_identical_to_before_the_options():
    """Digest of train batches, the rng state after them and every eval set (computed before the
    options existed): the defaults still produce today's world, draw for draw."""
    ds = ShapesDataset(seed=3, train_size=400, eval_size=120, two_object_prob=0.5)
    rng = np.random.default_rng(11)
    h = hashlib.sha256()
    for _ in range(3):
        images, texts = ds.train_pairs().get_batch(rng.integers(0, 400, 32), rng)
        h.update(images.tobytes())
        h.update("\n".join(texts).encode())
    h.update(rng.integers(0, 2**31, 8).tobytes())
    before = ("shape", "colour", "shape_colour", "shape_colour_unseen", "retrieval", "arithmetic")
    for s in [s for s in ds.eval_sets() if s.name in before]:  # the sets that existed then, drawn as then
        h.update(s.images.tobytes())
        h.update(repr(getattr(s, "captions", None)).encode())
    assert h.hexdigest() == "9d14d210f7c120b10a6bd7ba24175cc74bbfc4064b926598ebfe275223af176b"


def test_params_are_checked():
    for bad in (dict(captions="short"), dict(shape_groups=0), dict(shape_groups=7), dict(negatives_per_pair=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            harness.create_dataset("shapes", **{**SMALL, **bad})
    ShapesDataset.check_params(shape_groups=9, num_shapes=9)


# ----------------------------------------------------------------------------- canonical


def test_canonical_captions_name_every_object_in_canonical_words():
    world = make_world(1, len(SHAPES), len(COLOURS), 0.0)
    scenes = sample_scenes(np.random.default_rng(1), 2000, world.combos, 32, two_object_prob=0.4)
    texts = captions(scenes, np.random.default_rng(2), style="canonical")
    vocabulary = {v.name for group in (SHAPES, COLOURS, SIZES, POSITIONS) for v in group} | {"and"}
    for i, text in enumerate(texts):
        assert objects_of(text) == scene_names(scenes, i), text
        assert set(text.split()) <= vocabulary, text
    # one caption per scene, objects in position order (left before right, top before bottom)
    assert texts == captions(scenes, np.random.default_rng(99), style="canonical")
    two = [t for t in texts if " and " in t]
    assert two and all(t.split(" and ")[0].split()[-1] in ("left", "top") for t in two)
    assert canonical_caption([(0, 0, 0, 1), (1, 2, 1, 0)]) == "large blue square left and small red circle right"


def test_canonical_style_draws_what_the_paraphrase_style_draws():
    world = make_world(0, 6, 8, 0.0)
    scenes = sample_scenes(np.random.default_rng(0), 50, world.combos, 32, two_object_prob=0.5)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    captions(scenes, a, style="canonical")
    captions(scenes, b)
    assert a.integers(0, 2**31, 4).tolist() == b.integers(0, 2**31, 4).tolist()
    with pytest.raises(ValueError, match="caption style"):
        captions(scenes, a, style="terse")


def test_canonical_dataset_trains_and_evaluates_on_canonical_captions():
    ds = small(captions="canonical", two_object_prob=0.5)
    images, texts = ds.train_pairs().get_batch(np.arange(40), np.random.default_rng(0))
    scenes = ds.train_pairs().scenes
    assert images.shape == (40, 32, 32, 3)
    assert texts == [canonical_caption(scene_objects(scenes, i)) for i in range(40)]
    retrieval = next(s for s in ds.eval_sets() if s.name == "retrieval")
    assert all(len(caps) == 1 for caps in retrieval.captions)  # the style has one caption per scene
    # the images and the eval images do not depend on the caption style
    plain = small(two_object_prob=0.5)
    assert plain.train_pairs().get_batch(np.arange(40), np.random.default_rng(0))[0].tobytes() == images.tobytes()
    assert [s.images.tobytes() for s in plain.eval_sets()] == [s.images.tobytes() for s in ds.eval_sets()]


# --------------------------------------------------------------------------------- groups


def test_shape_groups_differ_only_in_one_objects_shape():
    ds = small(seed=4, shape_groups=4, two_object_prob=0.5, train_size=2000)
    pairs = ds.train_pairs()
    idx = np.random.default_rng(0).permutation(2000)[:64]
    rows = pairs._rows(idx, np.random.default_rng(1))[0]
    assert len(rows) == 64
    first = pairs.scenes.take(idx[:16])  # the groups' first members are the first N / g rows
    held = ds.world.heldout
    for j in range(16):
        group = rows.take(np.arange(4 * j, 4 * j + 4))
        for name in ("n_objects", "colour", "size", "position", "offset", "colour_jitter", "background",
                     "background_jitter"):
            got, want = getattr(group, name), getattr(first, name)[j]
            assert (got == want).all(), name
        assert (group.shape[0] == first.shape[j]).all()
        changed = np.flatnonzero((group.shape != group.shape[0]).any(axis=0))
        assert len(changed) == 1  # one object slot carries the differences
        k = changed[0]
        assert len(set(group.shape[:, k].tolist())) == 4  # four different shapes
        assert not {(int(s), int(group.colour[0, k])) for s in group.shape[:, k]} & held
    # deterministic given the rng, and the batch is rendered from these rows
    images, texts = pairs.get_batch(idx, np.random.default_rng(1))
    again = pairs.get_batch(idx, np.random.default_rng(1))
    assert images.tobytes() == again[0].tobytes() and texts == again[1]
    assert [objects_of(t) for t in texts] == [scene_names(rows, i) for i in range(64)]


def test_shape_groups_fill_any_batch_size():
    pairs = small(shape_groups=3).train_pairs()
    images, texts = pairs.get_batch(np.arange(10), np.random.default_rng(0))
    assert images.shape[0] == len(texts) == 10


# ------------------------------------------------------------------------------ negatives


def test_dataset_declares_text_negatives():
    assert ShapesDataset.supplies == ("text_negatives", "caption_group")
    assert harness.create_dataset("shapes", **SMALL).supplies == ("text_negatives", "caption_group")


@pytest.mark.parametrize("style", ["paraphrase", "canonical"])
def test_negatives_are_minimal_edits_of_the_scene(style):
    ds = small(seed=5, captions=style, two_object_prob=0.5, negatives_per_pair=6, train_size=1000)
    pairs = ds.train_pairs()
    idx = np.arange(300)
    images, texts, negatives = pairs.get_batch_with_negatives(idx, np.random.default_rng(3))
    plain_images, plain_texts = pairs.get_batch(idx, np.random.default_rng(3))
    assert images.tobytes() == plain_images.tobytes() and texts == plain_texts
    assert len(negatives) == 300 and all(len(n) == 6 for n in negatives)
    kinds = {"shape": 0, "colour": 0, "size": 0, "position": 0, "exchange": 0}
    for i, (text, negs) in enumerate(zip(texts, negatives)):
        truth = objects_of(text)
        assert len(set(negs)) == 6 and text not in negs
        for neg in negs:
            got = objects_of(neg)
            assert got != truth
            assert len(neg.split()) == len(text.split()) or style == "paraphrase"  # canonical: same length
            # the same words but for the edit: same number of objects, one slot or one exchange differs
            assert len(got) == len(truth)
            diff = [(a, b) for a, b in zip(sorted(truth, key=lambda o: o[3]), sorted(got, key=lambda o: o[3]))
                    if a != b]
            fields = {f for a, b in diff for f in range(4) if a[f] != b[f]}
            if len(diff) == 1:
                assert len(fields) == 1
                kinds[("shape", "colour", "size", "position")[fields.pop()]] += 1
            else:  # two objects: an exchange of one attribute, or one object moved onto another position
                assert len(diff) == 2
                a, b = [d[0] for d in diff], [d[1] for d in diff]
                swapped = [f for f in range(3) if a[0][f] == b[1][f] and a[1][f] == b[0][f] and a[0][f] != a[1][f]]
                assert swapped or fields == {3}, (text, neg)
                kinds["exchange" if swapped else "position"] += 1
        # a minimal edit: word for word, only the edited values change
        if style == "canonical":
            for neg in negs:
                changed = [(x, y) for x, y in zip(text.split(), neg.split()) if x != y]
                assert 1 <= len(changed) <= 2
    assert all(n > 50 for n in kinds.values()), kinds


def test_negatives_are_deterministic_and_extend_get_batch_draws():
    pairs = small(seed=2, two_object_prob=0.3).train_pairs()
    a = pairs.get_batch_with_negatives(np.arange(50), np.random.default_rng(8))
    b = pairs.get_batch_with_negatives(np.arange(50), np.random.default_rng(8))
    assert a[1:] == b[1:]
    c = pairs.get_batch_with_negatives(np.arange(50), np.random.default_rng(9))
    assert c[2] != a[2]


def test_negative_edits_use_the_world_vocabulary():
    world = make_world(0, 6, 8, 0.125)
    one = edits([(0, 0, 0, 4)], world)
    assert len(one["shape"]) == 5 and len(one["colour"]) == 7 and len(one["size"]) == 1 and len(one["position"]) == 4
    assert "exchange" not in one
    two = edits([(0, 0, 0, 0), (0, 1, 1, 1)], world)
    assert len(two["exchange"]) == 2  # colour and size differ; the shapes are equal
    assert all(e[0][3] != e[1][3] for e in two["position"])  # never both objects on one position
    # a world of two shapes and two colours still has K distinct negatives for small K, then repeats
    tiny = small(num_shapes=2, num_colours=2, heldout_combos=0.0, negatives_per_pair=12, two_object_prob=0.0)
    _, texts, negatives = tiny.train_pairs().get_batch_with_negatives(np.arange(5), np.random.default_rng(0))
    for text, negs in zip(texts, negatives):
        assert len(set(negs)) == 7 and text not in negs  # 1 shape + 1 colour + 1 size + 4 positions


def test_diagnostics_log_probes_and_batch_stats_without_changing_training(tmp_path):
    """The suppression diagnostics (harness.diagnostics) only observe: the same run without them
    ends with identical parameters; with them, log.jsonl has probe records at 0, 1/4, ..., all steps."""
    import json

    import torch

    from harness.config import TrainConfig
    from harness.training import train

    class Plain:  # the same pairs without the diagnostic hooks
        def __init__(self, pairs):
            self.pairs = pairs

        def __len__(self):
            return len(self.pairs)

        def get_batch(self, indices, rng):
            return self.pairs.get_batch(indices, rng)

    cfg = TrainConfig(steps=8, batch_size=16, lr=1e-3, log_every=4)
    finals = []
    for wrap in (False, True):
        torch.manual_seed(0)
        ds = small(captions="canonical", shape_groups=4)
        enc = harness.create_encoder("open_clip", model="harness-tiny-cnn")
        pairs = Plain(ds.train_pairs()) if wrap else ds.train_pairs()
        log = tmp_path / f"log{wrap}.jsonl"
        stats = train(enc, harness.create_loss("clip"), pairs, cfg, 0, torch.device("cpu"), log)
        finals.append([p.detach().clone() for p in enc.model.parameters()])
        records = [json.loads(line) for line in log.read_text().splitlines()]
        if not wrap:
            assert [r["step"] for r in records if "probe" in r] == [0, 2, 4, 6, 8]
            assert set(records[0]["probe"]) == {"shape", "colour", "size", "position"}
            assert all(0 <= v <= 1 for r in records if "probe" in r for v in r["probe"].values())
            assert [r["batch"]["shape_only_rows"] for r in records if "batch" in r] == [1.0, 1.0]  # groups of 4
            assert stats["shape_only_rows"] == 1.0
        else:
            assert not any("probe" in r or "batch" in r for r in records) and "shape_only_rows" not in stats
    assert all(torch.equal(a, b) for a, b in zip(*finals))
