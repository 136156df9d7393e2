"""A step's inputs: the batch read from the pairs, the towers' inputs made from it, and the loss's
extras (``harness.types.LOSS_EXTRAS``), assembled here, next to where the embeddings are made.

A batch (``fetch_batch``) is ``(images, captions, negatives or None)``; ``negatives`` are N lists
of K hard-negative captions, read only when the loss declares ``text_negatives``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.distributed import gather_batch
from harness.precision import autocast
from harness.training.checks import check_negatives


def fetch_batch(pairs, idx: np.ndarray, rng: np.random.Generator, negatives: bool):
    """(images, captions, negatives or None); ``get_batch`` alone when the loss wants no negatives."""
    if negatives:
        return pairs.get_batch_with_negatives(idx, rng)
    images, captions = pairs.get_batch(idx, rng)
    return images, captions, None


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
                text_negatives: torch.Tensor | None) -> dict[str, Any]:
    """Exactly the extras the loss declares, by name, the batch-shaped ones gathered across ranks
    (``harness.distributed.gather_batch``). ``step`` is the 0-based index of the step."""
    available = {"step": step, "total_steps": steps, "image_raw": image_raw, "text_raw": text_raw,
                 "text_negatives": text_negatives}
    return gather_batch({name: available[name] for name in extras})


def step_inputs(encoder, batch, device: torch.device, precision: str, extras: tuple[str, ...], step: int, steps: int):
    """``(image_features, text_features, extras_kwargs)`` for one loss call on the whole batch, in
    the graph: the features L2-normalised, in float32, the extras gathered across ranks."""
    images, captions, negatives = batch
    with autocast(precision, device):
        x, y = model_inputs(encoder, images, captions, device)
        raw_x = encoder.encode_image(x).float()
        raw_y = encoder.encode_pair(y).float()
        fx, fy = F.normalize(raw_x, dim=-1), F.normalize(raw_y, dim=-1)
        neg = encode_negatives(encoder, negatives, device) if "text_negatives" in extras else None
    return fx, fy, loss_kwargs(extras, step, steps, raw_x, raw_y, neg)
