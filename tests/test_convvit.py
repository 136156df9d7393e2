"""The conv-stem ViT tower family (harness-tiny-convvit): a transformer with a convolutional stem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import harness
from harness.builtin.encoders.conv_vit import CONV_VITS, ConvViT


@pytest.fixture(scope="module")
def model():
    import open_clip

    from harness.builtin.encoders.configs import register_model_configs

    register_model_configs()
    torch.manual_seed(0)
    return open_clip.create_model("harness-tiny-convvit", pretrained=None)


def test_the_config_builds_offline_and_maps_images_to_the_embedding(model):
    images = torch.rand(3, 3, 32, 32)
    out = model.encode_image(images)
    assert out.shape == (3, 64)
    text = model.encode_text(torch.zeros(2, 16, dtype=torch.long))
    assert text.shape == (2, 64)  # the same text tower as harness-tiny-cnn


def test_it_is_a_transformer_on_a_conv_stem_with_the_shipped_shape(model):
    trunk = model.visual.trunk
    assert isinstance(trunk, ConvViT)
    convs = [m for m in trunk.stem if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 32, (3, 3), (2, 2)), (32, 64, (3, 3), (2, 2)), (64, 64, (3, 3), (1, 1))]
    from timm.models.vision_transformer import Block

    assert len(trunk.blocks) == 2 and all(isinstance(b, Block) for b in trunk.blocks)
    assert trunk.grid == 8 and trunk.pos_embed.shape == (1, 64, 64)  # 8x8 tokens of width 64
    tokens = trunk.forward_features(torch.rand(2, 3, 32, 32))
    assert tokens.shape == (2, 64, 64)
    n_image = sum(p.numel() for p in model.visual.parameters())
    assert 100_000 < n_image < 160_000, n_image  # 131,744: the conv tower's order of size


def test_gradients_reach_the_stem_and_the_position_embedding(model):
    model.zero_grad()
    model.encode_image(torch.rand(4, 3, 32, 32)).pow(2).sum().backward()
    first = model.visual.trunk.stem[0]
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert model.visual.trunk.pos_embed.grad.abs().sum() > 0


def test_pools_and_bad_arguments():
    x = torch.rand(2, 3, 32, 32)
    net = ConvViT(**{**CONV_VITS["harness_conv_vit"], "global_pool": "avg"})
    feats = net.forward_features(x)
    assert torch.allclose(net.forward_head(feats), net.fc_norm(feats.mean(dim=1)))
    net.reset_classifier(0, "max")
    assert torch.allclose(net(x), net.fc_norm(feats.amax(dim=1)))
    with pytest.raises(ValueError, match="global_pool 'token' needs class_token=True"):
        ConvViT(global_pool="token")
    with pytest.raises(ValueError, match="stem_proj=False needs the last stem width 32 to equal width 64"):
        ConvViT(stem=(32,), stem_proj=False, width=64)


def test_the_encoder_plugin_names_it():
    enc = harness.create_encoder("open_clip", model="harness-tiny-convvit")
    assert enc.model.visual.trunk.__class__ is ConvViT
