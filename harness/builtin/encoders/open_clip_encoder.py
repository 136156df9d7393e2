"""The ``open_clip`` encoder: any open_clip image-text model as a harness ``Encoder``.

``model`` is any open_clip config name (``open_clip.list_models()``) or one of the small configs the
harness ships (``harness-tiny-vit``, ``harness-small-vit``). ``pretrained`` is None (random init),
an open_clip tag (downloaded by open_clip, which needs the network) or a local checkpoint file,
always read with ``torch.load(weights_only=True)`` (or safetensors).

``embed_dim`` overrides the joint dimension. With a checkpoint whose projections then no longer fit,
every other weight is loaded and the projections keep their fresh initialisation: the contrastive-gap
paper's "new bias-free projection to d" on top of a pretrained CLIP (Fahim et al. 2024,
arXiv 2405.18570). ``load_report`` records what was loaded and which keys were re-initialised.

``freeze`` locks one tower as in LiT (Zhai et al. 2022): "image" locks the image tower (LiT proper),
"text" the text tower, with open_clip's ``lock_image_tower`` / ``lock_text_tower``.

The model is built in fp32; ``precision`` is the encoder's preferred autocast precision, which the
job applies (the suite's ``train.precision`` wins when set). The model's own ``logit_scale`` (and
``logit_bias``) are frozen: the loss plugin owns the temperature.
"""

from __future__ import annotations

import contextlib
import logging

import os
import re
from typing import Annotated, Any, Literal, Sequence

import torch
from pydantic import Field

from harness.api import Precision, bind_params, one_line
from harness.builtin.datasets.files import LOCAL_PATH
from harness.builtin.encoders.configs import ModelName
from harness.builtin.encoders.preprocess import ImagePreprocessor
from harness.builtin.encoders.tokens import TokenCache, cacheable

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
# keys whose shape follows embed_dim: ViT / text projections, timm and HF heads (``proj.0.weight``)
_PROJECTION_KEY = re.compile(r"(^|\.)(proj|text_projection|head\.proj)(\.\d+)?(\.(weight|bias))?$")



class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init():
    """Hide open_clip's root-logger notice that a model was built without pretrained weights."""
    root, notice = logging.getLogger(), _DropRandomInitNotice()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)

def is_projection_key(key: str) -> bool:
    """Whether a state_dict key is a tower's output projection (its shape depends on embed_dim)."""
    return bool(_PROJECTION_KEY.search(key))


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors: ``torch.load(weights_only=True)`` (or safetensors); accepts a raw
    state_dict or ``{"state_dict": ...}`` and strips ``module.`` prefixes (DDP checkpoints)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            checkpoint: Any = load_file(path, device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"pretrained: cannot read checkpoint {path} with weights_only=True ({one_line(exc, 100)}); "
            f"save a plain state_dict with torch.save(model.state_dict(), path)"
        ) from None
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not checkpoint or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items()
    ):
        raise ValueError(f"pretrained: {path} holds no state_dict (a dict of name -> tensor)")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def load_weights(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], allow_new_projections: bool) -> dict[str, Any]:
    """Copy ``state_dict`` into ``model``; returns ``{"loaded": n, "skipped": [keys]}``.

    Every model key must be present with its shape, except that with ``allow_new_projections`` the
    output projections may differ in shape: those are skipped and keep the model's initialisation.
    Anything else raises a one-line ValueError naming the first offending key.
    """
    from open_clip.model import convert_to_custom_text_state_dict

    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)  # old CLIP layout -> CustomTextCLIP
    target = model.state_dict()
    for key in ("logit_scale", "logit_bias"):  # scalar vs (1,) parameters across open_clip versions
        if key in state_dict and key in target and state_dict[key].numel() == target[key].numel():
            state_dict[key] = state_dict[key].reshape(target[key].shape)
    if "logit_bias" in target and "logit_bias" not in state_dict:
        state_dict["logit_bias"] = target["logit_bias"]  # a CLIP checkpoint into a SigLIP-style model
    missing = [k for k in target if k not in state_dict]
    unexpected = [k for k in state_dict if k not in target]
    mismatched = [k for k in target if k in state_dict and state_dict[k].shape != target[k].shape]
    skipped = [k for k in mismatched if allow_new_projections and is_projection_key(k)]
    wrong = [k for k in mismatched if k not in skipped]
    if wrong:
        k = wrong[0]
        hint = " (set embed_dim to re-initialise the projections)" if is_projection_key(k) else ""
        raise ValueError(
            f"pretrained: checkpoint {k!r} has shape {tuple(state_dict[k].shape)}, the model expects "
            f"{tuple(target[k].shape)}{hint}; {len(wrong)} key(s) differ"
        )
    if missing:
        raise ValueError(f"pretrained: checkpoint lacks {len(missing)} key(s) of the model, e.g. {missing[0]!r}; wrong model config?")
    if unexpected:
        raise ValueError(f"pretrained: checkpoint has {len(unexpected)} key(s) the model lacks, e.g. {unexpected[0]!r}; wrong model config?")
    loadable = {k: v for k, v in state_dict.items() if k not in skipped}
    model.load_state_dict(loadable, strict=False)
    return {"loaded": len(loadable), "skipped": sorted(skipped)}


