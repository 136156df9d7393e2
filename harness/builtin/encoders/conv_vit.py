"""A small ViT with a convolutional stem, registered with timm so open_clip configs can name it.

The second image-tower family for the shapes world, next to the conv net of ``tiny_cnn.py``: a
transformer whose tokens come from a stack of 3x3 stride-2 convolutions instead of a patchify
projection (Xiao et al. 2021, "Early Convolutions Help Transformers See Better"). Built as open_clip
builds any timm tower (``vision_cfg.timm_model_name``, ``timm_pool``, ``timm_proj``): the harness
registers the names below with ``timm.models.register_model`` (done once, by
``configs.register_model_configs``), so ``harness-tiny-convvit.json`` is data only.

``harness_conv_vit``: see ``CONV_VITS`` for the shipped arguments. The stem is 3x3 stride-2
convolutions, each followed by BatchNorm and GELU, then a 1x1 convolution to the token width (as in
the paper, where it replaces the ViT's patchify projection); the feature map's positions are the
tokens, plus a learned position embedding (and an optional class token); then timm's pre-norm
``vision_transformer.Block`` s, a final LayerNorm and the pool.

Pools (``global_pool``, what open_clip's ``timm_pool`` resets): ``avg`` (mean over the patch
tokens), ``max`` (max over the patch tokens), ``token`` (the class token; needs ``class_token``),
``""`` (no pool: ``forward`` returns the (N, T, C) tokens, as timm's ViT does; open_clip never
passes it, an empty ``timm_pool`` keeps the network default). ``forward`` returns (N, num_features)
for every other pool, which is what open_clip's ``linear`` projection expects.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

# timm name -> ConvViT arguments
# harness_conv_vit: stem 3 -> 32 (stride 2) -> 64 (stride 2) -> 64 (stride 1), so 8x8 = 64 tokens of
# width 64 on 32x32 images, no 1x1 projection (the last conv is already at the width); 2 pre-norm
# blocks (4 heads, MLP ratio 2); max over the tokens, then a LayerNorm (fc_norm). Chosen among about
# 40 variants (stems, widths, depths, pools, class token, position embeddings) by clip's zero-shot
# shape top-1 on the shapes world at the default suite's recipe (600 steps, batch 64, lr 1e-3):
# 0.571 and 0.568 on world 0, training seeds 0 and 1.
CONV_VITS: dict[str, dict[str, Any]] = {
    "harness_conv_vit": {"stem": (32, 64, 64), "stem_strides": (2, 2, 1), "width": 64, "depth": 2, "heads": 4,
                         "mlp_ratio": 2.0, "fc_norm": True, "stem_proj": False, "global_pool": "max"},
}

POOLS = ("avg", "max", "token", "")


class ConvViT(nn.Module):
    """A conv stem (3x3 stride-2 conv + BatchNorm + GELU per entry of ``stem``, then a 1x1 conv to
    ``width``), a learned position embedding, ``depth`` transformer blocks, a LayerNorm and a pool.

    Implements what open_clip's ``TimmModel`` uses of a timm model: ``num_features``,
    ``default_cfg`` / ``pretrained_cfg``, ``reset_classifier(num_classes, global_pool)`` and
    ``forward``; also ``forward_features`` (normalised tokens) and ``forward_head``.
    """

    def __init__(self, stem: Sequence[int] = (32, 64), stem_strides: Sequence[int] | None = None,
                 stem_padding: Sequence[int] | None = None, width: int = 64, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 2.0, img_size: int = 32, class_token: bool = False,
                 num_classes: int = 0, global_pool: str = "max", in_chans: int = 3, drop_path_rate: float = 0.0,
                 pos_std: float = 0.02, fc_norm: bool = False, pool_after: Sequence[int] = (), learn_pos: bool = True,
                 init_values: float | None = None, stem_proj: bool = True, **_: Any):
        super().__init__()
        from timm.layers import trunc_normal_
        from timm.models.vision_transformer import Block

        _check_pool(global_pool, class_token)
        layers: list[nn.Module] = []
        prev, size = in_chans, img_size
        for ch, stride, pad in zip(stem, stem_strides or (2,) * len(stem), stem_padding or (1,) * len(stem)):
            layers += [nn.Conv2d(prev, ch, 3, stride=stride, padding=pad, bias=False), nn.BatchNorm2d(ch), nn.GELU()]
            prev, size = ch, (size + 2 * pad - 3) // stride + 1
        if stem_proj:
            layers += [nn.Conv2d(prev, width, 1)]
        elif prev != width:
            raise ValueError(f"stem_proj=False needs the last stem width {prev} to equal width {width}")
        self.stem = nn.Sequential(*layers)
        self.grid = size
        self.num_prefix_tokens = 1 if class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, size * size + self.num_prefix_tokens, width))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=r,
                                            init_values=init_values)
                                      for r in rates])
        self.pool_after = tuple(pool_after)
        self.norm = nn.Identity() if fc_norm else nn.LayerNorm(width)
        self.fc_norm = nn.LayerNorm(width) if fc_norm else nn.Identity()
        self.num_features = self.embed_dim = width
        self.global_pool = global_pool
        self.head: nn.Module = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg = self.default_cfg = {"architecture": "harness_conv_vit", "pool_size": None,
                                                  "num_classes": num_classes, "input_size": (in_chans, img_size, img_size)}
        if pos_std > 0:
            trunc_normal_(self.pos_embed, std=pos_std, a=-2 * pos_std, b=2 * pos_std)
        if not learn_pos:
            self.pos_embed.requires_grad_(False)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            _check_pool(global_pool, self.cls_token is not None)
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # (N, C, H, W) -> (N, H*W, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        side = self.grid
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.pool_after:  # 2x2 max pool of the token grid
                n, t, c = x.shape
                x = x.transpose(1, 2).reshape(n, c, side, side)
                x = nn.functional.max_pool2d(x, 2).flatten(2).transpose(1, 2)
                side //= 2
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        elif self.global_pool == "max":
            x = x[:, self.num_prefix_tokens:].amax(dim=1)
        x = self.fc_norm(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _check_pool(pool: str, class_token: bool) -> None:
    if pool not in POOLS:
        raise ValueError(f"global_pool: expected one of {POOLS}, got {pool!r}")
    if pool == "token" and not class_token:
        raise ValueError("global_pool 'token' needs class_token=True")


def register_timm_models() -> None:
    """Register every ``CONV_VITS`` name with timm (idempotent)."""
    from harness.builtin.encoders.tiny_cnn import register_with_timm

    register_with_timm(CONV_VITS, ConvViT)
