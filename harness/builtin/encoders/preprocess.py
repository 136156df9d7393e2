"""Batched image preprocessing for the built-in encoders.

Two paths, one result (a float32 tensor (N, 3, S, S) normalised with the model's mean/std):

- fast path, a uint8 numpy array (N, H, W, 3): one torch op chain, no per-image work::

      x = from_numpy(images).permute(0, 3, 1, 2).float() / 255
      x = interpolate(center_crop_to_aspect(x), S, antialias=True).clamp(0, 1)   # only if H, W != S
      x = (x - mean) / std

- a list of PIL images (real files of mixed sizes): open_clip's own eval transform per image (its
  train transform when training with augmentation), stacked.

Augmentation is off by default: the synthetic world states left/right/top/bottom in its captions,
so flips and crops would make captions lie. ``light_augment`` only jitters brightness and
contrast and adds a little pixel noise, which keeps every object where it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def light_augment(x: torch.Tensor, strength: float = 0.1, noise: float = 0.02) -> torch.Tensor:
    """Position-preserving augmentation of images in [0, 1], shape (N, 3, H, W).

    Per image: ``x' = clamp(c * (b * x - m) + m + n, 0, 1)`` with brightness ``b`` and contrast
    ``c`` drawn from U(1 - strength, 1 + strength), ``m`` the image's mean after brightness, and
    pixel noise ``n ~ N(0, noise^2)``. Draws come from torch's global RNG (seeded by the job), on
    the tensor's device.
    """
    n = x.shape[0]
    shape = (n, 1, 1, 1)
    b = 1 + strength * (2 * torch.rand(shape, device=x.device, dtype=x.dtype) - 1)
    c = 1 + strength * (2 * torch.rand(shape, device=x.device, dtype=x.dtype) - 1)
    x = x * b
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - m) * c + m
    if noise > 0:
        x = x + noise * torch.randn_like(x)
    return x.clamp_(0, 1)


def _size2(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def as_uint8_batch(images: np.ndarray) -> np.ndarray:
    """Check and normalise the fast-path input to a contiguous uint8 (N, H, W, 3) array.

    A grey batch (N, H, W) or (N, H, W, 1) is repeated to three channels.
    """
    if images.dtype != np.uint8:
        raise ValueError(f"images: expected a uint8 array (N, H, W, 3), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images: expected a uint8 array (N, H, W, 3), got shape {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if not images.flags.writeable:  # e.g. a memory-mapped cache: torch.from_numpy needs a writable array
        return images.copy()
    return np.ascontiguousarray(images)


def center_crop_to_aspect(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop (N, C, H, W) around its centre to the aspect ratio of ``size`` (open_clip's
    "resize the shortest side, then centre-crop", done crop-first so only one resize is needed)."""
    h, w = x.shape[-2:]
    th, tw = size
    if h * tw == w * th:
        return x
    if h * tw > w * th:  # too tall
        new_h = max(1, round(w * th / tw))
        top = (h - new_h) // 2
        return x[..., top : top + new_h, :]
    new_w = max(1, round(h * tw / th))
    left = (w - new_w) // 2
    return x[..., :, left : left + new_w]


@dataclass
class ImagePreprocessor:
    """Turns an ``ImageBatch`` into normalised model input; see the module docstring.

    ``size`` is the model's (H, W); ``mean``/``std`` its per-channel normalisation;
    ``interpolation`` "bicubic", "bilinear" or "nearest"; ``pil_eval``/``pil_train`` open_clip's
    transforms for PIL input; ``augment`` enables ``light_augment`` on the fast path when training.
    """

    size: tuple[int, int]
    mean: Sequence[float]
    std: Sequence[float]
    interpolation: str = "bicubic"
    pil_eval: Callable[[Any], torch.Tensor] | None = None
    pil_train: Callable[[Any], torch.Tensor] | None = None
    augment: bool = False
    _stats: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.size = _size2(self.size)

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._stats:  # cached per device: a tiny per-object cache, not global state
            mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
            self._stats[key] = (mean, std)
        return self._stats[key]

    def __call__(self, images: Any, train: bool = False, device: torch.device | str | None = None) -> torch.Tensor:
        device = torch.device(device or "cpu")
        if isinstance(images, np.ndarray):
            return self.from_array(images, train=train, device=device)
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("images: got an empty batch")
            if all(isinstance(im, np.ndarray) for im in images):
                return self.from_array(np.stack(images), train=train, device=device)
            return self.from_pil(images, train=train, device=device)
        raise ValueError(
            f"images: expected a uint8 array (N, H, W, 3) or a list of PIL images, got {type(images).__name__}"
        )

    def to_unit(self, images: np.ndarray, device: torch.device) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, H', W') in [0, 1] at the model's size, on ``device``."""
        images = as_uint8_batch(images)
        x = torch.from_numpy(images).to(device, non_blocking=True)  # move uint8: 4x less to copy
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.size:
            x = center_crop_to_aspect(x, self.size)
            if self.interpolation in ("bicubic", "bilinear"):
                x = F.interpolate(x, size=self.size, mode=self.interpolation, align_corners=False, antialias=True)
            else:
                x = F.interpolate(x, size=self.size, mode="nearest")
            x = x.clamp_(0, 1)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._mean_std(x.device)
        return (x - mean) / std

    def from_array(self, images: np.ndarray, train: bool = False, device: torch.device | str = "cpu") -> torch.Tensor:
        """The fast path: a uint8 (N, H, W, 3) array, one batched op chain."""
        x = self.to_unit(images, torch.device(device))
        if train and self.augment:
            x = light_augment(x)
        return self.normalize(x).contiguous()

    def from_pil(self, images: Sequence[Any], train: bool = False, device: torch.device | str = "cpu") -> torch.Tensor:
        """A list of PIL images through open_clip's transforms (train transform iff train and augment)."""
        from PIL import Image

        transform = self.pil_train if (train and self.augment and self.pil_train is not None) else self.pil_eval
        if transform is None:
            raise ValueError("images: this encoder has no PIL transform; pass a uint8 array (N, H, W, 3)")
        out = []
        for i, im in enumerate(images):
            if not isinstance(im, Image.Image):
                raise ValueError(f"images[{i}]: expected a PIL image, got {type(im).__name__}")
            out.append(transform(im))
        return torch.stack(out).to(device)