def resolve_pretrained(name: str, pretrained: str | None) -> tuple[str | None, dict[str, Any]]:
    """``pretrained`` -> (checkpoint file or None, the open_clip tag config or {}).

    A tag is downloaded here, before any model is built, so an offline machine fails fast.
    """
    import open_clip

    if pretrained is None or pretrained == "":
        return None, {}
    path = os.path.expanduser(pretrained)
    if os.path.isfile(path):
        return path, {}
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        try:
            checkpoint = open_clip.pretrained.download_pretrained(tag_cfg)
        except Exception as exc:
            raise ValueError(
                f"pretrained: tag {pretrained!r} of {name!r} needs a download that failed ({one_line(exc, 120)}); "
                f"pass a local checkpoint path instead (pretrained=/path/to/weights.pt)"
            ) from None
        if not checkpoint or not os.path.isfile(checkpoint):
            raise ValueError(
                f"pretrained: tag {pretrained!r} of {name!r} needs a download that failed (no file came back); "
                f"pass a local checkpoint path instead (pretrained=/path/to/weights.pt)"
            )
        return checkpoint, tag_cfg
    if os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES):
        raise ValueError(f"pretrained: no such checkpoint file: {path}")
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise ValueError(
        f"pretrained: {pretrained!r} is neither a checkpoint file nor an open_clip tag of {name!r}; "
        f"tags: {', '.join(tags) if tags else 'none (pass a local checkpoint path)'}"
    )


