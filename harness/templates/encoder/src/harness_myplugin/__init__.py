"""myplugin: an encoder plugin for contrastive-harness (a starting point: replace the towers)."""

from __future__ import annotations

import zlib
from typing import Annotated, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from harness.api import hookimpl

SIDE = 8  # images are average-pooled to SIDE x SIDE before the linear image tower
VOCAB = 1024  # words are hashed into this many buckets


class Towers(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.image = torch.nn.Linear(SIDE * SIDE * 3, dim)
        self.text = torch.nn.EmbeddingBag(VOCAB, dim, mode="mean")


class MyPlugin:
    """A linear image tower on pooled pixels and a bag-of-words text tower.

    The encoder owns input preparation: ``preprocess_images`` turns a uint8 (N, H, W, 3) array or a
    list of PIL images into model input, ``tokenize`` turns texts into tokens. ``encode_image`` and
    ``encode_pair`` return features, not normalised (the harness normalises).
    """

    pair_modality = "text"
    precision = None

    def __init__(self, dim: Annotated[int, Field(ge=1, le=4096, description="the joint embedding dimension")] = 64):
        self.model = Towers(dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess_images(self, images: Any, train: bool) -> torch.Tensor:
        if not isinstance(images, np.ndarray):  # a list of PIL images
            images = np.stack([np.asarray(im.convert("RGB").resize((SIDE, SIDE))) for im in images])
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float() / 255
        return F.adaptive_avg_pool2d(x, SIDE).flatten(1)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        rows = [[zlib.crc32(w.encode()) % VOCAB for w in t.lower().split()] or [0] for t in texts]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], device=self.device)

    def pair_inputs(self, images: Any, captions: Sequence[str], train: bool) -> torch.Tensor:
        return self.tokenize(captions)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.image(x)

    def encode_pair(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.text(x)


@hookimpl
def harness_register_encoders(register):
    register("myplugin", MyPlugin)
