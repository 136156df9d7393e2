"""The ``clip_benchmark`` dataset plugin: evaluation sets in clip_benchmark's webdataset layout.

clip_benchmark publishes its evaluation sets as webdataset folders (``wds/<name>``)::

    root/{split}/nshards.txt          the number of shards n
    root/{split}/0.tar ... {n-1}.tar  samples: an image (.webp/.png/.jpg/.jpeg) with a .cls label
                                      (classification) or a .txt of captions, one per line (retrieval)
    root/classnames.txt               one class name per line (classification)
    root/zeroshot_classification_templates.txt   one prompt template with {c} per line
    root/dataset_type.txt             "retrieval" for retrieval sets (default: classification)

They are read here with the harness's own safe reader (``files.py``), not with clip_benchmark's
builder: that builder shells out to ``curl`` for any path containing ``://`` and decodes shards with
webdataset's default handlers, which unpickle ``.pyd``/``.pickle`` members and ``torch.load`` ``.pth``
ones; its non-webdataset builders read torchvision formats that unpickle too (CIFAR). So a suite
names ``wds/<name>`` only, ``root`` is a local folder (``{dataset}`` and ``{dataset_cleaned}``
placeholders as in clip_benchmark's CLI), and ``split`` a plain folder name; all three are checked
before anything is read. Nothing is ever downloaded. Images are resized on the shorter side and
centre-cropped to ``image_size``. There is no training split: use it with ``train: {steps: 0}`` to
evaluate a pretrained encoder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from harness.api import ClassificationSet, EvalSet, RetrievalSet
from harness.builtin.datasets.files import (
    IMAGE_EXTENSIONS,
    LOCAL_PATH,
    decode_all,
    first_image,
    read_text,
    shard_samples,
)

TASKS = ("zeroshot_classification", "zeroshot_retrieval")
MAX_SHARDS = 100_000


def set_name(dataset: str) -> str:
    """The evaluation set's name (a metric key): the last part of the dataset name, e.g. ``cifar10``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dataset.rstrip("/").split("/")[-1])