class OpenClipEncoder:
    """An open_clip image-text model (any open_clip config; small CPU configs ship with the harness)."""

    pair_modality: Literal["text", "image"] = "text"

    @classmethod
    def check_params(cls, **params: Any) -> str:
        """Check what the signature's annotations cannot, without building the model (``harness
        validate`` calls this): that ``model`` names an open_clip config. Returns the config name.
        Weights are looked up only when the encoder is built, so a suite for a machine that has
        them still validates here."""
        from harness.builtin.encoders.configs import resolve_config_name

        return resolve_config_name(bind_params(cls, params)["model"])

    def __init__(
        self,
        model: ModelName = "harness-tiny-vit",
        pretrained: Annotated[str | None, Field(max_length=1024, pattern=LOCAL_PATH, description=(
            "None (random init), an open_clip pretrained tag (downloads) or a local checkpoint file "
            "(read with weights_only=True)"))] = None,
        embed_dim: Annotated[int | None, Field(ge=1, le=65536, description=(
            "override the joint embedding dimension (new projections when loading a checkpoint)"))] = None,
        freeze: Annotated[Literal["none", "text", "image"], Field(description=(
            "lock one tower as in LiT (image: LiT proper)"))] = "none",
        precision: Annotated[Precision | None, Field(description=(
            "preferred autocast precision on CUDA (the suite's train.precision wins)"))] = None,
        augment: Annotated[bool, Field(strict=True, description=(
            "light position-preserving augmentation of training images (brightness, contrast, noise)"))] = False,
    ):
        self.config_name = self.check_params(model=model)

        import open_clip

        checkpoint, tag_cfg = resolve_pretrained(self.config_name, pretrained)
        overrides = {"embed_dim": embed_dim} if embed_dim is not None else {}
        with _quiet_random_init():  # weights, if any, are loaded below: open_clip's notice would mislead
            self.model, train_transform, eval_transform = open_clip.create_model_and_transforms(
                self.config_name,
                pretrained=None,
                precision="fp32",
                device="cpu",
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
                image_mean=tag_cfg.get("mean"),
                image_std=tag_cfg.get("std"),
                image_interpolation=tag_cfg.get("interpolation"),
                image_resize_mode=tag_cfg.get("resize_mode"),
                pretrained_image=False,
                pretrained_text=False,
                **overrides,
            )
        self.load_report: dict[str, Any] = {"checkpoint": checkpoint, "loaded": 0, "skipped": []}
        if checkpoint is not None:
            report = load_weights(self.model, read_state_dict(checkpoint), allow_new_projections=embed_dim is not None)
            self.load_report.update(report)
        for name in ("logit_scale", "logit_bias"):  # the loss owns the temperature and bias
            param = getattr(self.model, name, None)
            if isinstance(param, torch.nn.Parameter):
                param.requires_grad_(False)
        if freeze == "text":
            self.model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
        elif freeze == "image":
            self.model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)

        self.freeze = freeze
        self.precision = precision
        self.augment = bool(augment)
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.tokenizer = open_clip.get_tokenizer(self.config_name)
        self._tokens = TokenCache(self.tokenizer) if cacheable(self.tokenizer) else self.tokenizer
        pp = self.model.visual.preprocess_cfg
        self._preprocess = ImagePreprocessor(
            size=pp["size"],
            mean=pp["mean"],
            std=pp["std"],
            interpolation=pp.get("interpolation", "bicubic"),
            pil_eval=eval_transform,
            pil_train=train_transform,
            augment=self.augment,
        )
        self.image_size: tuple[int, int] = self._preprocess.size
        config = None if self.config_name.startswith(("hf-hub:", "local-dir:")) else open_clip.get_model_config(self.config_name)
        self.embed_dim: int | None = embed_dim if embed_dim is not None else (config or {}).get("embed_dim")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess_images(self, images: Any, train: bool) -> torch.Tensor:
        """uint8 (N, H, W, 3) array or list of PIL images -> normalised float32 (N, 3, S, S) on the model's device."""
        return self._preprocess(images, train=train, device=self.device)

    def pair_inputs(self, images: Any, captions: Sequence[str], train: bool) -> torch.Tensor:
        """The text tower's input: the captions' tokens."""
        return self.tokenize(captions)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """open_clip's BPE tokens (N, context_length), int64, on the model's device; each distinct
        text is tokenized once per encoder (``tokens.TokenCache``: the same tensor)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self._tokens(texts).to(self.device)

    def compact_vocabulary(self, rows: int) -> None:
        """Train only ``rows`` rows of the text tower's token embedding, given to tokens as they are
        first read (``vocabulary.CompactTokenEmbedding``); call before training. Off by default: the
        same maths row for row, but gradient clipping's norm over the smaller table can differ in its
        last bit, so a clipped run's numbers drift from the full table's (see ``benchmarks/README.md``)."""
        from harness.builtin.encoders.vocabulary import compact_token_embedding

        if compact_token_embedding(self.model, rows) is None:
            raise ValueError(f"{self.config_name}: no token embedding to compact")

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def encode_pair(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(x)

    def __repr__(self) -> str:
        return f"OpenClipEncoder(model={self.config_name!r}, freeze={self.freeze!r}, load_report={self.load_report!r})"
