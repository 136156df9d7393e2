"""``align_uniform``: alignment + uniformity alone, no InfoNCE term.

Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on
the Hypersphere" (ICML 2020), in the cross-modal form of ``cua`` (the same terms, without CLIP)::

    loss = alignment_weight * mean_i ||x_i - y_i||^2
         + uniformity_weight * (uniformity(X) + uniformity(Y)) / 2,
    uniformity(X) = log mean_{i<j} exp(-2 ||x_i - x_j||^2)

Beside ``cua`` on a leaderboard it shows what the CLIP term itself contributes. No temperature.
"""

from __future__ import annotations

from torch import Tensor, nn

from harness.api import full_precision, prepare_features
from harness.builtin.losses.cua import AlignmentWeight, UniformityWeight
from harness.builtin.losses.terms import alignment, uniformity, weighted


class AlignUniformLoss(nn.Module):
    """Alignment + in-modal uniformity without InfoNCE (Wang & Isola 2020); no temperature.

    Terms: ``alignment``, ``uniformity`` (each weighted). Needs a batch of at least 2 while
    ``uniformity_weight`` > 0.
    """

    def __init__(
        self,
        alignment_weight: AlignmentWeight = 1.0,
        uniformity_weight: UniformityWeight = 1.0,
    ) -> None:
        super().__init__()
        self.alignment_weight = float(alignment_weight)
        self.uniformity_weight = float(uniformity_weight)
        if self.alignment_weight == 0 and self.uniformity_weight == 0:
            raise ValueError("alignment_weight and uniformity_weight are both 0: the loss would be constant")

    @full_precision
    def forward(self, image_features: Tensor, text_features: Tensor) -> dict[str, Tensor]:
        x, y = prepare_features(image_features, text_features)
        zero = x.new_zeros(())
        return {
            "alignment": weighted(self.alignment_weight, lambda: alignment(x, y), zero),
            "uniformity": weighted(self.uniformity_weight, lambda: 0.5 * (uniformity(x) + uniformity(y)), zero),
        }

    def extra_repr(self) -> str:
        return f"alignment_weight={self.alignment_weight}, uniformity_weight={self.uniformity_weight}"
