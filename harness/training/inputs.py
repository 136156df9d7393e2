"""A step's inputs: the batch read from the pairs, the towers' inputs made from it, and the loss's
extras (``harness.types.LOSS_EXTRAS``), assembled here, next to where the embeddings are made.

A batch (``fetch_batch``) is a ``Batch``: ``(images, captions, negatives, index, caption_group)``;
``negatives`` are N lists of K hard-negative captions, read only when the loss declares
``text_negatives``; ``index`` (the rows fetched) and ``caption_group`` (from the pair source's
``caption_groups``) are int64 (N,) tensors, made only when the loss declares them. A plain
``(images, captions, negatives)`` tuple is a batch without the last two.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from harness.distributed import gather_batch
from harness.precision import autocast
from harness.training.checks import check_negatives


class Batch(NamedTuple):
    """One step's pairs as read: what the towers embed and the per-pair extras of the dataset."""

    images: Any
    captions: list
    negatives: list | None = None  # N lists of K hard-negative captions (text_negatives)
    index: torch.Tensor | None = None  # int64 (N,): the rows fetched (index)
    caption_group: torch.Tensor | None = None  # int64 (N,): the pair source's caption groups


def fetch_batch(pairs, idx: np.ndarray, rng: np.random.Generator, extras: tuple[str, ...]) -> Batch:
    """The batch of rows ``idx``, with what the loss's ``extras`` need from the data: ``get_batch``
    alone when it wants no negatives, ``get_batch_with_negatives`` else; ``caption_groups`` after
    either (it draws nothing from ``rng``)."""
    if "text_negatives" in extras:
        images, captions, negatives = pairs.get_batch_with_negatives(idx, rng)
    else:
        (images, captions), negatives = pairs.get_batch(idx, rng), None
    index = torch.from_numpy(np.array(idx, dtype=np.int64)) if "index" in extras else None
    groups = caption_groups(pairs, idx, captions) if "caption_group" in extras else None
    return Batch(images, captions, negatives, index, groups)


def caption_groups(pairs, idx: np.ndarray, captions: list) -> torch.Tensor:
    """The pair source's ``caption_groups`` of a batch as an int64 (N,) tensor; ``ValueError`` (one
    line) when it has none or returns something else."""
    method = getattr(pairs, "caption_groups", None)
    if not callable(method):
        raise ValueError(f"the loss needs caption_group but the training pairs ({type(pairs).__name__}) have no "
                         f"caption_groups(indices, captions) method")
    groups = np.asarray(method(idx, captions))
    if groups.shape != (len(captions),) or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(f"{type(pairs).__name__}.caption_groups must return N = {len(captions)} integers, "
                         f"got an array of shape {groups.shape} and dtype {groups.dtype}")
    return torch.from_numpy(groups.astype(np.int64))


def model_inputs(encoder, images, captions, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The two towers' (training) inputs of a batch, on ``device``."""
    x = encoder.preprocess_images(images, train=True).to(device, non_blocking=True)
    y = encoder.pair_inputs(images, captions, train=True).to(device, non_blocking=True)
    return x, y


def negative_tokens(encoder, negatives: list[list[str]], device: torch.device) -> tuple[torch.Tensor, int]:
    """``(tokens, K)``: the N * K hard-negative captions tokenized, pair by pair, on ``device``."""
    k = check_negatives(negatives)
    tokens = encoder.tokenize([c for row in negatives for c in row]).to(device, non_blocking=True)
    return tokens, k


def encode_negatives(encoder, negatives: list[list[str]], device: torch.device) -> torch.Tensor:
    """(N, K, d) normalised text-tower embeddings of N lists of K captions, in the graph."""
    n = len(negatives)
    tokens, k = negative_tokens(encoder, negatives, device)
    return F.normalize(encoder.encode_pair(tokens).float(), dim=-1).view(n, k, -1)


def loss_kwargs(extras: tuple[str, ...], step: int, steps: int, image_raw: torch.Tensor, text_raw: torch.Tensor,
                text_negatives: torch.Tensor | None, **rows: torch.Tensor | None) -> dict[str, Any]:
    """Exactly the extras the loss declares, by name, the batch-shaped ones gathered across ranks
    (``harness.distributed.gather_batch``). ``step`` is the 0-based index of the step; ``rows``
    the other per-pair extras of this process's rows (``index``, ``caption_group``,
    ``image_momentum``, ``text_momentum``)."""
    available = {"step": step, "total_steps": steps, "image_raw": image_raw, "text_raw": text_raw,
                 "text_negatives": text_negatives, "index": None, "caption_group": None, "image_momentum": None,
                 "text_momentum": None, **rows}
    return gather_batch({name: available[name] for name in extras})


def batch_rows(batch: Batch, device: torch.device, rows: slice = slice(None)) -> dict[str, torch.Tensor | None]:
    """The batch's ``index`` and ``caption_group`` (None when not read), rows ``rows``, on ``device``."""
    return {name: value[rows].to(device, non_blocking=True) if value is not None else None
            for name, value in (("index", batch.index), ("caption_group", batch.caption_group))}


def step_inputs(encoder, batch, device: torch.device, precision: str, extras: tuple[str, ...], step: int, steps: int,
                ema=None):
    """``(image_features, text_features, extras_kwargs)`` for one loss call on the whole batch, in
    the graph: the features L2-normalised, in float32, the extras gathered across ranks. ``ema``:
    the momentum towers (``harness.training.momentum.EmaTowers``) when the loss has them."""
    batch = Batch(*batch)
    with autocast(precision, device):
        x, y = model_inputs(encoder, batch.images, batch.captions, device)
        raw_x = encoder.encode_image(x).float()
        raw_y = encoder.encode_pair(y).float()
        fx, fy = F.normalize(raw_x, dim=-1), F.normalize(raw_y, dim=-1)
        neg = encode_negatives(encoder, batch.negatives, device) if "text_negatives" in extras else None
    momentum = ema.features([(x, y)], extras, precision, device) if ema is not None else {}
    return fx, fy, loss_kwargs(extras, step, steps, raw_x, raw_y, neg, **batch_rows(batch, device), **momentum)
