"""The built-in encoders: open_clip towers (shipped tiny config) and the same-modality control."""

from __future__ import annotations

import socket
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import harness
from harness.types import Encoder, Skip

OPENAI_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
OPENAI_STD = np.array([0.26862954, 0.26130258, 0.27577711])
CAPTIONS = [
    "a small red circle on the left",
    "a large blue square at the top",
    "left: tiny crimson disc",
    "a green triangle on the right",
    "a yellow star at the bottom",
    "a big purple cross on the left",
    "an orange circle at the top",
    "a small white square on the right",
]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails: proves a build is offline."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def tiny(**params):
    return harness.create_encoder("open_clip", **params)


def images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def embed(enc, imgs, captions):
    with torch.no_grad():
        return enc.encode_image(enc.preprocess_images(imgs, False)), enc.encode_pair(enc.pair_inputs(imgs, captions, False))


@pytest.fixture(scope="module")
def shared():
    """One tiny encoder for the tests that only read from it."""
    return tiny()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model's weights, changed from their init so a reload cannot pass by chance."""
    torch.manual_seed(123)
    enc = tiny()
    with torch.no_grad():
        for p in enc.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    state = {k: v.clone() for k, v in enc.model.state_dict().items()}
    torch.save(state, path)
    return path, state, enc


# ---------------------------------------------------------------------------------------------
# open_clip: build, shapes, preprocessing
# ---------------------------------------------------------------------------------------------


def test_tiny_config_builds_offline_with_right_shapes(no_network):
    import open_clip

    enc = tiny()
    assert isinstance(enc, Encoder) and enc.pair_modality == "text"
    assert "harness-tiny-vit" in open_clip.list_models() and "harness-small-vit" in open_clip.list_models()
    m = enc.model
    assert enc.image_size == (32, 32) and enc.embed_dim == 64
    assert len(m.visual.transformer.resblocks) == 2 and len(m.transformer.resblocks) == 2
    assert m.token_embedding.num_embeddings == 49408 and m.context_length == 16
    x = enc.preprocess_images(images(5), train=True)
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    tokens = enc.tokenize(CAPTIONS[:5])
    assert tokens.shape == (5, 16) and tokens.dtype == torch.long
    assert torch.equal(enc.pair_inputs(images(5), CAPTIONS[:5], True), tokens)
    assert enc.encode_image(x).shape == (5, 64) and enc.encode_pair(tokens).shape == (5, 64)
    assert enc.tokenize("one caption").shape == (1, 16)  # a str is one text, not its characters
    assert not m.logit_scale.requires_grad  # the loss owns the temperature


def test_shipped_configs_register_idempotently():
    import open_clip
    from open_clip import factory

    from harness.builtin.encoders.configs import register_model_configs, shipped_configs

    register_model_configs()
    n_paths = len(factory._MODEL_CONFIG_PATHS)
    assert register_model_configs() == ["harness-small-vit", "harness-tiny-cnn", "harness-tiny-convvit", "harness-tiny-vit"]
    assert len(factory._MODEL_CONFIG_PATHS) == n_paths
    cfg = shipped_configs()["harness-small-vit"]
    assert open_clip.get_model_config("harness-small-vit") == cfg
    assert cfg["embed_dim"] == 128 and cfg["vision_cfg"]["layers"] == 4 and cfg["text_cfg"]["width"] == 256


def reference_normalise(img_uint8: np.ndarray) -> np.ndarray:
    """One image, by hand: HWC uint8 -> CHW float64 (x / 255 - mean) / std."""
    x = img_uint8.astype(np.float64) / 255.0
    return ((x - OPENAI_MEAN) / OPENAI_STD).transpose(2, 0, 1)


