"""The ``clip_benchmark`` dataset plugin: evaluation sets from clip_benchmark's dataset builders.

``build_dataset(dataset, root, split=..., download=False)`` reads data already on disk (the
harness never downloads): e.g. ``wds/vtab/cifar10`` from clip_benchmark's webdataset layout
(``root/{split}/nshards.txt``, ``root/{split}/0.tar``, ``root/classnames.txt``,
``root/zeroshot_classification_templates.txt``, ``root/dataset_type.txt`` for retrieval), or a
torchvision dataset (``cifar10``) from its folder. ``root`` may contain ``{dataset}`` and
``{dataset_cleaned}`` (the name with "/" -> "-"), as in clip_benchmark's CLI. Classification
sets keep clip_benchmark's class names and prompt templates. Images are resized on the shorter
side and centre-cropped to ``image_size``. There is no training split: use it with
``train: {steps: 0}`` to evaluate a pretrained encoder.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.registry import bind_params
from harness.types import ClassificationSet, EvalSet, RetrievalSet

TASKS = ("zeroshot_classification", "zeroshot_retrieval")


def set_name(dataset: str) -> str:
    """The evaluation set's name (a metric key): the last part of the dataset name, e.g. ``cifar10``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", dataset.rstrip("/").split("/")[-1])


class ClipBenchmarkSets:
    """Evaluation sets (zero-shot classification or retrieval) from clip_benchmark, local data only."""

    def __init__(
        self,
        dataset: str,
        root: str,
        split: str = "test",
        task: Literal["auto", "zeroshot_classification", "zeroshot_retrieval"] = "auto",
        limit: int | None = None,
        image_size: int = 224,
    ):
        self.check_params(dataset=dataset, root=root, task=task, limit=limit, image_size=image_size)
        self.dataset = dataset
        self.root = root.format(dataset=dataset, dataset_cleaned=dataset.replace("/", "-"))
        if not Path(self.root).exists():
            raise ValueError(f"root: no such folder {self.root!r} (clip_benchmark data is never downloaded here)")
        self.split = split
        self.task = self._resolve_task(task)
        self.limit = limit
        self.image_size = image_size
        self._sets: list[EvalSet] | None = None

    @classmethod
    def check_params(cls, **params: Any) -> None:
        """Raise ``ValueError`` naming the first bad param (``harness validate`` calls this; the
        ``root`` folder is checked when the dataset is built)."""
        p = bind_params(cls, params)
        dataset, task, limit, image_size = p["dataset"], p["task"], p["limit"], p["image_size"]
        if not dataset:
            raise ValueError("dataset: give a clip_benchmark dataset name, e.g. wds/vtab/cifar10 or cifar10")
        if task not in ("auto",) + TASKS:
            raise ValueError(f"task must be one of auto, {', '.join(TASKS)}; got {task!r}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (or null for all), got {limit}")
        if not 8 <= image_size <= 1024:
            raise ValueError(f"image_size must be in [8, 1024], got {image_size}")

    def _resolve_task(self, task: str) -> str:
        if task != "auto":
            return task
        if self.dataset.startswith("wds/"):
            kind_file = Path(self.root) / "dataset_type.txt"
            kind = kind_file.read_text().strip().lower() if kind_file.exists() else "classification"
            if kind not in ("classification", "retrieval"):
                raise ValueError(
                    f"dataset: {kind_file} says {kind!r}; only classification and retrieval are supported"
                )
            return "zeroshot_retrieval" if kind == "retrieval" else "zeroshot_classification"
        from clip_benchmark.datasets.builder import get_dataset_default_task

        default = get_dataset_default_task(self.dataset)
        if default not in TASKS:
            raise ValueError(f"dataset: {self.dataset!r} is a {default} dataset; supported tasks: {', '.join(TASKS)}")
        return default

    def train_pairs(self):
        raise ValueError(
            f"dataset 'clip_benchmark' ({self.dataset}) has evaluation sets only, no training pairs; "
            "use it with train: {steps: 0} to evaluate a pretrained encoder"
        )

    def _transform(self, image) -> np.ndarray:
        from PIL import Image, ImageOps

        return np.asarray(ImageOps.fit(image.convert("RGB"), (self.image_size,) * 2, Image.BICUBIC), dtype=np.uint8)

    def _build(self):
        from clip_benchmark.datasets.builder import build_dataset

        try:
            with warnings.catch_warnings():  # clip_benchmark leaves webdataset's shardshuffle unset
                warnings.filterwarnings("ignore", message=r"WebDataset\(shardshuffle=")
                return build_dataset(self.dataset, root=self.root, transform=self._transform,
                                     split=self.split, download=False, task=self.task)
        except Exception as exc:
            raise ValueError(
                f"clip_benchmark could not build {self.dataset!r} from root {self.root!r} (split {self.split!r}, "
                f"downloads disabled): {type(exc).__name__}: {exc}"
            ) from None

    def _items(self, ds) -> list[tuple[np.ndarray, Any]]:
        limit = self.limit if self.limit is not None else float("inf")
        items = []
        if hasattr(ds, "__len__") and hasattr(ds, "__getitem__"):  # map-style (torchvision)
            for i in range(int(min(len(ds), limit))):
                items.append(ds[i])
        else:  # iterable (webdataset)
            with warnings.catch_warnings():
                # stopping early drops webdataset's open shard, which only warns (ResourceWarning)
                warnings.simplefilter("ignore", ResourceWarning)
                stream = iter(ds)
                try:
                    for item in stream:
                        if len(items) >= limit:
                            break
                        items.append(item)
                finally:
                    getattr(stream, "close", lambda: None)()
        if not items:
            raise ValueError(f"dataset: {self.dataset!r} split {self.split!r} under {self.root!r} is empty")
        return items

    def eval_sets(self) -> list[EvalSet]:
        if self._sets is not None:
            return list(self._sets)
        ds = self._build()
        items = self._items(ds)
        images = np.stack([image for image, _ in items])
        name = set_name(self.dataset)
        tags = {"source": "clip_benchmark", "dataset": self.dataset, "split": self.split}
        if self.task == "zeroshot_retrieval":
            texts = [[c] if isinstance(c, str) else [str(x) for x in c] for _, c in items]
            self._sets = [RetrievalSet(name, images, texts, tags=tags)]
        else:
            classes, templates = getattr(ds, "classes", None), getattr(ds, "templates", None)
            if not classes or not templates:
                raise ValueError(
                    f"dataset: {self.dataset!r} has no class names or prompt templates under {self.root!r}"
                )
            if isinstance(templates, dict):
                raise ValueError(
                    f"dataset: {self.dataset!r} has class-specific prompts; only '{{c}}' templates are supported"
                )
            labels = np.array([int(label) for _, label in items], dtype=np.int64)
            self._sets = [ClassificationSet(name, images, labels, list(classes), list(templates), tags=tags)]
        return list(self._sets)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task}
        if self._sets is not None:
            out["eval_size"] = sum(len(s) for s in self._sets)
        return out
