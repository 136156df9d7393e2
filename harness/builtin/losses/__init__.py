"""Built-in losses, registered through the public hook like any third-party plugin.

Each loss is an ``nn.Module`` built from keyword params; ``forward(image_features, text_features)``
takes L2-normalised (N, d) embeddings and returns named scalar terms whose sum is the training loss.
Losses with a temperature hold ``logit_scale`` = log(1 / temperature) (a parameter when learnable,
else a buffer); ``siglip`` also holds ``logit_bias``.
"""

from harness.api import hookimpl
from harness.builtin.losses.align_uniform import AlignUniformLoss
from harness.builtin.losses.clip import ClipLoss
from harness.builtin.losses.cua import CuaLoss, CuaxuLoss
from harness.builtin.losses.cyclip import CyClipLoss
from harness.builtin.losses.dcl import DclLoss
from harness.builtin.losses.siglip import SigLipLoss

LOSSES = {
    "clip": ClipLoss,
    "cua": CuaLoss,
    "cuaxu": CuaxuLoss,
    "siglip": SigLipLoss,
    "cyclip": CyClipLoss,
    "dcl": DclLoss,
    "align_uniform": AlignUniformLoss,
}


@hookimpl
def harness_register_losses(register):
    for name, factory in LOSSES.items():
        register(name, factory)
