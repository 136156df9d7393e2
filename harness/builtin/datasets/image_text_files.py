"""The ``image_text_files`` dataset plugin: image-caption pairs from local files, in open_clip's formats.

- A CSV/TSV table (open_clip's ``--csv-img-key filepath --csv-caption-key title``): one row per
  pair; relative image paths are resolved against the table's folder; rows naming the same
  image give that image several captions.
- WebDataset shards, a brace pattern such as ``data/{00000..00009}.tar`` (``::`` joins several
  patterns): each sample is the members sharing a key, an image (.jpg/.jpeg/.png/.webp) and a
  caption (.txt, its whole stripped text).

Images are decoded once (a thread pool), resized on their shorter side and centre-cropped to
``image_size`` (bicubic), and kept in memory as one uint8 array of N x S x S x 3 bytes (150 KB an
image at 224). Files are read safely (``files.py``): local regular files only, shards through
``tarfile`` reading only image and ``.txt`` members, never a decoder that runs code. Unreadable
images, empty captions and malformed rows are skipped, counted in ``info()`` and reported in one
warning line, never silently. A seeded random ``eval_fraction`` of
the *images* (so no image is in both splits) forms the ``retrieval`` evaluation set.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from harness.api import EvalSet, RetrievalSet, bind_params
from harness.builtin.datasets.files import (
    IMAGE_EXTENSIONS,
    LOCAL_PATH,
    MAX_FILES,
    count_braces,
    decode_all,
    expand_braces,
    first_image,
    regular_file,
    shard_samples,
)

SKIP_REASONS = ("unreadable_image", "empty_caption", "missing_image_member", "bad_row")


class _Loaded:
    """What the files held: one image per row of ``images`` with its captions, plus skip counts."""

    def __init__(self) -> None:
        self.sources: list[str | bytes] = []
        self.names: list[str] = []
        self.captions: list[list[str]] = []
        self.rows = 0
        self.skipped = {reason: 0 for reason in SKIP_REASONS}
        self.first_skipped: dict[str, str] = {}

    def skip(self, reason: str, where: str, n: int = 1) -> None:
        self.skipped[reason] += n
        self.first_skipped.setdefault(reason, where)


class FilePairs:
    def __init__(self, images: np.ndarray, captions: list[list[str]]):
        self.images = images
        self.captions = captions

    def __len__(self) -> int:
        return len(self.captions)

    def get_batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        indices = np.asarray(indices, dtype=np.int64)
        counts = np.array([len(self.captions[i]) for i in indices])
        pick = np.floor(rng.random(len(indices)) * counts).astype(np.int64)
        return self.images[indices], [self.captions[i][k] for i, k in zip(indices, pick)]


class ImageTextFiles:
    """Image-caption pairs from local files: a CSV/TSV of paths and captions, or webdataset shards."""

    supplies: tuple[str, ...] = ()  # no hard-negative captions

    def __init__(
        self,
        path: Annotated[str, Field(min_length=1, max_length=4096, pattern=LOCAL_PATH, description=(
            "a local CSV/TSV file, or webdataset shards such as data/{00000..00009}.tar ('::' joins patterns)"))],
        image_key: Annotated[str, Field(min_length=1, max_length=200, description="the table's image-path column")] = "filepath",
        caption_key: Annotated[str, Field(min_length=1, max_length=200, description="the table's caption column")] = "title",
        separator: Annotated[str | None, Field(min_length=1, max_length=1, description=(
            "the table's one-character separator (default: tab for .tsv, else comma)"))] = None,
        image_size: Annotated[int, Field(ge=8, le=1024, description="side of the square images after resize and crop")] = 224,
        eval_fraction: Annotated[float, Field(gt=0, lt=1, description=(
            "fraction of the images (not pairs) held out as the retrieval set"))] = 0.1,
        seed: Annotated[int, Field(ge=0, le=2**31 - 1, description="seed of the train/eval split")] = 0,
    ):
        self.check_params(path=path)
        self.path = path
        self.image_key = image_key
        self.caption_key = caption_key
        self.image_size = image_size
        self.eval_fraction = eval_fraction
        self.seed = seed
        files = [f for part in path.split("::") for f in expand_braces(part)]
        self.shards = files if all(f.endswith(".tar") for f in files) else None
        for f in files:
            regular_file(f)
        if self.shards is None:
            if len(files) != 1:
                raise ValueError(f"path: expected one CSV/TSV file or .tar shards, got {len(files)} files")
            self.table = Path(files[0])
            self.separator = separator or ("\t" if self.table.suffix.lower() == ".tsv" else ",")
            self._check_header()
        self._data: tuple[np.ndarray, list[list[str]], _Loaded] | None = None

    @classmethod
    def check_params(cls, **params: Any) -> None:
        """What the annotations cannot check, without touching a file (``harness validate`` calls it):
        the path's brace patterns name at most ``MAX_FILES`` files in all."""
        path = bind_params(cls, params)["path"]
        if sum(count_braces(part) for part in path.split("::")) > MAX_FILES:
            raise ValueError(f"path: {path[:60]!r} names more than {MAX_FILES:,} files")

    # ------------------------------------------------------------------------------------ reading
    def _check_header(self) -> None:
        with open(self.table, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh, delimiter=self.separator), [])
        for key, param in ((self.image_key, "image_key"), (self.caption_key, "caption_key")):
            if key not in header:
                raise ValueError(
                    f"{param}: {self.table} has no column {key!r} (columns: {', '.join(header) or 'none'})"
                )

    def _read_table(self, loaded: _Loaded) -> None:
        folder = self.table.parent
        where: dict[str, int] = {}
        with open(self.table, newline="", encoding="utf-8") as fh:
            for line, row in enumerate(csv.DictReader(fh, delimiter=self.separator), start=2):
                loaded.rows += 1
                image, text = row.get(self.image_key), row.get(self.caption_key)
                if not image or text is None or None in row:  # short, long or image-less row
                    loaded.skip("bad_row", f"{self.table.name} line {line}")
                    continue
                text = text.strip()
                if not text:
                    loaded.skip("empty_caption", f"{self.table.name} line {line}")
                    continue
                full = str(Path(image) if Path(image).is_absolute() else folder / image)
                if full not in where:
                    where[full] = len(loaded.sources)
                    loaded.sources.append(full)
                    loaded.names.append(image)
                    loaded.captions.append([])
                loaded.captions[where[full]].append(text)

    def _read_shards(self, loaded: _Loaded) -> None:
        for shard in self.shards:
            name = Path(shard).name
            for key, members in shard_samples(shard, IMAGE_EXTENSIONS + ("txt",)):
                loaded.rows += 1
                image = first_image(members)
                if image is None:
                    loaded.skip("missing_image_member", f"{name}:{key}")
                    continue
                text = members.get("txt", b"").decode("utf-8", errors="replace").strip()  # no .txt: empty
                if not text:
                    loaded.skip("empty_caption", f"{name}:{key}")
                    continue
                loaded.sources.append(image)
                loaded.names.append(f"{name}:{key}")
                loaded.captions.append([text])

    def _load(self) -> tuple[np.ndarray, list[list[str]], _Loaded]:
        if self._data is not None:
            return self._data
        loaded = _Loaded()
        (self._read_shards if self.shards else self._read_table)(loaded)
        arrays = decode_all(loaded.sources, self.image_size)
        keep = [i for i, a in enumerate(arrays) if a is not None]
        for i, a in enumerate(arrays):
            if a is None:
                loaded.skip("unreadable_image", loaded.names[i], len(loaded.captions[i]))
        empty = np.zeros((0, self.image_size, self.image_size, 3), np.uint8)
        images = np.stack([arrays[i] for i in keep]) if keep else empty
        captions = [loaded.captions[i] for i in keep]
        loaded.sources = []  # drop the encoded bytes
        if sum(loaded.skipped.values()):
            details = "; ".join(
                f"{reason.replace('_', ' ')}: {n} (first: {loaded.first_skipped[reason]})"
                for reason, n in loaded.skipped.items() if n
            )
            warnings.warn(f"image_text_files {self.path}: skipped {details}", stacklevel=3)
        if len(captions) < 2:
            raise ValueError(f"path: {self.path} has {len(captions)} usable image-caption pairs; need at least 2")
        self._data = (images, captions, loaded)
        return self._data

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng([self.seed, 0]).permutation(n)
        n_eval = min(n - 1, max(1, int(round(self.eval_fraction * n))))
        return np.sort(order[n_eval:]), np.sort(order[:n_eval])

    # ---------------------------------------------------------------------------------- protocol
    def train_pairs(self) -> FilePairs:
        images, captions, _ = self._load()
        train, _ = self._split(len(captions))
        return FilePairs(images[train], [captions[i] for i in train])

    def eval_sets(self) -> list[EvalSet]:
        images, captions, _ = self._load()
        _, held = self._split(len(captions))
        return [RetrievalSet("retrieval", images[held], [captions[i] for i in held])]

    def info(self) -> dict[str, Any]:
        images, captions, loaded = self._load()
        train, held = self._split(len(captions))
        return {
            "rows": loaded.rows,
            "images": len(captions),
            "pairs": sum(len(c) for c in captions),
            "train_images": len(train),
            "eval_images": len(held),
            **{f"skipped_{reason}": n for reason, n in loaded.skipped.items()},
        }
