"""Real-data datasets on files the tests write: CSV/TSV, webdataset shards, clip_benchmark, digits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import harness
from conftest import write_tar
from harness.builtin.datasets.clip_benchmark_sets import ClipBenchmarkSets
from harness.builtin.datasets.digits import NAMES, DigitsDataset
from harness.builtin.datasets.image_text_files import ImageTextFiles, expand_braces
from harness.types import ClassificationSet, Dataset, RetrievalSet

RED, BLUE = (200, 20, 20), (20, 20, 200)


def split_image(w: int = 64, h: int = 32) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = RED
    arr[:, w // 2:] = BLUE
    return Image.fromarray(arr)


def solid(value: int, size=(20, 12)) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8))


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()





# ------------------------------------------------------------------------------------ CSV/TSV


@pytest.fixture
def csv_dir(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    split_image().save(tmp_path / "img" / "split.png")
    for i in range(6):
        solid(10 * i).save(tmp_path / "img" / f"s{i}.jpg", quality=95)
    (tmp_path / "img" / "broken.jpg").write_bytes(b"this is not a jpeg")
    rows = [
        "filepath,title,extra",
        "img/split.png,red and blue halves,x",
        "img/split.png,another caption of the split image,x",
        *[f"img/s{i}.jpg,grey level {10 * i},x" for i in range(6)],
        f"{tmp_path}/img/s0.jpg,absolute path row,x",
        "img/broken.jpg,a broken image,x",
        "img/missing.jpg,a missing image,x",
        "img/s1.jpg,   ,x",
        'img/s2.jpg,"too, many, fields",x,y',
        ",no image path,x",
    ]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_csv_reads_pairs_and_counts_every_skipped_row(csv_dir):
    ds = ImageTextFiles(str(csv_dir / "pairs.csv"), image_size=16, eval_fraction=0.25)
    assert isinstance(ds, Dataset)
    expected = (r"skipped unreadable image: 2 \(first: img/broken\.jpg\); empty caption: 1 .*; "
                r"bad row: 2 \(first: pairs\.csv line 14\)")
    with pytest.warns(UserWarning, match=expected):
        info = ds.info()
    assert info == {
        "rows": 14,
        "images": 7,  # split.png and s0..s5 (s0 also under its absolute path: the same file, one image)
        "pairs": 9,
        "train_images": 5,
        "eval_images": 2,
        "skipped_unreadable_image": 2,
        "skipped_empty_caption": 1,
        "skipped_missing_image_member": 0,
        "skipped_bad_row": 2,
    }
    pairs, (held,) = ds.train_pairs(), ds.eval_sets()
    assert isinstance(held, RetrievalSet) and held.name == "retrieval"
    assert len(pairs) + len(held) == 7
    everything = pairs.captions + held.captions
    assert sorted(map(tuple, everything)) == sorted(
        [("red and blue halves", "another caption of the split image"), ("grey level 0", "absolute path row")]
        + [(f"grey level {10 * i}",) for i in range(1, 6)]
    )
    images = np.concatenate([pairs.images, held.images])
    assert images.shape == (7, 16, 16, 3) and images.dtype == np.uint8
    # shorter side to 16, centre crop: the 64x32 image keeps its middle 32 columns, half red, half blue
    split = images[[i for i, caps in enumerate(everything) if "red and blue halves" in caps][0]]
    assert np.abs(split[8, 2].astype(int) - RED).max() <= 2 and np.abs(split[8, 13].astype(int) - BLUE).max() <= 2
    grey = images[[i for i, caps in enumerate(everything) if caps == ["grey level 50"]][0]]
    assert np.abs(grey.astype(int) - 50).max() <= 3  # JPEG round trip of a flat grey


def test_csv_batches_pick_among_an_images_captions(csv_dir):
    ds = ImageTextFiles(str(csv_dir / "pairs.csv"), image_size=16, eval_fraction=0.25, seed=0)
    with pytest.warns(UserWarning):
        pairs = ds.train_pairs()
    rng = np.random.default_rng(0)
    seen: dict[int, set] = {}
    for _ in range(40):
        idx = rng.integers(0, len(pairs), size=4)
        images, texts = pairs.get_batch(idx, rng)
        assert images.shape == (4, 16, 16, 3)
        for i, text in zip(idx, texts):
            assert text in pairs.captions[i]
            seen.setdefault(int(i), set()).add(text)
    assert all(seen[i] == set(pairs.captions[i]) for i in seen)  # both captions of a 2-caption image drawn
    a = pairs.get_batch(np.arange(len(pairs)), np.random.default_rng(3))
    b = pairs.get_batch(np.arange(len(pairs)), np.random.default_rng(3))
    assert a[1] == b[1] and a[0].tobytes() == b[0].tobytes()


def test_split_is_seeded_and_disjoint(csv_dir):
    def held(seed):
        ds = ImageTextFiles(str(csv_dir / "pairs.csv"), image_size=16, eval_fraction=0.5, seed=seed)
        with pytest.warns(UserWarning):
            return {tuple(c) for c in ds.eval_sets()[0].captions}, {tuple(c) for c in ds.train_pairs().captions}

    (e0, t0), (e0b, _), (e1, _) = held(0), held(0), held(1)
    assert e0 == e0b and not e0 & t0 and len(e0) == 4 and len(t0) == 3
    assert any(held(s)[0] != e0 for s in (1, 2, 3))


def test_tsv_separator_from_extension_and_custom_columns(tmp_path):
    solid(100).save(tmp_path / "a.png")
    solid(200).save(tmp_path / "b.png")
    (tmp_path / "pairs.tsv").write_text("caption\timage\na caption, with a comma\ta.png\nsecond\tb.png\n")
    ds = harness.create_dataset("image_text_files", path=str(tmp_path / "pairs.tsv"), image_key="image",
                                caption_key="caption", image_size=8, eval_fraction=0.5)
    caps = ds.train_pairs().captions + ds.eval_sets()[0].captions
    assert sorted(caps) == [["a caption, with a comma"], ["second"]]
    assert ds.info()["skipped_bad_row"] == 0


def test_csv_errors_name_the_file_or_column(tmp_path):
    with pytest.raises(ValueError, match=r"no such file .*nope\.csv"):
        ImageTextFiles(str(tmp_path / "nope.csv"))
    (tmp_path / "t.csv").write_text("path,text\na.png,hello\n")
    with pytest.raises(ValueError, match=r"image_key: .*t\.csv has no column 'filepath' \(columns: path, text\)"):
        ImageTextFiles(str(tmp_path / "t.csv"))
    with pytest.raises(ValueError, match="eval_fraction"):
        harness.create_dataset("image_text_files", path=str(tmp_path / "t.csv"), image_key="path",
                               caption_key="text", eval_fraction=1.0)
    ds = ImageTextFiles(str(tmp_path / "t.csv"), image_key="path", caption_key="text")
    with pytest.raises(ValueError, match="0 usable image-caption pairs"):
        with pytest.warns(UserWarning, match="unreadable"):
            ds.train_pairs()


# ------------------------------------------------------------------------------- webdataset


def test_brace_expansion():
    assert expand_braces("d/{00000..00002}.tar") == ["d/00000.tar", "d/00001.tar", "d/00002.tar"]
    assert expand_braces("{a,b}-{8..10}") == ["a-8", "a-9", "a-10", "b-8", "b-9", "b-10"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_webdataset_shards_with_broken_samples(tmp_path):
    write_tar(tmp_path / "00000.tar", {
        "a.jpg": encoded(solid(30), "JPEG"), "a.txt": b"  first caption \n",
        "b.png": encoded(split_image(), "PNG"), "b.txt": b"red and blue",
        "c.txt": b"a caption without an image",
        "d.jpg": encoded(solid(90), "JPEG"), "d.txt": b"   ",
    })
    write_tar(tmp_path / "00001.tar", {
        "e.jpg": b"\xff\xd8 truncated garbage", "e.txt": b"broken image",
        "f.webp": encoded(solid(150), "WEBP"), "f.txt": b"webp image",
        "sub/g.jpeg": encoded(solid(210), "JPEG"), "sub/g.txt": b"in a folder",
        "h.jpg": encoded(solid(240), "JPEG"), "h.json": b"{}",
    })
    ds = ImageTextFiles(str(tmp_path / "{00000..00001}.tar"), image_size=12, eval_fraction=0.2, seed=1)
    with pytest.warns(UserWarning, match=r"unreadable image: 1 \(first: 00001\.tar:e\); empty caption: 2 \(first: "
                                         r"00000\.tar:d\); missing image member: 1 \(first: 00000\.tar:c\)"):
        info = ds.info()
    assert info["rows"] == 8 and info["images"] == 4 and info["pairs"] == 4
    skipped = (info["skipped_unreadable_image"], info["skipped_empty_caption"], info["skipped_missing_image_member"])
    assert skipped == (1, 2, 1)
    caps = [c[0] for c in ds.train_pairs().captions + ds.eval_sets()[0].captions]
    assert sorted(caps) == ["first caption", "in a folder", "red and blue", "webp image"]
    images = np.concatenate([ds.train_pairs().images, ds.eval_sets()[0].images])
    levels = {cap: int(np.median(img)) for cap, img in zip(caps, images)}
    assert abs(levels["first caption"] - 30) <= 3 and abs(levels["webp image"] - 150) <= 3
    with pytest.raises(ValueError, match=r"no such file .*00002\.tar"):
        ImageTextFiles(str(tmp_path / "{00000..00002}.tar"))


# --------------------------------------------------------------------------- clip_benchmark


def write_wds_classification(root: Path, n: int = 7) -> None:
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("2")
    (root / "classnames.txt").write_text("cat\ndog\nbird\n")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\na blurry photo of a {c}.\n")
    for shard in range(2):
        members = {}
        for i in range(shard * n, (shard + 1) * n):
            members[f"s{i:04d}.png"] = encoded(solid(10 * i, size=(24, 16)), "PNG")
            members[f"s{i:04d}.cls"] = str(i % 3).encode()
        write_tar(root / "test" / f"{shard}.tar", members)


def test_clip_benchmark_wds_classification(tmp_path):
    root = tmp_path / "wds_tiny"
    write_wds_classification(root)
    ds = harness.create_dataset("clip_benchmark", dataset="wds/vtab/tiny", root=str(root), image_size=16)
    (cls,) = ds.eval_sets()
    assert isinstance(cls, ClassificationSet) and cls.name == "tiny"
    assert cls.classnames == ["cat", "dog", "bird"]
    assert cls.templates == ["a photo of a {c}.", "a blurry photo of a {c}."]
    assert cls.labels.tolist() == [i % 3 for i in range(14)]
    assert cls.images.shape == (14, 16, 16, 3) and cls.images[:, 8, 8, 0].tolist() == [10 * i for i in range(14)]
    assert ds.info() == {"task": "zeroshot_classification", "eval_size": 14}
    with pytest.raises(ValueError, match=r"evaluation sets only.*steps: 0"):
        ds.train_pairs()
    limited = ClipBenchmarkSets("wds/vtab/tiny", str(root), image_size=16, limit=5).eval_sets()[0]
    assert limited.labels.tolist() == [0, 1, 2, 0, 1]


def test_clip_benchmark_wds_retrieval_and_root_placeholder(tmp_path):
    root = tmp_path / "cb-wds-caps"
    (root / "test").mkdir(parents=True)
    (root / "test" / "nshards.txt").write_text("1")
    (root / "dataset_type.txt").write_text("retrieval\n")
    write_tar(root / "test" / "0.tar", {
        "a.jpg": encoded(solid(40), "JPEG"), "a.txt": b"a grey square\na flat grey image",
        "b.jpg": encoded(solid(220), "JPEG"), "b.txt": b"a light square",
    })
    ds = ClipBenchmarkSets("wds/caps", str(tmp_path / "cb-{dataset_cleaned}"), image_size=8)
    assert ds.root == str(root)
    (ret,) = ds.eval_sets()
    assert isinstance(ret, RetrievalSet) and ret.name == "caps" and ds.task == "zeroshot_retrieval"
    assert ret.captions == [["a grey square", "a flat grey image"], ["a light square"]]
    assert ret.images.shape == (2, 8, 8, 3)


def test_clip_benchmark_errors(tmp_path):
    with pytest.raises(ValueError, match="root: no such folder"):
        ClipBenchmarkSets("wds/vtab/tiny", str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"could not read 'wds/vtab/tiny' .*no such file .*nshards\.txt"):
        ClipBenchmarkSets("wds/vtab/tiny", str(tmp_path / "empty")).eval_sets()
    with pytest.raises(ValueError, match="limit"):
        harness.create_dataset("clip_benchmark", dataset="wds/vtab/tiny", root=str(tmp_path / "empty"), limit=0)


# ------------------------------------------------------------------------------------ digits


def test_digits_sets_are_sane():
    ds = harness.create_dataset("digits", image_size=16, eval_fraction=0.2, seed=0)
    pairs = ds.train_pairs()
    digit, retrieval = ds.eval_sets()
    assert len(pairs) + len(digit) == 1797 and len(digit) == len(retrieval)
    counts = np.bincount(ds.labels, minlength=10)
    assert np.bincount(digit.labels, minlength=10).tolist() == [round(0.2 * c) for c in counts]  # stratified
    assert not set(ds.train_idx) & set(ds.eval_idx)
    assert digit.classnames == NAMES and all("{c}" in t for t in digit.templates)
    images, texts = pairs.get_batch(np.arange(50), np.random.default_rng(0))
    assert images.shape == (50, 16, 16, 3) and images.dtype == np.uint8
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()
    for label, text in zip(pairs.labels[:50], texts):
        assert NAMES[label] in text.split() or str(label) in text.replace(",", " ").split()
    for label, caps in zip(digit.labels, retrieval.captions):
        assert len(caps) == len(set(caps)) == 3
        assert all(NAMES[label] in c.split() or str(label) in c.replace(",", " ").split() for c in caps)
    assert (digit.images == retrieval.images).all()


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Reference 1-D bilinear resampling (half-pixel centres, source index clamped at the edges)."""
    w = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        x0 = min(int(np.floor(x)), n_in - 1)
        x1 = min(x0 + 1, n_in - 1)
        w[i, x0] += 1 - (x - x0)
        w[i, x1] += x - x0
    return w


def test_digits_pixels_follow_the_original():
    from sklearn.datasets import load_digits

    raw = load_digits().images
    ds = DigitsDataset(image_size=20, seed=0)
    w = bilinear_matrix(8, 20)
    expected = np.einsum("ij,njk,lk->nil", w, raw / 16, w) * 255
    assert np.abs(ds.images[..., 0].astype(float) - expected).max() <= 1.0
    other = DigitsDataset(image_size=32, seed=1)
    assert not np.array_equal(other.eval_idx, ds.eval_idx)
    assert np.array_equal(DigitsDataset(image_size=32, seed=0).eval_idx, ds.eval_idx)
    with pytest.raises(ValueError, match="eval_fraction"):
        harness.create_dataset("digits", eval_fraction=0.0)