class ClipBenchmarkSets:
    """Evaluation sets (zero-shot classification or retrieval) in clip_benchmark's webdataset layout, local only."""

    supplies: tuple[str, ...] = ()  # no hard-negative captions

    def __init__(
        self,
        dataset: Annotated[str, Field(max_length=200, pattern=r"^wds/[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$",
                                      description="a clip_benchmark webdataset name, wds/<name>, e.g. wds/vtab/cifar10")],
        root: Annotated[str, Field(min_length=1, max_length=4096, pattern=LOCAL_PATH, description=(
            "the local folder holding it; may contain {dataset} and {dataset_cleaned} (the name with '/' -> '-')"))],
        split: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", description=(
            "the split folder under root, e.g. test"))] = "test",
        task: Annotated[Literal["auto", "zeroshot_classification", "zeroshot_retrieval"], Field(description=(
            "auto: read root/dataset_type.txt (retrieval, else classification)"))] = "auto",
        limit: Annotated[int | None, Field(ge=1, le=10**9, description="read at most this many samples (null: all)")] = None,
        image_size: Annotated[int, Field(ge=8, le=1024, description="side of the square images after resize and crop")] = 224,
    ):
        self.dataset = dataset
        self.root = root.replace("{dataset_cleaned}", dataset.replace("/", "-")).replace("{dataset}", dataset)
        if not Path(self.root).is_dir():
            raise ValueError(f"root: no such folder {self.root!r} (clip_benchmark data is never downloaded here)")
        self.split = split
        self.task = self._resolve_task(task)
        self.limit = limit
        self.image_size = image_size
        self._sets: list[EvalSet] | None = None

    def _resolve_task(self, task: str) -> str:
        if task != "auto":
            return task
        kind_file = Path(self.root) / "dataset_type.txt"
        kind = read_text(kind_file, "dataset").strip().lower() if kind_file.exists() else "classification"
        if kind not in ("classification", "retrieval"):
            raise ValueError(f"dataset: {kind_file} says {kind[:40]!r}; only classification and retrieval are supported")
        return "zeroshot_retrieval" if kind == "retrieval" else "zeroshot_classification"

    def train_pairs(self):
        raise ValueError(
            f"dataset 'clip_benchmark' ({self.dataset}) has evaluation sets only, no training pairs; "
            "use it with train: {steps: 0} to evaluate a pretrained encoder"
        )

    def _lines(self, name: str) -> list[str]:
        return [line.strip() for line in read_text(Path(self.root) / name, "dataset").splitlines() if line.strip()]

    def _shards(self) -> list[Path]:
        folder = Path(self.root) / self.split
        text = read_text(folder / "nshards.txt", "dataset").strip()
        if not re.fullmatch(r"\d{1,6}", text) or not 1 <= int(text) <= MAX_SHARDS:
            raise ValueError(f"dataset: {folder / 'nshards.txt'} must hold a shard count in [1, {MAX_SHARDS}], "
                             f"got {text[:20]!r}")
        return [folder / f"{i}.tar" for i in range(int(text))]

    def _items(self) -> list[tuple[bytes, bytes]]:
        """(image bytes, label or captions bytes) of the first ``limit`` complete samples."""
        target = "txt" if self.task == "zeroshot_retrieval" else "cls"
        limit = self.limit if self.limit is not None else float("inf")
        items: list[tuple[bytes, bytes]] = []
        for shard in self._shards():
            for _, members in shard_samples(shard, IMAGE_EXTENSIONS + (target,)):
                image = first_image(members)
                if image is not None and target in members:
                    items.append((image, members[target]))
                if len(items) >= limit:
                    return items
        return items

    def eval_sets(self) -> list[EvalSet]:
        if self._sets is not None:
            return list(self._sets)
        try:
            items = self._items()
        except ValueError as exc:
            raise ValueError(f"could not read {self.dataset!r} from root {self.root!r} (split {self.split!r}): {exc}") from None
        if not items:
            raise ValueError(f"dataset: {self.dataset!r} split {self.split!r} under {self.root!r} is empty")
        decoded = decode_all([image for image, _ in items], self.image_size)
        if any(a is None for a in decoded):
            bad = sum(a is None for a in decoded)
            raise ValueError(f"dataset: {bad} image(s) of {self.dataset!r} under {self.root!r} cannot be decoded")
        images = np.stack(decoded)
        name = set_name(self.dataset)
        tags = {"source": "clip_benchmark", "dataset": self.dataset, "split": self.split}
        if self.task == "zeroshot_retrieval":
            texts = [[c for c in raw.decode("utf-8", errors="replace").splitlines() if c.strip()] for _, raw in items]
            self._sets = [RetrievalSet(name, images, texts, tags=tags)]
        else:
            classes = self._lines("classnames.txt")
            templates = self._lines("zeroshot_classification_templates.txt")
            if not classes or not templates or not all("{c}" in t for t in templates):
                raise ValueError(f"dataset: {self.dataset!r} needs classnames.txt and templates with '{{c}}' under {self.root!r}")
            labels = np.array([_label(raw, len(classes)) for _, raw in items], dtype=np.int64)
            self._sets = [ClassificationSet(name, images, labels, classes, templates, tags=tags)]
        return list(self._sets)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task}
        if self._sets is not None:
            out["eval_size"] = sum(len(s) for s in self._sets)
        return out


def _label(raw: bytes, n_classes: int) -> int:
    text = raw.decode("ascii", errors="replace").strip()
    if not re.fullmatch(r"\d{1,9}", text) or int(text) >= n_classes:
        raise ValueError(f"dataset: a .cls member holds {text[:20]!r}, not a class index below {n_classes}")
    return int(text)
