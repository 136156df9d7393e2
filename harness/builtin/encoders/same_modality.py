"""The ``same_modality`` encoder: two separate image towers, the contrastive-gap control experiment.

Fahim et al. 2024 (arXiv 2405.18570, "It's Not a Modality Gap") train two *separate* ViT image
encoders on the same images with the CLIP loss and find the gap anyway: it comes from the loss, not
from the modalities. Here both towers are the vision tower of one open_clip config (``model``),
built twice: from independent random initialisations, or with ``shared_init`` from identical
weights (which rules out that the gap is only the two random inits' "cones"). The second tower sees
the same image (``views="identical"``) or, when training, both towers see independent
position-preserving augmentations (``views="augment"``).

For evaluations the "text" side of every set is the second tower's view of the image:
``pair_modality == "image"``, and ``tokenize`` raises ``Skip`` (no text tower).
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, Sequence

import torch
from pydantic import Field

from harness.api import Precision, Skip, bind_params
from harness.builtin.encoders.configs import ModelName
from harness.builtin.encoders.preprocess import ImagePreprocessor



class TwoImageTowers(torch.nn.Module):
    """Both towers in one module: ``visual`` encodes the images, ``visual_pair`` their paired view."""

    def __init__(self, visual: torch.nn.Module, visual_pair: torch.nn.Module):
        super().__init__()
        self.visual = visual
        self.visual_pair = visual_pair

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def encode_pair(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual_pair(x)


class SameModalityEncoder:
    """Two separate image towers over the same images (the contrastive-gap paper's control)."""

    pair_modality: Literal["text", "image"] = "image"

    @classmethod
    def check_params(cls, **params: Any) -> tuple[str, dict]:
        """Check what the annotations cannot, without building the towers (``harness validate``
        calls this): ``model`` names an open_clip config with a vision tower. Returns the config
        name and its config."""
        import open_clip

        from harness.builtin.encoders.configs import resolve_config_name

        model = bind_params(cls, params)["model"]
        name = resolve_config_name(model)
        config = open_clip.get_model_config(name)
        if not config or "vision_cfg" not in config:
            raise ValueError(f"model: open_clip config {model!r} has no vision tower config")
        return name, config

    def __init__(
        self,
        model: ModelName = "harness-tiny-vit",
        shared_init: Annotated[bool, Field(strict=True, description=(
            "build both towers from identical weights (rules out the random inits' cone effect)"))] = False,
        views: Annotated[Literal["identical", "augment"], Field(description=(
            "identical pixels for both towers, or independent light augmentations when training"))] = "identical",
        precision: Annotated[Precision | None, Field(description=(
            "preferred autocast precision on CUDA (the suite's train.precision wins)"))] = None,
    ):
        self.config_name, config = self.check_params(model=model)

        import open_clip
        from open_clip.model import _build_vision_tower

        embed_dim = int(config["embed_dim"])
        quick_gelu = bool(config.get("quick_gelu", False))
        first = _build_vision_tower(embed_dim, config["vision_cfg"], quick_gelu=quick_gelu)
        second = copy.deepcopy(first) if shared_init else _build_vision_tower(embed_dim, config["vision_cfg"], quick_gelu=quick_gelu)
        self.model = TwoImageTowers(first, second)

        transform = open_clip.transform
        pp_dict = transform.merge_preprocess_dict(transform.PreprocessCfg(), config.get("preprocess_cfg") or {})
        pp = transform.PreprocessCfg(**{**pp_dict, "size": first.image_size})
        self.shared_init = bool(shared_init)
        self.views = views
        self.precision = precision
        self.embed_dim = embed_dim
        self.load_report: dict[str, Any] = {"checkpoint": None, "loaded": 0, "skipped": []}
        self._preprocess = ImagePreprocessor(
            size=pp.size,
            mean=pp.mean,
            std=pp.std,
            interpolation=pp.interpolation,
            pil_eval=transform.image_transform_v2(pp, is_train=False),
            pil_train=transform.image_transform_v2(pp, is_train=True),
            augment=views == "augment",
        )
        self.image_size: tuple[int, int] = self._preprocess.size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess_images(self, images: Any, train: bool) -> torch.Tensor:
        """The first tower's view: normalised float32 (N, 3, S, S) on the model's device."""
        return self._preprocess(images, train=train, device=self.device)

    def pair_inputs(self, images: Any, captions: Sequence[str], train: bool) -> torch.Tensor:
        """The second tower's view of the same images (captions are ignored); with
        ``views="augment"`` and ``train`` an independent augmentation, else the same pixels."""
        return self._preprocess(images, train=train, device=self.device)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_pair(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_pair(x)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        raise Skip("same_modality has no text tower: its pair is a second image view, so text prompts cannot be encoded")

    def __repr__(self) -> str:
        return f"SameModalityEncoder(model={self.config_name!r}, shared_init={self.shared_init}, views={self.views!r})"
