"""Built-in evaluations: clip_benchmark agreement, constructed known answers, skips, keys."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import harness
from harness.builtin.evaluations import clip_benchmark_compat as compat
from harness.builtin.evaluations.arithmetic import Arithmetic
from harness.builtin.evaluations.gap import Gap
from harness.builtin.evaluations.gap_shift import GapShift
from harness.builtin.evaluations.keys import number_key
from harness.builtin.evaluations.linear_probe import LinearProbe, split_indices
from harness.builtin.evaluations.retrieval import Retrieval, retrieval_recalls
from harness.builtin.evaluations.zeroshot import ZeroShotClassification, class_weights
from harness.errors import HarnessError
from harness.types import (
    ArithmeticSet,
    ArithmeticTriplet,
    ClassificationSet,
    EmbeddedSet,
    EvalContext,
    RetrievalSet,
    Skip,
)

NO_IMAGES = np.zeros((0, 1, 1, 3), dtype=np.uint8)  # evaluations never look at pixels


def unit(a: torch.Tensor) -> torch.Tensor:
    return F.normalize(a.float(), dim=-1)


class TextTable:
    """A text tower over fixed features: each distinct string gets a row, created on first use."""

    def __init__(self, d: int, seed: int = 0, fixed: dict[str, torch.Tensor] | None = None):
        self.d, self.g = d, torch.Generator().manual_seed(seed)
        self.rows: dict[str, torch.Tensor] = dict(fixed or {})

    def feature(self, text: str) -> torch.Tensor:
        if text not in self.rows:
            self.rows[text] = torch.randn(self.d, generator=self.g)
        return self.rows[text]

    def encode(self, texts) -> torch.Tensor:  # the EvalContext's encode_texts_fn
        return unit(torch.stack([self.feature(t) for t in texts]))


def ctx_of(sets, table: TextTable | None = None, modality: str = "text", seed: int = 0) -> EvalContext:
    return EvalContext(sets=sets, pair_modality=modality, seed=seed, encode_texts_fn=table.encode if table else None)


def classification_case(n=60, n_classes=6, d=16, seed=0, templates=("a {c}.", "a photo of a {c}.", "{c}!")):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % n_classes
    image_feats = torch.randn(n, d, generator=g)
    rec = ClassificationSet("cls.v1", NO_IMAGES, labels.numpy(), [f"class{c}" for c in range(n_classes)], list(templates))
    return rec, image_feats


def retrieval_case(n=30, d=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    captions = [[f"caption {i}-{k}" for k in range(1 + i % 3)] for i in range(n)]  # 1 to 3 captions per image
    image_feats = torch.randn(n, d, generator=g)
    table = TextTable(d, seed=seed + 100)
    # captions near their image, so recalls are neither 0 nor 1
    for i, caps in enumerate(captions):
        for c in caps:
            table.rows[c] = image_feats[i] + 1.2 * torch.randn(d, generator=g)
    return RetrievalSet("coco_val", NO_IMAGES, captions), image_feats, table


def embedded_retrieval(rec: RetrievalSet, image_feats: torch.Tensor, table: TextTable) -> EmbeddedSet:
    flat = [c for caps in rec.captions for c in caps]
    owner = torch.tensor([i for i, caps in enumerate(rec.captions) for _ in caps])
    return EmbeddedSet(rec, unit(image_feats), table.encode(flat), owner)


# ---------------------------------------------------------------------------------------------
# clip_benchmark, with a toy model on fixed features
# ---------------------------------------------------------------------------------------------


class ToyClip(torch.nn.Module):
    """encode_image: images are row indices into fixed features; encode_text: tokens index the text table."""

    def __init__(self, image_feats: torch.Tensor, table: TextTable):
        super().__init__()
        self.image_feats, self.table = image_feats, table
        self.vocab: list[str] = []

    def tokenize(self, texts) -> torch.Tensor:
        ids = []
        for t in texts:
            if t not in self.vocab:
                self.vocab.append(t)
            ids.append(self.vocab.index(t))
        return torch.tensor(ids)

    def encode_image(self, idx: torch.Tensor) -> torch.Tensor:
        return self.image_feats[idx]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table.feature(self.vocab[t]) for t in tokens.tolist()])


class IndexDataset(torch.utils.data.Dataset):
    def __init__(self, targets, classes=None):
        self.targets, self.classes = list(targets), classes

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return i, self.targets[i]


@pytest.mark.parametrize("n_classes", [6, 3])
def test_zeroshot_equals_clip_benchmark(n_classes):
    from clip_benchmark.metrics import zeroshot_classification as zc

    rec, feats = classification_case(n_classes=n_classes)
    table = TextTable(16, seed=3)
    ours = ZeroShotClassification().evaluate(ctx_of([EmbeddedSet(rec, unit(feats))], table))["cls_v1"]

    model = ToyClip(feats, table)
    loader = torch.utils.data.DataLoader(IndexDataset(rec.labels.tolist(), rec.classnames), batch_size=16)
    with compat.fixed_accuracy():
        ref = zc.evaluate(model, loader, model.tokenize, rec.classnames, rec.templates, "cpu", amp=False)
    assert ours["top1"] == pytest.approx(ref["acc1"], abs=1e-12)
    assert ours["mean_per_class_recall"] == pytest.approx(ref["mean_per_class_recall"], abs=1e-12)
    if n_classes >= 5:
        assert ours["top5"] == pytest.approx(ref["acc5"], abs=1e-12)
    else:
        assert "top5" not in ours and math.isnan(ref["acc5"])
    assert 0.0 < ours["top1"] < 1.0  # a case that can tell right from wrong


def test_class_weights_equal_clip_benchmark_classifier():
    from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier

    rec, feats = classification_case()
    table = TextTable(16, seed=4)
    model = ToyClip(feats, table)
    ref = zero_shot_classifier(model, model.tokenize, rec.classnames, rec.templates, "cpu", amp=False)
    ours = class_weights(table.encode, rec.classnames, rec.templates)
    assert torch.allclose(ours, ref.T, atol=1e-6)


def test_zeroshot_with_class_mean_text_is_nearest_class_mean():
    """Text embeddings equal to the class means of the images: zero-shot = nearest class mean, by hand."""
    g = torch.Generator().manual_seed(5)
    n_classes, d = 5, 8
    protos = torch.randn(n_classes, d, generator=g)
    labels = torch.arange(40) % n_classes
    images = unit(protos[labels] + 0.9 * torch.randn(40, d, generator=g))
    means = torch.stack([images[labels == c].mean(0) for c in range(n_classes)])
    names = [f"c{c}" for c in range(n_classes)]
    table = TextTable(d, fixed={n: means[c] for c, n in enumerate(names)})
    rec = ClassificationSet("toy", NO_IMAGES, labels.numpy(), names, ["{c}"])
    got = ZeroShotClassification().evaluate(ctx_of([EmbeddedSet(rec, images)], table))["toy"]

    unit_means = unit(means)
    correct, per_class = 0, {c: [0, 0] for c in range(n_classes)}
    in_top5 = 0
    for i in range(len(labels)):
        sims = [float(images[i] @ unit_means[c]) for c in range(n_classes)]
        best = max(range(n_classes), key=lambda c: sims[c])
        correct += best == labels[i]
        per_class[int(labels[i])][0] += best == labels[i]
        per_class[int(labels[i])][1] += 1
        in_top5 += labels[i] in sorted(range(n_classes), key=lambda c: -sims[c])[:5]
    assert got["top1"] == pytest.approx(correct / len(labels))
    assert got["top5"] == 1.0 == in_top5 / len(labels)  # 5 classes: top-5 holds every class
    assert got["mean_per_class_recall"] == pytest.approx(np.mean([a / b for a, b in per_class.values()]))
    assert 0.5 < got["top1"] < 1.0


def test_retrieval_equals_clip_benchmark():
    from clip_benchmark.datasets.builder import image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval as zr

    rec, feats, table = retrieval_case()
    ours = Retrieval().evaluate(ctx_of([embedded_retrieval(rec, feats, table)], table))["coco_val"]

    model = ToyClip(feats, table)
    loader = torch.utils.data.DataLoader(
        IndexDataset(rec.captions), batch_size=8, collate_fn=image_captions_collate_fn
    )
    ref = zr.evaluate(model, loader, model.tokenize, "cpu", amp=False, recall_k_list=[1, 5, 10])
    for k in (1, 5, 10):
        assert ours[f"text_to_image_r{k}"] == pytest.approx(ref[f"image_retrieval_recall@{k}"], abs=1e-6)
        assert ours[f"image_to_text_r{k}"] == pytest.approx(ref[f"text_retrieval_recall@{k}"], abs=1e-6)  # its means are float32
    assert 0.0 < ours["image_to_text_r1"] < ours["image_to_text_r5"] < 1.0  # a case that discriminates


def test_retrieval_matches_explicit_ranks_in_small_blocks():
    rec, feats, table = retrieval_case(n=25, seed=7)
    es = embedded_retrieval(rec, feats, table)
    got = retrieval_recalls(es.image_emb, es.pair_emb, es.pair_image_index, block=4)
    img, cap, owner = es.image_emb, es.pair_emb, es.pair_image_index.tolist()
    for k in (1, 5, 10):
        # text -> image: rank of its own image = number of images scoring higher
        t2i = [sum(float(cap[r] @ img[j]) > float(cap[r] @ img[owner[r]]) for j in range(len(img))) < k
               for r in range(len(cap))]
        i2t = []
        for i in range(len(img)):
            best = min(sum(float(img[i] @ cap[s]) > float(img[i] @ cap[r]) for s in range(len(cap)))
                       for r in range(len(cap)) if owner[r] == i)
            i2t.append(best < k)
        assert got[f"text_to_image_r{k}"] == pytest.approx(np.mean(t2i))
        assert got[f"image_to_text_r{k}"] == pytest.approx(np.mean(i2t))


def test_retrieval_with_captions_equal_to_images_is_perfect_and_same_modality_runs():
    g = torch.Generator().manual_seed(8)
    images = unit(torch.randn(20, 6, generator=g))
    rec = RetrievalSet("views", NO_IMAGES, [["view"]] * 20)
    es = EmbeddedSet(rec, images, images.clone(), torch.arange(20))
    got = Retrieval().evaluate(ctx_of([es], modality="image"))["views"]
    assert set(got.values()) == {1.0}


# ---------------------------------------------------------------------------------------------
# the numpy >= 2.4 workaround
# ---------------------------------------------------------------------------------------------


def test_compat_accuracy_by_hand():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2], [0.4, 0.35, 0.25]])
    target = torch.tensor([0, 1, 1, 2])
    # top-1 predictions 0, 2, 1, 0 -> 2 right; top-2 adds sample 1 (labels 2, 1) -> 3 right
    assert compat.accuracy(logits, target, topk=(1, 2, 3)) == [0.5, 0.75, 1.0]


def test_fixed_accuracy_restores_clip_benchmark_and_original_breaks_only_on_new_numpy():
    from clip_benchmark.metrics import zeroshot_classification as zc

    broken_numpy = tuple(int(p) for p in np.__version__.split(".")[:2]) >= (2, 4)
    assert compat.original_accuracy_works() is not broken_numpy
    original = zc.accuracy
    logits, target = torch.randn(30, 7), torch.arange(30) % 7
    with compat.fixed_accuracy():
        assert zc.accuracy(logits, target, topk=(1, 5)) == compat.accuracy(logits, target, topk=(1, 5))
        assert (zc.accuracy is compat.accuracy) is broken_numpy
    assert zc.accuracy is original
    if not broken_numpy:
        assert original(logits, target, topk=(1, 5)) == compat.accuracy(logits, target, topk=(1, 5))


# ---------------------------------------------------------------------------------------------
# arithmetic, linear probe, gap, gap shift
# ---------------------------------------------------------------------------------------------


def arithmetic_case():
    """Gallery over 4 axes (circle, square, red, blue): image = normalise(shape + colour)."""
    e = torch.eye(4)
    circle, square, red, blue = e
    gallery = unit(torch.stack([circle + red, circle + blue, square + red, square + blue]))
    table = TextTable(4, fixed={"red": red, "blue": blue, "circle": circle, "square": square})
    triplets = [
        ArithmeticTriplet(source=0, value_word="red", target_word="blue", target_ids=[1]),  # red circle -> blue circle
        ArithmeticTriplet(source=3, value_word="square", target_word="circle", target_ids=[1]),  # blue square -> blue circle
        ArithmeticTriplet(source=2, value_word="red", target_word="blue", target_ids=[1]),  # wrong answer on purpose
    ]
    return EmbeddedSet(ArithmeticSet("simat", NO_IMAGES, triplets), gallery), table


def test_arithmetic_known_answers():
    es, table = arithmetic_case()
    got = Arithmetic(lambdas=[0.25, 1.0]).evaluate(ctx_of([es], table))["simat"]
    assert set(got) == {"lambda_0_25", "lambda_1"}
    # lambda = 1: the first two queries land exactly on the target (cos 1); the third on the blue square
    assert got["lambda_1"] == {"hit1": pytest.approx(2 / 3), "hit5": 1.0}
    # lambda = 0.25: q = circle + .75 red + .25 blue is nearest to the source (excluded), then the target
    hit1 = got["lambda_0_25"]["hit1"]
    assert hit1 == pytest.approx(2 / 3)


def test_arithmetic_excludes_the_source():
    es, table = arithmetic_case()
    es.record.triplets = [ArithmeticTriplet(source=0, value_word="red", target_word="blue", target_ids=[0])]
    got = Arithmetic(lambdas=[0.25]).evaluate(ctx_of([es], table))["simat"]["lambda_0_25"]
    assert got == {"hit1": 0.0, "hit5": 0.0}  # the source is never an answer, even when it is nearest


def test_linear_probe_separable_and_against_sklearn():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(9)
    labels = np.arange(90) % 3
    protos = 3 * torch.eye(8)[:3]
    separable = unit(protos[labels] + 0.3 * torch.randn(90, 8, generator=g))
    noisy = unit(0.4 * protos[labels] + torch.randn(90, 8, generator=g))
    sets = [EmbeddedSet(ClassificationSet(n, NO_IMAGES, labels, ["a", "b", "c"], ["{c}"]), e)
            for n, e in (("sep", separable), ("noisy", noisy))]
    got = LinearProbe(test_fraction=0.4, C=2.0).evaluate(ctx_of(sets, seed=3))
    assert got["sep"] == {"accuracy": 1.0}

    train, test = split_indices(labels, 0.4, seed=3)
    assert len(test) == 36 and not set(train) & set(test)
    assert np.bincount(labels[test]).tolist() == [12, 12, 12]  # stratified
    clf = LogisticRegression(C=2.0, max_iter=1000).fit(noisy.numpy()[train], labels[train])
    assert got["noisy"]["accuracy"] == pytest.approx(clf.score(noisy.numpy()[test], labels[test]))
    assert 0.34 < got["noisy"]["accuracy"] < 1.0


def test_linear_probe_tiny_classes_fall_back_to_a_plain_split():
    labels = np.array([0, 0, 0, 0, 1, 2])  # classes 1 and 2 cannot be stratified
    train, test = split_indices(labels, 0.5, seed=0)
    assert len(train) == 3 and len(test) == 3
    es = EmbeddedSet(ClassificationSet("tiny", NO_IMAGES, labels, ["a", "b", "c"], ["{c}"]), unit(torch.randn(6, 4)))
    assert 0.0 <= LinearProbe().evaluate(ctx_of([es]))["tiny"]["accuracy"] <= 1.0


def test_gap_evaluation_uses_first_caption_pairs_and_named_set():
    rec, feats, table = retrieval_case()
    es = embedded_retrieval(rec, feats, table)
    other = EmbeddedSet(RetrievalSet("other", NO_IMAGES, [["o"]] * 30), es.image_emb, unit(torch.randn(30, 12)), torch.arange(30))
    ctx = ctx_of([EmbeddedSet(ClassificationSet("c", NO_IMAGES, np.zeros(3), ["a"], ["{c}"]), unit(torch.randn(3, 12))), es, other], table, seed=4)
    first = [rows[0] for rows in rec.captions]
    want = harness.gap_metrics(es.image_emb, table.encode(first), seed=4)
    assert Gap().evaluate(ctx) == want
    assert Gap(set="other").evaluate(ctx) == harness.gap_metrics(other.image_emb, other.pair_emb, seed=4)
    with pytest.raises(Skip, match="no paired set named 'nope'"):
        Gap(set="nope").evaluate(ctx)
    sampled = Gap(max_pairs=100, separability_max_pairs=20).evaluate(ctx)
    assert sampled["pairs_sampled"] == 100.0 and sampled["separability_pairs"] == 20.0


def gap_shift_case():
    """A paired set with a gap along axis 0 and a classification set over the same space."""
    g = torch.Generator().manual_seed(10)
    d, n = 10, 40
    axis = torch.zeros(d)
    axis[0] = 1.5
    z = torch.randn(n, d, generator=g)
    rec = RetrievalSet("pairs", NO_IMAGES, [[f"t{i}"] for i in range(n)])
    table = TextTable(d, fixed={f"t{i}": z[i] - axis for i in range(n)})
    es = EmbeddedSet(rec, unit(z + axis + 0.3 * torch.randn(n, d, generator=g)), table.encode([f"t{i}" for i in range(n)]), torch.arange(n))
    labels = np.arange(n) % 4
    names = [f"k{c}" for c in range(4)]
    for c, name in enumerate(names):
        table.rows[name] = z[labels == c].mean(0) - axis
    cls = EmbeddedSet(ClassificationSet("cls", NO_IMAGES, labels, names, ["{c}"]), es.image_emb[:n])
    return [es, cls], table


def test_gap_shift_zero_delta_and_measured_gap():
    sets, table = gap_shift_case()
    ctx = ctx_of(sets, table)
    got = GapShift(deltas=[0.0, 0.5]).evaluate(ctx)
    assert set(got) == {"delta_0", "delta_0_5", "measured_gap"}
    gap = harness.gap_metrics(*sets[0].paired())["centroid_distance"]
    assert got["delta_0"]["centroid_distance"] == pytest.approx(gap, abs=1e-6)
    assert got["measured_gap"]["delta"] == pytest.approx(gap, abs=1e-6)
    r = Retrieval().evaluate(ctx)["pairs"]
    z = ZeroShotClassification().evaluate(ctx)["cls"]
    assert got["delta_0"]["image_to_text_r1"] == r["image_to_text_r1"]
    assert got["delta_0"]["text_to_image_r1"] == r["text_to_image_r1"]
    assert got["delta_0"]["zeroshot_top1"] == z["top1"]
    # shifting by the measured gap closes most of it; a negative delta widens it
    assert got["measured_gap"]["centroid_distance"] < 0.25 * gap
    assert GapShift(deltas=[-0.5], include_measured_gap=False).evaluate(ctx)["delta_m0_5"]["centroid_distance"] > gap


def test_gap_shift_by_hand():
    sets, table = gap_shift_case()
    es = sets[0]
    x, y = es.image_emb.double(), es.pair_emb.double()
    g = x.mean(0) - y.mean(0)
    u = g / g.norm()
    delta = 0.7
    xs, ys = F.normalize(x - delta / 2 * u, dim=-1), F.normalize(y + delta / 2 * u, dim=-1)
    got = GapShift(deltas=[delta], include_measured_gap=False).evaluate(ctx_of(sets, table))["delta_0_7"]
    assert got["centroid_distance"] == pytest.approx((xs.mean(0) - ys.mean(0)).norm().item(), abs=1e-6)
    sims = xs @ ys.T
    i2t = np.mean([int(sims[i].argmax()) == i for i in range(len(xs))])
    assert got["image_to_text_r1"] == pytest.approx(i2t)


def test_same_modality_control_skips_text_evaluations():
    sets, _ = gap_shift_case()
    es, cls = sets
    view = EmbeddedSet(RetrievalSet("pairs", NO_IMAGES, es.record.captions), es.image_emb, es.pair_emb, es.pair_image_index)
    arith, _ = arithmetic_case()
    ctx = ctx_of([view, cls, arith], None, modality="image")
    for evaluation in (ZeroShotClassification(), Arithmetic()):
        with pytest.raises(Skip, match="text tower"):
            evaluation.evaluate(ctx)
    assert set(Gap().evaluate(ctx)) >= {"centroid_distance", "linear_separability"}
    assert set(Retrieval().evaluate(ctx)) == {"pairs"}
    assert set(LinearProbe().evaluate(ctx)) == {"cls"}
    shifted = GapShift().evaluate(ctx)
    assert all("zeroshot_top1" not in entry for entry in shifted.values())


def test_skip_when_nothing_applies():
    rec, feats = classification_case()
    only_cls = ctx_of([EmbeddedSet(rec, unit(feats))], TextTable(16))
    for evaluation in (Gap(), Retrieval(), Arithmetic(), GapShift()):
        with pytest.raises(Skip):
            evaluation.evaluate(only_cls)
    es, table = arithmetic_case()
    for evaluation in (ZeroShotClassification(), LinearProbe()):
        with pytest.raises(Skip, match="no classification sets"):
            evaluation.evaluate(ctx_of([es], table))


# ---------------------------------------------------------------------------------------------
# the plugin surface: registration, params, result keys
# ---------------------------------------------------------------------------------------------


def leaves(d: dict, prefix=()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def test_registered_results_have_dot_free_keys_float_leaves_and_metric_info():
    rec, feats = classification_case()
    r_rec, r_feats, table = retrieval_case(d=16)
    arith, words = arithmetic_case()
    sets = [EmbeddedSet(rec, unit(feats)), embedded_retrieval(r_rec, r_feats, table)]
    for name in ("gap", "zeroshot_classification", "retrieval", "linear_probe", "gap_shift", "arithmetic"):
        evaluation = harness.create_evaluation(name)
        ctx = ctx_of([arith], words) if name == "arithmetic" else ctx_of(sets, table)
        result = evaluation.evaluate(ctx)
        for path, value in leaves(result):
            assert all("." not in key for key in path), (name, path)
            assert isinstance(value, float), (name, path, value)
            assert path[-1] in evaluation.metric_info, (name, path)
        assert {i.group for i in evaluation.metric_info.values()} <= {"gap", "downstream"}
    assert "cls_v1" in harness.create_evaluation("zeroshot_classification").evaluate(ctx_of(sets, table))


def test_params_are_validated():
    assert harness.create_evaluation("arithmetic", lambdas=[1.0]).lambdas == [1.0]
    with pytest.raises(ValueError, match="test_fraction"):
        harness.create_evaluation("linear_probe", test_fraction=1.5)
    with pytest.raises(ValueError, match="lambdas"):
        harness.create_evaluation("arithmetic", lambdas=[])
    with pytest.raises(ValueError, match="max_pairs"):
        harness.create_evaluation("gap", max_pairs=0)
    with pytest.raises(ValueError, match="deltas"):
        harness.create_evaluation("gap_shift", deltas=[0.1, 0.1])
    with pytest.raises(HarnessError, match="lambdas"):
        harness.create_evaluation("arithmetic", lambdas="lots")


def test_number_keys():
    assert [number_key("lambda", v) for v in (0.5, 1.0, 2.0)] == ["lambda_0_5", "lambda_1", "lambda_2"]
    assert number_key("delta", -0.25) == "delta_m0_25"
