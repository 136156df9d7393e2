"""The records and protocols that plugins and the core exchange: the plugin contract.

Everything a plugin author needs to implement a loss, an encoder, a dataset or an evaluation is
here; ``harness.testing`` checks a plugin against it with real calls.

Images travel as an ``ImageBatch``: either a uint8 numpy array of shape (N, H, W, 3) (fast path:
the built-in synthetic and digits datasets) or a list of ``PIL.Image`` (real files of mixed
sizes). Encoders turn an ``ImageBatch`` into model input with ``preprocess_images``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Sequence, Union, runtime_checkable

import numpy as np
import torch

ImageBatch = Union[np.ndarray, list]  # uint8 (N, H, W, 3) array, or a list of PIL images

# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

#: The largest logit scale a loss may use: log(100), open_clip's clamp of a learnable
#: ``logit_scale`` (so 1 / temperature is at most 100). The one definition; plugins read it from
#: ``harness.api``.
MAX_LOGIT_SCALE: float = math.log(100.0)

#: What a loss may ask for beyond the two embedding batches (its ``extras`` attribute), passed by
#: the trainer as keyword arguments of ``forward``:
#: - ``step``: int, the 0-based index of the optimizer step being computed;
#: - ``total_steps``: int, the job's number of optimizer steps;
#: - ``image_raw``, ``text_raw``: (N, d) each tower's projected output before L2 normalisation,
#:   in the graph (float32);
#: - ``text_negatives``: (N, K, d) L2-normalised embeddings, from the same text tower and in the
#:   graph, of K hard-negative captions per pair, supplied by the dataset;
#: - ``index``: int64 (N,), each pair's row in the training split (the rows the trainer fetched);
#: - ``caption_group``: int64 (N,), equal for rows whose captions have the same meaning, supplied
#:   by the dataset (``CaptionGroupSource``);
#: - ``image_momentum``, ``text_momentum``: (N, d) L2-normalised float32 features of the batch from
#:   the trainer's momentum (EMA) towers, without gradient; only for a loss with a ``momentum``
#:   attribute (``loss_momentum``).
#: With several workers every batch-shaped extra (``BATCH_EXTRAS``) arrives gathered, in the order
#: of the gathered features.
LOSS_EXTRAS: tuple[str, ...] = ("step", "total_steps", "image_raw", "text_raw", "text_negatives",
                                "index", "caption_group", "image_momentum", "text_momentum")
#: The extras that come from the dataset: a dataset factory lists those it can supply in its
#: ``supplies`` attribute, and ``harness validate`` refuses a loss that needs one its dataset lacks.
SUPPLIED_EXTRAS: tuple[str, ...] = ("text_negatives", "caption_group")
#: The extras that are batch-shaped (first dimension N): gathered across ranks like the embeddings.
BATCH_EXTRAS: tuple[str, ...] = ("image_raw", "text_raw", "text_negatives", "index", "caption_group",
                                 "image_momentum", "text_momentum")
#: The extras computed by the trainer's momentum towers (a loss declaring one needs ``momentum``).
MOMENTUM_EXTRAS: tuple[str, ...] = ("image_momentum", "text_momentum")


def names_of(value: Any) -> tuple[str, ...]:
    """A declared attribute (``extras``, ``supplies``, ``splits``) as a tuple of names; () when empty."""
    value = value or ()
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        return (value,)


def declared_extras(obj: Any) -> tuple[str, ...]:
    """A loss's (or loss factory's) ``extras`` attribute as a tuple of names; () when absent."""
    return names_of(getattr(obj, "extras", ()))


def loss_momentum(loss: Any) -> float | None:
    """The EMA rate a loss asks the trainer's momentum towers to use: its ``momentum`` attribute.

    ``None`` when the loss has no ``momentum`` attribute; ``ValueError`` (one line) when it has one
    that is not a float strictly between 0 and 1 (a bool or an int is refused too). The trainer
    reads it at every step, so a loss may change it on a schedule.
    """
    if not hasattr(loss, "momentum"):
        return None
    m = getattr(loss, "momentum")
    if isinstance(m, float) and 0.0 < m < 1.0:  # NaN fails both comparisons
        return m
    shown = repr(m) if isinstance(m, (bool, int, float, str)) else f"a {type(m).__name__}"
    raise ValueError(f"momentum must be a float in (0, 1), the EMA rate of the momentum towers "
                     f"(p_ema = momentum * p_ema + (1 - momentum) * p); got {shown[:60]}")


@runtime_checkable
class Loss(Protocol):
    """What a loss plugin's factory returns: a ``torch.nn.Module`` with this ``forward``.

    ``forward(image_features, text_features, **extras) -> dict[str, Tensor]``: both inputs are
    L2-normalised (N, d) embeddings, row i of each forming a pair (possibly half precision: cast
    up inside). It returns named scalar terms, each already weighted; the training loss is their
    sum and each is logged. ``extras`` (a tuple of names from ``LOSS_EXTRAS``, on the class or the
    instance; default ``()``) says which extras the trainer passes, exactly those, as keyword
    arguments. Learnable scalars (``logit_scale`` = log(1 / temperature), ``logit_bias``) are the
    loss's own ``nn.Parameter``s. Raise ``ValueError`` where the loss is undefined (e.g. a batch
    of one) rather than returning NaN. The trainer calls ``forward`` exactly once per step.

    Optional (contract v3):
    - ``setup(dataset_size: int)``: called by the trainer once, with the number of training pairs,
      before the first step and before any saved state is restored (size per-pair state here);
    - loss state: the module's buffers and parameters (its ``state_dict``) are saved with a job's
      checkpoint and restored on resume into a fresh instance after ``setup``; keep every value
      that changes ``forward``'s result there (not in plain attributes). With several workers each
      rank sees the gathered batch and extras, so every rank makes the same update;
    - ``momentum``: a float in (0, 1) makes the trainer keep EMA copies of both towers, updated
      after each optimizer step (p_ema = momentum * p_ema + (1 - momentum) * p; buffers copied),
      read at every step; their features are the ``image_momentum``/``text_momentum`` extras.
    """

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, **extras: Any) -> dict[str, torch.Tensor]: ...


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


class NegativesSource(PairSource, Protocol):
    """A ``PairSource`` of a dataset that supplies ``text_negatives`` (its factory's ``supplies``).

    ``get_batch_with_negatives(indices, rng)`` returns ``(images, captions, negatives)``, the first
    two as ``get_batch`` would, and ``negatives`` a list of N lists of K hard-negative captions
    (K fixed by the dataset), none equal to its positive caption.
    """

    def get_batch_with_negatives(
        self, indices: np.ndarray, rng: np.random.Generator
    ) -> tuple[ImageBatch, list[str], list[list[str]]]: ...


class CaptionGroupSource(PairSource, Protocol):
    """A ``PairSource`` of a dataset that supplies ``caption_group`` (its factory's ``supplies``).

    ``caption_groups(indices, captions)`` returns an integer numpy array (N,) for a batch just read:
    ``indices`` as passed to ``get_batch`` (or ``get_batch_with_negatives``) and ``captions`` as it
    returned them. Two rows get the same value exactly when their captions have the same meaning
    (the dataset defines it and documents it: the same digit in ``digits``; in ``shapes`` the same
    objects with the same attributes and the same background or none named). The values need only
    be comparable within a batch, but should be the same in every batch (e.g. a code of the
    meaning). It draws no random numbers and changes nothing, so asking for it leaves the batch
    and the rest of the run as they were.
    """

    def caption_groups(self, indices: np.ndarray, captions: Sequence[str]) -> np.ndarray: ...


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
    """What a dataset plugin's factory returns.

    ``eval_sets()`` returns the evaluation sets the leaderboard reports. A dataset whose factory
    lists ``"validation"`` in its ``splits`` attribute also answers ``eval_sets(split="validation")``
    with sets of the same kinds and names drawn disjointly from the reported ones (and from
    training): tuning selects on those. A factory's ``supplies`` attribute lists the loss extras the
    dataset can supply (``SUPPLIED_EXTRAS``; its ``train_pairs()`` is then a ``NegativesSource`` for
    ``text_negatives``, a ``CaptionGroupSource`` for ``caption_group``).
    """

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
class MainScore:
    """The key of an evaluation's result that ranks objectives, as the evaluation declares it.

    ``key`` is a dotted path under the evaluation's result; one component may be ``*``, meaning the
    mean over every key that matches (e.g. ``*.image_to_text_r1``: the mean over retrieval sets).
    """

    key: str
    description: str
    higher_is_better: bool = True


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
    """What every evaluation receives: the embedded sets plus a text encoder for prompts/words.

    ``cache_dir``: a directory shared by the jobs of a run where an evaluation may keep what does
    not depend on the job (e.g. reference rows), or None (no disk cache: compute as needed). Entries
    must be keyed by everything that determines them and written atomically: jobs run at once.
    """

    sets: list[EmbeddedSet]
    pair_modality: str
    seed: int
    encode_texts_fn: Any = None  # Callable[[Sequence[str]], Tensor] (normalised) or None
    no_text_reason: str = "the encoder has no text tower (same-modality control)"
    cache_dir: Path | None = None

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

    Optional:
    - ``main_score``: a ``MainScore`` naming the key that ranks objectives on a leaderboard (the
      first evaluation of a suite that declares one and has values ranks it, unless the suite
      names one with ``main_score:``).
    - ``reference_rows(ctx) -> {row: {key: value}}``: floors and ceilings computed from the
      evaluation sets (chance, an oracle, a raw-pixel probe...), keyed like the evaluation's own
      result (dotted paths); the leaderboard shows them as marked rows, never ranked.
    - ``prepare(records, cache_dir) -> None``: compute into ``cache_dir`` what ``reference_rows``
      will read from it and no model changes (a raw-pixel probe, an oracle), from the evaluation
      sets alone. The executors of this machine call it once per world that several jobs share,
      before the first of them, on the jobs' threads; its errors are ignored (the job meets them).
    """

    metric_info: dict[str, MetricInfo]

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]: ...
