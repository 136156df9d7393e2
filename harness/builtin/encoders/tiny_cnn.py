"""A tiny conv net image tower, registered with timm so open_clip configs can name it.

open_clip builds a timm image tower from ``vision_cfg.timm_model_name``: it calls
``timm.create_model(name)``, resets the classifier with ``timm_pool`` as the global pool and puts a
``timm_proj`` projection (``linear``: ``Linear(num_features, embed_dim)``) on top. The harness
registers its conv nets under the names below with ``timm.models.register_model`` (done once, by
``configs.register_model_configs``), so a config JSON such as ``harness-tiny-cnn.json`` is data only.

``harness_tiny_cnn``: four 3x3 convolutions (channels 48, 48, 96, 96; the 2nd and 4th with stride
2), each followed by GELU, then the global pool (max in the shipped config). About 130k weights before
the projection. It sees shape within a few hundred steps on the 32x32 shapes world, where the
patch-8 ViT (``harness-tiny-vit``) needs thousands (see ``leaderboard/README.md``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

# timm name -> conv channels; strides alternate 1, 2 (so four layers downsample 4x)
TINY_CNNS: dict[str, tuple[int, ...]] = {
    "harness_tiny_cnn": (48, 48, 96, 96),
}


class TinyConvNet(nn.Module):
    """3x3 conv + GELU blocks (stride 1, 2, 1, 2, ...), a global pool and an optional linear head.

    Implements what open_clip's ``TimmModel`` uses of a timm model: ``num_features``,
    ``default_cfg`` / ``pretrained_cfg``, ``reset_classifier(num_classes, global_pool)`` and
    ``forward``.
    """

    def __init__(self, channels: Sequence[int] = (48, 48, 96, 96), num_classes: int = 0, global_pool: str = "max",
                 in_chans: int = 3, **_: Any):
        super().__init__()
        from timm.layers import SelectAdaptivePool2d

        layers: list[nn.Module] = []
        prev = in_chans
        for i, ch in enumerate(channels):
            layers += [nn.Conv2d(prev, ch, 3, stride=1 + i % 2, padding=1), nn.GELU()]
            prev = ch
        self.features = nn.Sequential(*layers)
        self.num_features = prev
        self.pretrained_cfg = self.default_cfg = {"architecture": "harness_tiny_cnn", "pool_size": None,
                                                  "num_classes": num_classes}
        self._pool_cls = SelectAdaptivePool2d
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool or "max", flatten=True)
        self.head: nn.Module = nn.Linear(prev, num_classes) if num_classes else nn.Identity()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = self._pool_cls(pool_type=global_pool, flatten=True)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.global_pool(self.features(x)))


def _entrypoint(name: str, channels: tuple[int, ...]):
    def build(pretrained: bool = False, **kwargs: Any) -> TinyConvNet:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
        return TinyConvNet(channels, **kwargs)

    build.__name__ = build.__qualname__ = name
    return build


_registered = False


def register_timm_models() -> None:
    """Register every ``TINY_CNNS`` name with timm (idempotent)."""
    global _registered
    if _registered:
        return
    import timm
    from timm.models import register_model

    for name, channels in TINY_CNNS.items():
        if name not in timm.list_models(name):
            register_model(_entrypoint(name, channels))
    _registered = True
