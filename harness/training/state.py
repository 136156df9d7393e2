"""What a run's training carries from one step to the next.

``LoopState`` holds everything that changes between steps apart from the towers' and the loss's
parameters (and buffers): the next step's index, the data order (``DataOrder``: the numpy generator,
the current permutation and the position in it), the optimizer with its grad scaler, and the
momentum towers of a loss that has them. ``RandState`` is a
snapshot of the torch RNG. Together with the parameters they are what a mid-job checkpoint has to
save and restore for a resumed run to continue as the uninterrupted one would. ``TrainState`` is
the progress record passed to the caller's callback after each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TrainState:
    """Passed to the progress callback after each step."""

    step: int
    total: int
    loss: float
    samples_per_s: float
    phase: str = "train"  # after training: "embed", then "evaluate <name>" for each evaluation


class RandState:
    """The torch RNG state (CPU, and the CUDA device's) at construction; ``restore()`` puts it back.

    GradCache's ``RandContext``: a chunk re-embedded with graph then draws the very dropout masks
    (and any other randomness) it drew when it was embedded without graph.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


@dataclass(eq=False)
class DataOrder:
    """Which pairs each step reads: epochs of a seeded permutation, a new one when the rest of the
    current one is shorter than a batch. ``rng`` also draws each batch's augmentation (``get_batch``)."""

    rng: np.random.Generator
    order: np.ndarray
    pos: int
    batch: int

    @classmethod
    def start(cls, seed: int, n: int, batch: int) -> DataOrder:
        rng = np.random.default_rng(seed)
        return cls(rng, rng.permutation(n), 0, batch)

    def next(self) -> np.ndarray:
        """The indices of the next batch."""
        if self.pos + self.batch > len(self.order):
            self.order, self.pos = self.rng.permutation(len(self.order)), 0
        idx = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return idx


@dataclass(eq=False)
class LoopState:
    """The training loop's position: ``step`` is the 0-based index of the next step to run.

    ``ema``: the momentum towers (a frozen copy of ``encoder.model``, ``harness.training.momentum``)
    when the loss has a ``momentum``, else None; restore a saved one in place (``load_state_dict``).
    """

    step: int
    data: DataOrder
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: torch.nn.Module | None = None