def test_fast_path_equals_per_image_reference_and_uses_no_pil(shared, monkeypatch):
    import PIL.Image

    enc = shared
    batch = images(6, seed=1)
    monkeypatch.setattr(PIL.Image, "fromarray", lambda *a, **k: pytest.fail("PIL used on the fast path"))
    out = enc.preprocess_images(batch, train=False).numpy()
    ref = np.stack([reference_normalise(im) for im in batch])
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)
    # augmentation is off by default: training sees the same pixels
    np.testing.assert_array_equal(enc.preprocess_images(batch, train=True).numpy(), out)


def test_fast_path_resizes_and_centre_crops_like_a_per_image_reference(shared):
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    enc = shared
    mean, std = torch.tensor(OPENAI_MEAN).view(3, 1, 1), torch.tensor(OPENAI_STD).view(3, 1, 1)
    for shape in [(3, 48, 48, 3), (2, 40, 64, 3)]:  # square upscale-down, and a wide image
        batch = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
        out = enc.preprocess_images(batch, train=False)
        assert out.shape == (shape[0], 3, 32, 32)
        for i, im in enumerate(batch):
            t = torch.from_numpy(im).permute(2, 0, 1).float() / 255
            t = TF.center_crop(t, [min(t.shape[-2:])] * 2)
            t = TF.resize(t, [32, 32], interpolation=InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
            ref = (t.double() - mean) / std
            torch.testing.assert_close(out[i].double(), ref, atol=1e-6, rtol=0)


def test_fast_path_rejects_non_uint8_and_accepts_grey(shared):
    enc = shared
    with pytest.raises(ValueError, match="uint8"):
        enc.preprocess_images(images(2).astype(np.float32), train=False)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        enc.preprocess_images(np.zeros((2, 32, 32, 4), np.uint8), train=False)
    grey = images(2)[..., 0]
    out = enc.preprocess_images(grey, train=False)
    torch.testing.assert_close(out, enc.preprocess_images(np.repeat(grey[..., None], 3, -1), train=False))
    frozen = images(2)
    frozen.flags.writeable = False  # e.g. a memory-mapped cache
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(enc.preprocess_images(frozen, False), enc.preprocess_images(frozen.copy(), False))


def test_pil_path_matches_fast_path_and_takes_mixed_sizes(shared):
    from PIL import Image

    enc = shared
    batch = images(2, seed=3)
    pil = [Image.fromarray(im) for im in batch]
    torch.testing.assert_close(enc.preprocess_images(pil, False), enc.preprocess_images(batch, False), atol=1e-6, rtol=0)
    mixed = [Image.fromarray(images(1, 50, seed=4)[0]), Image.new("RGB", (64, 40), (255, 0, 0))]
    out = enc.preprocess_images(mixed, train=False)
    assert out.shape == (2, 3, 32, 32)
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(OPENAI_MEAN).float()) / torch.tensor(OPENAI_STD).float()
    torch.testing.assert_close(out[1].mean(dim=(1, 2)), red, atol=1e-5, rtol=0)


def test_augment_keeps_positions():
    torch.manual_seed(0)
    enc = tiny(augment=True)
    img = np.zeros((4, 32, 32, 3), np.uint8)
    img[:, 8:16, 2:10] = 255  # a white square on the left
    plain = enc.preprocess_images(img, train=False)
    aug = enc.preprocess_images(img, train=True)
    assert not torch.equal(plain, aug)
    assert (aug - plain).abs().mean() < 0.3  # light: about the noise level in normalised units
    brightness = aug.mean(dim=1)  # (N, 32, 32)
    inside, outside = brightness[:, 8:16, 2:10].mean(dim=(1, 2)), brightness[:, 16:, 16:].mean(dim=(1, 2))
    assert (inside - outside > 2.0).all()  # the square is still there, and only there


# ---------------------------------------------------------------------------------------------
# open_clip: training, checkpoints, freezing, errors
# ---------------------------------------------------------------------------------------------


