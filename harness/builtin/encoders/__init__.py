"""Built-in encoders, registered through the public hook like any third-party plugin.

- ``open_clip``: any open_clip image-text model (the harness ships small CPU configs).
- ``same_modality``: two separate image towers, the contrastive-gap paper's control.

open_clip itself is imported inside the factories, so listing plugins stays fast.
"""

from harness.api import hookimpl
from harness.builtin.encoders.open_clip_encoder import OpenClipEncoder
from harness.builtin.encoders.same_modality import SameModalityEncoder


@hookimpl
def harness_register_encoders(register):
    register("open_clip", OpenClipEncoder)
    register("same_modality", SameModalityEncoder)
