"""Training a job's towers and loss: ``train`` (``loop``) and its parts.

- ``loop``: ``train``, the run's ``Plan`` and its steps;
- ``step``: the ``Step`` interface, ``step(batch, i) -> (total, terms)``, and ``PlainStep``;
- ``gradcache``: ``GradCacheStep``, the same step in chunks and/or across data-parallel workers;
- ``inputs``: a step's batch, the towers' inputs and the loss's extras;
- ``optim``: AdamW's parameter groups, the learning-rate schedule, one update, the temperature;
- ``state``: what changes between steps (``LoopState``, ``DataOrder``, ``RandState``), ``TrainState``;
- ``momentum``: a loss's ``setup``, and the momentum (EMA) towers of a loss with a ``momentum``;
- ``checks``: what training refuses (``NonFiniteLoss``, ``BadLossOutput``, ...);
- ``memory``: the run's peak memory; ``trainlog``: its ``log.jsonl`` records and clock;
- ``checkpoint``: mid-run checkpoints, checked before a resume; ``curves``: TensorBoard event files.
"""

from harness.training.checks import BadLossOutput, NonFiniteLoss, check_finite, check_terms, refuse_batch_norm
from harness.training.gradcache import GradCacheStep, Towers
from harness.training.loop import Plan, train
from harness.training.memory import PeakMemory, reset_peak_rss
from harness.training.optim import loss_temperature, lr_at, param_groups, total_steps
from harness.training.state import DataOrder, LoopState, RandState, TrainState
from harness.training.step import PlainStep, Step

__all__ = [
    "BadLossOutput",
    "DataOrder",
    "GradCacheStep",
    "LoopState",
    "NonFiniteLoss",
    "PeakMemory",
    "PlainStep",
    "Plan",
    "RandState",
    "Step",
    "Towers",
    "TrainState",
    "check_finite",
    "check_terms",
    "loss_temperature",
    "lr_at",
    "param_groups",
    "refuse_batch_norm",
    "reset_peak_rss",
    "total_steps",
    "train",
]
