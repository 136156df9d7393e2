"""The small open_clip model configs shipped with the harness (``model_configs/*.json``).

They are plain open_clip configs (``embed_dim``, ``vision_cfg``, ``text_cfg``) sized for a CPU:
``harness-tiny-vit`` (32x32 images, 2+2 layers, d=64) is the default suite's encoder and
``harness-small-vit`` (4+4 layers, width 256, d=128) a mid size; ``harness-tiny-cnn`` has a small
conv net as image tower (``tiny_cnn.py``, a timm model the harness registers) and sees shape much
sooner than the patch-8 ViT; ``harness-tiny-convvit`` is a second tower family with the same text
tower: a ViT with a convolutional stem (``conv_vit.py``, Xiao et al. 2021). All keep open_clip's BPE
vocabulary (49,408 tokens), so any caption tokenizes offline. ``register_model_configs`` adds the
folder to open_clip's config registry (``open_clip.add_model_config``) once; after that the names
work anywhere an open_clip config name does.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated

from pydantic import Field

# A config name, an ``hf-hub:org/repo`` or a ``local-dir:PATH``: printable, no URL scheme, no quotes
# or shell metacharacters (the value reaches open_clip and the filesystem).
ModelName = Annotated[str, Field(
    min_length=1, max_length=512, pattern=r"^(hf-hub:|local-dir:)?[A-Za-z0-9][A-Za-z0-9._/@+ -]*$",
    description="an open_clip config name (open_clip.list_models() or a shipped harness-* config), "
                "hf-hub:org/repo or local-dir:PATH")]

CONFIG_DIR = Path(__file__).parent / "model_configs"


def shipped_configs() -> dict[str, dict]:
    """Config name -> config dict, for every JSON file shipped in ``model_configs/``."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(CONFIG_DIR.glob("*.json"))}


def register_model_configs() -> list[str]:
    """Register the shipped configs with open_clip (idempotent); returns their names."""
    import open_clip

    from harness.builtin.encoders import conv_vit, tiny_cnn

    tiny_cnn.register_timm_models()  # the timm towers the configs name (``harness_tiny_cnn``,
    conv_vit.register_timm_models()  # ``harness_conv_vit``)
    names = [p.stem for p in sorted(CONFIG_DIR.glob("*.json"))]
    known = set(open_clip.list_models())
    if any(n not in known for n in names):
        open_clip.add_model_config(CONFIG_DIR)
    return names


def resolve_config_name(model: str) -> str:
    """The open_clip config name for ``model`` ("/" accepted for "-"), or ValueError with close matches.

    ``hf-hub:`` and ``local-dir:`` names are passed through: open_clip resolves them itself.
    """
    import open_clip

    if not isinstance(model, str) or not model:
        raise ValueError(f"model: expected an open_clip config name, got {model!r}")
    if model.startswith(("hf-hub:", "local-dir:")):
        return model
    register_model_configs()
    name = model.replace("/", "-")
    names = open_clip.list_models()
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "see open_clip.list_models()"
    raise ValueError(f"model: unknown open_clip config {model!r}; {hint}")
