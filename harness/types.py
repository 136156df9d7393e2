"""The records and protocols that plugins and the core exchange.

Everything a plugin author needs to implement an encoder, a dataset or an evaluation is here;
losses need nothing beyond ``torch.nn.Module`` (see ``harness.builtin.losses``).

Images travel as an ``ImageBatch``: either a uint8 numpy array of shape (N, H, W, 3) (fast path:
the built-in synthetic and digits datasets) or a list of ``PIL.Image`` (real files of mixed
sizes). Encoders turn an ``ImageBatch`` into model input with ``preprocess_images``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import torch

ImageBatch = Union[np.ndarray, list]  # uint8 (N, H, W, 3) array, or a list of PIL images


class Skip(Exception):
    """Raised by an evaluation that cannot run on this job (e.g. no text tower); the reason is recorded."""


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


@runtime_checkable
class PairSource(Protocol):
    """A training split of (image, caption) pairs, read in batches.

    ``get_batch`` returns the images of ``indices`` and one caption each; when an image has
    several captions the dataset picks one with ``rng`` (so paraphrases vary across epochs but
    the whole run stays deterministic given the job's seed).
    """

    def __len__(self) -> int: ...

    def get_batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[ImageBatch, list[str]]: ...


@dataclass
class ClassificationSet:
    """Zero-shot classification / linear probe: images with integer labels.

    ``templates`` are prompt templates containing ``{c}`` (clip_benchmark style), e.g.
    ``"a photo of a {c}."``. ``tags`` flag properties such as ``{"compositional": True}``.
    """

    name: str
    images: ImageBatch
    labels: np.ndarray
    classnames: list[str]
    templates: list[str]
    tags: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RetrievalSet:
    """Image-text retrieval (and the paired set for gap metrics): each image has >= 1 captions.

    The pair used by gap metrics is (image i, its first caption).
    """

    name: str
    images: ImageBatch
    captions: list[list[str]]
    tags: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class ArithmeticTriplet:
    """SIMAT-style query: img(source) + lambda * (text(target_word) - text(value_word)).

    A hit is a retrieved gallery image (other than the source) whose index is in ``target_ids``.
    """

    source: int
    value_word: str
    target_word: str
    target_ids: list[int]


@dataclass
class ArithmeticSet:
    name: str
    images: ImageBatch  # the gallery; triplet indices point into it
    triplets: list[ArithmeticTriplet]
    tags: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.triplets)


EvalSet = Union[ClassificationSet, RetrievalSet, ArithmeticSet]


@runtime_checkable
class Dataset(Protocol):
    """What a dataset plugin's factory returns."""

    def train_pairs(self) -> PairSource: ...

    def eval_sets(self) -> list[EvalSet]: ...


# --------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Encoder(Protocol):
    """A two-tower model, as an encoder plugin's factory returns it.

    - ``model``: the ``nn.Module`` holding every trainable parameter of both towers.
    - ``pair_modality``: ``"text"`` for image-text models; ``"image"`` for the same-modality
      control, whose second tower sees a second view of the image instead of the caption.
    - ``preprocess_images(images, train)``: an ``ImageBatch`` -> float tensor for ``encode_image``.
    - ``pair_inputs(images, captions, train)``: model input for the second tower (tokens for
      text, a second image view for the same-modality control).
    - ``encode_image(x)`` / ``encode_pair(x)``: features, *not* normalised (the core normalises).
    - ``tokenize(texts)``: tokens for ``encode_pair``; only when ``pair_modality == "text"``.
    - ``precision``: the encoder's preferred precision ("fp32", "bf16", "fp16") or None; the
      suite's ``train.precision`` wins when set.
    """

    model: torch.nn.Module
    pair_modality: Literal["text", "image"]
    precision: str | None

    def preprocess_images(self, images: ImageBatch, train: bool) -> torch.Tensor: ...

    def pair_inputs(self, images: ImageBatch, captions: Sequence[str], train: bool) -> torch.Tensor: ...

    def encode_image(self, x: torch.Tensor) -> torch.Tensor: ...

    def encode_pair(self, x: torch.Tensor) -> torch.Tensor: ...

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------
# Evaluations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricInfo:
    """How the leaderboard shows one metric (keyed by its leaf name, e.g. ``top1``)."""

    display: str
    group: Literal["gap", "downstream", "train"]
    higher_is_better: bool | None  # None: neither (descriptive)


@dataclass
class EmbeddedSet:
    """One evaluation set after the job embedded it once (all embeddings L2-normalised, on CPU).

    - ``image_emb``: (N, d) one row per image of ``record.images``.
    - ``pair_emb``: (M, d) the second tower's side: for a ``RetrievalSet`` with text, one row per
      caption in order (flattened ``record.captions``); for the same-modality control one row per
      image (its second view); ``None`` for classification and arithmetic sets.
    - ``pair_image_index``: (M,) the image each ``pair_emb`` row belongs to.
    """

    record: EvalSet
    image_emb: torch.Tensor
    pair_emb: torch.Tensor | None = None
    pair_image_index: torch.Tensor | None = None

    def paired(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y): each image with its first pair row, for gap metrics."""
        if self.pair_emb is None or self.pair_image_index is None:
            raise Skip(f"set {self.record.name!r} has no paired embeddings")
        images, first_row = np.unique(self.pair_image_index.numpy(), return_index=True)
        return self.image_emb[torch.from_numpy(images)], self.pair_emb[torch.from_numpy(first_row)]


@dataclass
class EvalContext:
    """What every evaluation receives: the embedded sets plus a text encoder for prompts/words."""

    sets: list[EmbeddedSet]
    pair_modality: str
    seed: int
    encode_texts_fn: Any = None  # Callable[[Sequence[str]], Tensor] (normalised) or None
    no_text_reason: str = "the encoder has no text tower (same-modality control)"

    @property
    def has_text(self) -> bool:
        return self.pair_modality == "text" and self.encode_texts_fn is not None

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, d) on CPU; raises Skip when the model has no text tower."""
        if not self.has_text:
            raise Skip(self.no_text_reason)
        return self.encode_texts_fn(list(texts))

    def of_type(self, kind: type) -> list[EmbeddedSet]:
        return [s for s in self.sets if isinstance(s.record, kind)]


@runtime_checkable
class Evaluation(Protocol):
    """What an evaluation plugin's factory returns.

    ``evaluate(ctx)`` returns a (possibly nested) dict of floats, e.g. ``{"shape": {"top1": 0.8}}``;
    it raises ``Skip`` when nothing applies. ``metric_info`` describes the leaf keys.
    """

    metric_info: dict[str, MetricInfo]

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]: ...
