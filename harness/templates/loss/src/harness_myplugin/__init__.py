"""myplugin: a loss plugin for contrastive-harness (an example to start from: replace the formula)."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field
from torch import Tensor, nn

from harness.api import hookimpl, prepare_features


class MyPlugin(nn.Module):
    """An example loss: the squared error of the similarity matrix to the identity.

    With L2-normalised image embeddings x_i and text embeddings y_i (row i of each a pair),
    s_ij = x_i . y_j and the weight w of the negatives::

        positives = mean_i (1 - s_ii)^2          (pull each pair together)
        negatives = w * mean_{i != j} s_ij^2     (make the other pairs orthogonal)

    ``forward`` returns these named scalar terms; the trainer minimises their sum and logs each. A
    batch of one pair has no negatives: it raises ``ValueError``. To receive more than the two
    embeddings, list names in ``extras`` and accept them as keyword arguments of ``forward``: step,
    total_steps, image_raw, text_raw, text_negatives (see harness.types.LOSS_EXTRAS).
    """

    extras: tuple[str, ...] = ()

    def __init__(
        self,
        negative_weight: Annotated[float, Field(ge=0, le=100, description="weight w of the negatives' term")] = 1.0,
    ) -> None:
        super().__init__()
        self.negative_weight = negative_weight

    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        # checked, gathered across workers (a no-op on one process), half precision cast up to float32
        x, y = prepare_features(image_features, text_features, "myplugin", at_least=2,
                                why="one pair has no negatives")
        n = x.shape[0]
        sim = x @ y.T
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=sim.device)
        return {
            "positives": (1 - sim.diagonal()).pow(2).mean(),
            "negatives": self.negative_weight * sim[off_diagonal].pow(2).mean(),
        }


@hookimpl
def harness_register_losses(register):
    register("myplugin", MyPlugin)
