"""A tiny conv net image tower, registered with timm so open_clip configs can name it.

open_clip builds a timm image tower from ``vision_cfg.timm_model_name``: it calls
``timm.create_model(name)``, resets the classifier with ``timm_pool`` as the global pool and puts a
``timm_proj`` projection (``linear``: ``Linear(num_features, embed_dim)``) on top. The harness
registers its conv nets under the names below with ``timm.models.register_model`` (done once, by
``configs.register_model_configs``), so a config JSON such as ``harness-tiny-cnn.json`` is data only.

``harness_tiny_cnn``: a 2x2 stride-2 "patchify" convolution to 32 channels, then 3x3 convolutions to
32 (stride 1), 64 (stride 2) and 64 (stride 1) channels, each followed by BatchNorm and GELU, then the
global pool (max in the shipped config): 16x16 and 8x8 feature maps on 32x32 images, about 66k
weights before the projection. Under CLIP's loss on the shapes world (canonical captions, shape
groups) it learns shape within 600 steps, where the patch-8 ViT (``harness-tiny-vit``) and the same
kind of net with a stride-1 stem and no normalisation stay far lower in that budget.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

# timm name -> TinyConvNet arguments (channels; strides default to 1, 2, 1, 2: a 4x downsampling)
TINY_CNNS: dict[str, dict[str, Any]] = {
    "harness_tiny_cnn": {"channels": (32, 32, 64, 64), "strides": (2, 1, 2, 1), "norm": True},
}


class TinyConvNet(nn.Module):
    """Conv [+ BatchNorm] + GELU blocks, a global pool and an optional linear head.

    ``strides`` default to 1, 2, 1, 2, ...; a stride-2 first layer is a 2x2 patchify convolution,
    every other layer a 3x3 convolution (padding 1). ``norm`` adds BatchNorm2d after each conv.

    Implements what open_clip's ``TimmModel`` uses of a timm model: ``num_features``,
    ``default_cfg`` / ``pretrained_cfg``, ``reset_classifier(num_classes, global_pool)`` and
    ``forward``.
    """

    def __init__(self, channels: Sequence[int] = (32, 32, 64, 64), strides: Sequence[int] | None = None,
                 norm: bool = False, num_classes: int = 0, global_pool: str = "max", in_chans: int = 3, **_: Any):
        super().__init__()
        from timm.layers import SelectAdaptivePool2d

        strides = tuple(strides) if strides is not None else tuple(1 + i % 2 for i in range(len(channels)))
        layers: list[nn.Module] = []
        prev = in_chans
        for ch, stride in zip(channels, strides):
            # a stride-2 first layer is a 2x2 patchify stem (kernel 2), later stride-2 layers 3x3
            kernel, pad = (2, 0) if (stride == 2 and prev == in_chans) else (3, 1)
            layers += [nn.Conv2d(prev, ch, kernel, stride=stride, padding=pad)]
            layers += [nn.BatchNorm2d(ch)] if norm else []
            layers += [nn.GELU()]
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


def timm_entrypoint(name: str, arch: dict[str, Any], cls: type) -> Any:
    """A timm model entry point named ``name`` that builds ``cls(**arch, **kwargs)`` (no pretrained weights)."""
    def build(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
        return cls(**{**arch, **kwargs})

    build.__name__ = build.__qualname__ = name
    return build


def register_with_timm(models: dict[str, dict[str, Any]], cls: type) -> None:
    """Register each name of ``models`` (name -> ``cls`` arguments) with timm, once (idempotent)."""
    import timm
    from timm.models import register_model

    for name, arch in models.items():
        if name not in timm.list_models(name):
            register_model(timm_entrypoint(name, arch, cls))


def register_timm_models() -> None:
    """Register every ``TINY_CNNS`` name with timm (idempotent)."""
    register_with_timm(TINY_CNNS, TinyConvNet)