def test_a_few_training_steps_lower_the_clip_loss():
    import open_clip

    torch.manual_seed(0)
    enc = tiny()
    batch, caps = images(8, seed=5), CAPTIONS
    loss_fn = open_clip.loss.ClipLoss()
    opt = torch.optim.AdamW([p for p in enc.model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0, fused=True)
    x, tokens = enc.preprocess_images(batch, True), enc.pair_inputs(batch, caps, True)
    losses = []
    for _ in range(8):
        img = F.normalize(enc.encode_image(x), dim=-1)
        txt = F.normalize(enc.encode_pair(tokens), dim=-1)
        loss = loss_fn(img, txt, logit_scale=torch.tensor(1 / 0.07))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.5  # about chance (log 8 = 2.08) at init
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("layout", ["raw", "wrapped_ddp"])
def test_checkpoint_reloads_to_identical_outputs(checkpoint, tmp_path, layout):
    path, state, original = checkpoint
    if layout == "wrapped_ddp":
        path = tmp_path / "wrapped.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    torch.manual_seed(999)  # a different init, overwritten by the checkpoint
    enc = tiny(pretrained=str(path))
    assert enc.load_report == {"checkpoint": str(path), "loaded": len(state), "skipped": []}
    batch = images(4, seed=6)
    a_img, a_txt = embed(original, batch, CAPTIONS[:4])
    b_img, b_txt = embed(enc, batch, CAPTIONS[:4])
    assert torch.equal(a_img, b_img) and torch.equal(a_txt, b_txt)


def test_checkpoint_is_read_with_weights_only(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": socket.AF_INET}, path)  # an arbitrary object
    with pytest.raises(ValueError, match="weights_only=True"):
        tiny(pretrained=str(path))


def test_embed_dim_override_reinitialises_only_the_projections(checkpoint):
    path, state, _ = checkpoint
    enc = tiny(pretrained=str(path), embed_dim=32)
    assert enc.load_report["skipped"] == ["text_projection", "visual.proj"]
    assert enc.embed_dim == 32
    new = enc.model.state_dict()
    for key, value in state.items():
        if key in ("text_projection", "visual.proj"):
            assert new[key].shape == (128, 32)
        else:
            assert torch.equal(new[key], value), key
    emb_img, emb_txt = embed(enc, images(3), CAPTIONS[:3])
    assert emb_img.shape == (3, 32) and emb_txt.shape == (3, 32)


def test_checkpoint_of_another_shape_fails_without_embed_dim(tmp_path):
    small = tiny(embed_dim=32)
    path = tmp_path / "d32.pt"
    torch.save(small.model.state_dict(), path)
    with pytest.raises(ValueError, match="set embed_dim to re-initialise"):
        tiny(pretrained=str(path))
    torch.save({k: v for k, v in small.model.state_dict().items() if k != "ln_final.weight"}, path)
    with pytest.raises(ValueError, match="lacks 1 key"):
        tiny(pretrained=str(path), embed_dim=32)


def test_freeze_text_leaves_text_params_without_grad():
    enc = tiny(freeze="text")
    params = dict(enc.model.named_parameters())
    text = {k for k in params if not k.startswith("visual.") and k not in ("logit_scale",)}
    assert {"token_embedding.weight", "positional_embedding", "text_projection"} <= text
    assert not any(params[k].requires_grad for k in text)
    assert all(p.requires_grad for k, p in params.items() if k.startswith("visual."))
    x, tokens = enc.preprocess_images(images(4), True), enc.tokenize(CAPTIONS[:4])
    (enc.encode_image(x).sum() + enc.encode_pair(tokens).sum()).backward()
    assert all(params[k].grad is None for k in text)
    assert params["visual.proj"].grad is not None


def test_freeze_image_locks_the_image_tower():
    enc = tiny(freeze="image")
    params = dict(enc.model.named_parameters())
    assert not any(p.requires_grad for k, p in params.items() if k.startswith("visual."))
    assert params["token_embedding.weight"].requires_grad and params["text_projection"].requires_grad


def test_network_tag_fails_fast_with_a_clear_message(monkeypatch):
    import open_clip

    calls = []

    def offline(cfg, *args, **kwargs):
        calls.append(cfg)
        raise FileNotFoundError("Failed to download file (open_clip_pytorch_model.bin)\nName or service not known")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    with pytest.raises(ValueError) as info:
        tiny(model="ViT-B-32", pretrained="openai")
    msg = str(info.value)
    assert "\n" not in msg and calls
    assert "needs a download that failed" in msg and "pass a local checkpoint path instead" in msg


def test_bad_names_are_one_line_errors_with_suggestions(tmp_path):
    with pytest.raises(ValueError, match="unknown open_clip config 'harness-tiny-vt'; close matches: harness-tiny-vit"):
        tiny(model="harness-tiny-vt")
    with pytest.raises(ValueError, match="neither a checkpoint file nor an open_clip tag"):
        tiny(pretrained="not-a-tag")
    with pytest.raises(ValueError, match="no such checkpoint file"):
        tiny(pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="embed_dim"):
        tiny(embed_dim=0)
    with pytest.raises(harness.errors.HarnessError, match="freeze"):
        tiny(freeze="both")  # the registry type-checks the Literal before the factory runs


# ---------------------------------------------------------------------------------------------
# same_modality
# ---------------------------------------------------------------------------------------------


def test_same_modality_has_two_distinct_towers():
    enc = harness.create_encoder("same_modality")
    assert isinstance(enc, Encoder) and enc.pair_modality == "image"
    a, b = dict(enc.model.visual.named_parameters()), dict(enc.model.visual_pair.named_parameters())
    assert a.keys() == b.keys() and len(list(enc.model.parameters())) == 2 * len(a)
    assert all(a[k].data_ptr() != b[k].data_ptr() for k in a)
    assert not torch.equal(a["conv1.weight"], b["conv1.weight"])  # independent random inits
    batch = images(5, seed=7)
    view = enc.pair_inputs(batch, CAPTIONS[:5], train=True)
    assert view.shape == (5, 3, 32, 32)
    assert torch.equal(view, enc.preprocess_images(batch, train=True))  # views="identical"
    x_img, x_pair = embed(enc, batch, CAPTIONS[:5])
    assert x_img.shape == x_pair.shape == (5, 64) and not torch.allclose(x_img, x_pair)
    with pytest.raises(Skip, match="no text tower"):
        enc.tokenize(["a red circle"])


def test_same_modality_shared_init_starts_equal_but_separate():
    enc = harness.create_encoder("same_modality", shared_init=True)
    a, b = dict(enc.model.visual.named_parameters()), dict(enc.model.visual_pair.named_parameters())
    assert all(torch.equal(a[k], b[k]) and a[k].data_ptr() != b[k].data_ptr() for k in a)
    x_img, x_pair = embed(enc, images(3), CAPTIONS[:3])
    assert torch.equal(x_img, x_pair)
    with torch.no_grad():
        a["proj"].add_(1.0)
    assert not torch.equal(a["proj"], b["proj"])


def test_same_modality_augmented_views_differ_only_when_training():
    torch.manual_seed(0)
    enc = harness.create_encoder("same_modality", views="augment")
    batch = images(4, seed=8)
    first, second = enc.preprocess_images(batch, True), enc.pair_inputs(batch, [""] * 4, True)
    assert not torch.equal(first, second)
    assert torch.equal(enc.preprocess_images(batch, False), enc.pair_inputs(batch, [""] * 4, False))


def test_both_encoders_are_listed_with_their_params():
    listed = {p["name"]: p for p in harness.list_plugins() if p["kind"] == "encoder"}
    assert listed["open_clip"]["params"] == {
        "model": "harness-tiny-vit",
        "pretrained": None,
        "embed_dim": None,
        "freeze": "none",
        "precision": None,
        "augment": False,
    }
    assert listed["same_modality"]["params"] == {
        "model": "harness-tiny-vit",
        "shared_init": False,
        "views": "identical",
        "precision": None,
    }
    assert listed["open_clip"]["description"] and listed["same_modality"]["description"]
