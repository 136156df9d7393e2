"""A workaround for clip_benchmark's ``accuracy()`` under numpy >= 2.4, without pinning numpy.

clip_benchmark (<= 1.6.x) computes top-k accuracy as
``float(correct[:k].reshape(-1).float().sum(0, keepdim=True).cpu().numpy())``: ``float()`` of a
1-element, 1-D array, which numpy 2.4 turned from a deprecation warning into a ``TypeError``.
:func:`accuracy` is the same computation with ``.item()``; :func:`fixed_accuracy` swaps it into
``clip_benchmark.metrics.zeroshot_classification`` for the duration of a ``with`` block (and
only when the original is broken), so its ``evaluate()`` runs on any numpy.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: Sequence[int] = (1,)) -> list[float]:
    """Top-k accuracies of logits ``output`` (N, C) against labels ``target`` (N,), clip_benchmark's semantics.

    A sample counts for top-k when its label is among the k highest logits (``torch.topk`` order).
    """
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    return [correct[:k].reshape(-1).float().sum().item() / n for k in topk]


def original_accuracy_works() -> bool:
    """Whether the installed clip_benchmark ``accuracy()`` runs on the installed numpy."""
    from clip_benchmark.metrics import zeroshot_classification as zc

    try:
        zc.accuracy(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), topk=(1,))
    except TypeError:
        return False
    return True


@contextlib.contextmanager
def fixed_accuracy() -> Iterator[None]:
    """Within the block, clip_benchmark's zero-shot ``accuracy`` is :func:`accuracy` when the original is broken."""
    from clip_benchmark.metrics import zeroshot_classification as zc

    if original_accuracy_works():
        yield
        return
    original = zc.accuracy
    zc.accuracy = accuracy
    try:
        yield
    finally:
        zc.accuracy = original
