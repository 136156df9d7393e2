"""Gathering embeddings across ranks, so every loss sees the global batch (open_clip style)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def gather_features(image_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
    """All ranks' embeddings concatenated in rank order, this rank's shard kept in the graph.

    A no-op (the inputs returned as they are) when ``torch.distributed`` is unavailable, not
    initialised, or has a single process. Otherwise ``all_gather`` without gradient and this rank's
    slot replaced by its own tensors, so gradients flow to the local shard only: open_clip's
    ``gather_features(..., local_loss=False, gather_with_grad=False)``. Each rank then computes the
    loss over the global batch; averaging parameter gradients across ranks (DDP) completes it.
    Every rank must pass the same batch size.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return image_features, text_features
    world_size, rank = dist.get_world_size(), dist.get_rank()
    out = []
    for local in (image_features, text_features):
        shards = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(shards, local.detach().contiguous())
        shards[rank] = local
        out.append(torch.cat(shards, dim=0))
    return out[0], out[1]
