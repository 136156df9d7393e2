"""Gathering embeddings across ranks, so every loss sees the global batch (open_clip style)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process's ``torch.distributed`` group; ``(0, 1)`` outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_features(image_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
    """All ranks' embeddings concatenated in rank order, this rank's shard kept in the graph.

    A no-op (the inputs returned as they are) when ``torch.distributed`` is unavailable, not
    initialised, or has a single process. Otherwise ``all_gather`` without gradient and this rank's
    slot replaced by its own tensors, so gradients flow to the local shard only: open_clip's
    ``gather_features(..., local_loss=False, gather_with_grad=False)``. Each rank then computes the
    loss over the global batch; averaging parameter gradients across ranks (DDP) completes it.
    Every rank must pass the same batch size.
    """
    global _gathers
    if world()[1] == 1:
        return image_features, text_features
    _gathers += 1
    return _gather_one(image_features), _gather_one(text_features)


_gathers = 0  # calls of gather_features that gathered, so the trainer can tell a loss that never does


def gather_count() -> int:
    """How many times ``gather_features`` gathered across ranks in this process."""
    return _gathers


def gather_batch(extras: dict[str, object]) -> dict[str, object]:
    """The batch-shaped loss extras (``harness.types.BATCH_EXTRAS``) gathered like the embeddings.

    A no-op in a single process. Otherwise each (N, ...) tensor becomes the ranks' tensors
    concatenated in rank order with this rank's shard kept in the graph (``gather_features``'
    rule); ``step`` and ``total_steps`` are the same on every rank and pass through.
    """
    from harness.types import BATCH_EXTRAS

    if world()[1] == 1:
        return extras
    return {k: _gather_one(v) if k in BATCH_EXTRAS and isinstance(v, Tensor) else v for k, v in extras.items()}


def _gather_one(local: Tensor) -> Tensor:
    world_size, rank = dist.get_world_size(), dist.get_rank()
    shards = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(shards, local.detach().contiguous())
    shards[rank] = local
    return torch.cat(shards, dim=0)
